"""Annotation marks: found on the real figures, painted out, and their effect measured through the run's path."""
import numpy as np
import pandas as pd
import pytest

from ladnn.report import marks
from ladnn.scores import PRED


def _figure_with_ellipse() -> np.ndarray:
    import cv2

    rgb = np.full((120, 120, 3), 90, np.uint8)
    cv2.circle(rgb, (60, 60), 40, (20, 20, 20), -1)  # a dark grey "lung"
    cv2.ellipse(rgb, (60, 60), (20, 12), 0, 0, 360, (255, 0, 0), 2)  # the authors' red ellipse
    return rgb


def test_mask_finds_drawn_colour_and_inpaint_removes_it():
    rgb = _figure_with_ellipse()
    m = marks.mark_mask(rgb)
    assert 0.005 < m.mean() < 0.1 and m[60, 40]  # on the ellipse (x = 60 - 20)
    assert not m[60, 60] and not m[5, 5]
    out = marks.painted_out(rgb, m)
    assert not marks.mark_mask(out, dilate=0).any()  # no drawn colour left
    assert np.array_equal(out[~m], rgb[~m])  # nothing else changed


@pytest.fixture(scope="module")
def mark_table(data_dir):
    from ladnn.data import load_table

    return marks.mark_table(load_table("D0"))


def test_marks_on_d0_are_a_label(mark_table):
    c = marks.mark_counts(mark_table)
    assert c.loc["D0 non-COVID", "with colour marks"] == 0
    assert c.loc["D0 COVID", "with colour marks"] >= 10
    assert mark_table.loc[mark_table["marked"], "mark_share"].min() >= marks.MIN_SHARE


def test_marks_effect_through_the_run(tiny_run, mark_table):
    rows = mark_table[mark_table["marked"]].head(3)
    e = marks.marks_effect(str(tiny_run), rows)
    assert list(e[PRED.image]) == list(rows["name"])
    assert ((e["cam_share_on_marks"] >= 0) & (e["cam_share_on_marks"] <= 1)).all()
    assert np.allclose(e["change"], e[marks.PAINTED] - e[PRED.p_covid])
    s = marks.effect_summary(e, pd.Series(["a", "a", "b"]), n_boot=100)
    assert s["images"] == 3 and s["papers"] == 2 and s["change"][1] <= s["change"][0] <= s["change"][2]


def test_run_effects_per_method_with_the_split(tiny_run, mark_table):
    from ladnn.data import load_table

    table = load_table("D0")
    rows = mark_table[mark_table["marked"]].head(2)
    effects = marks.run_effects(pd.Series({"baseline": str(tiny_run), "ladnn": str(tiny_run)}),
                                pd.concat([rows, mark_table[~mark_table["marked"]].head(2)]), table)
    assert list(effects) == ["baseline", "ladnn"]
    e = effects["ladnn"]
    assert list(e[PRED.image]) == list(rows["name"])  # the marked images only
    assert list(e["split"]) == list(table.set_index("name").loc[rows["name"], "split"])
    pd.testing.assert_frame_equal(e.drop(columns="split"), marks.marks_effect(str(tiny_run), rows))
