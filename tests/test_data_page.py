"""The Data chapter (notebooks/data.ipynb, ladnn.report.dataset): tables that fit the page, prose that matches the
tables, figures whose text stays readable at the column's width, and a notebook whose links resolve."""
import json
import re
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.text import Text

from ladnn.config import LESIONS
from ladnn.data import _split_of_group, check, load_table
from ladnn.report import dataset, paper_table

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "data.ipynb"
COLUMN_PX = 800  # the book's text column at a 1400 px window
MIN_CSS_PX = 10 * 96 / 72  # 10 pt on the page


@pytest.fixture(scope="module")
def df(data_dir):
    return load_table("D0+D1")


def _count(cell: str) -> tuple[int, int | None]:
    m = re.fullmatch(r"(\d+)(?: \((\d+)\))?", cell)
    assert m, f"cell {cell!r} is not 'images (patients)' or 'images'"
    return int(m.group(1)), None if m.group(2) is None else int(m.group(2))


def test_page_table1_cells_are_table1s_counts(df):
    t, cells = dataset.table1(df), dataset.table1_cells(df)
    assert list(cells.columns) == ["dataset", "class", "all", "training", "validation", "test"]
    assert cells[["dataset", "class"]].equals(t[["dataset", "class"]])
    for col, prefix in (("all", ""), ("training", "train_"), ("validation", "val_"), ("test", "test_")):
        for cell, images, patients in zip(cells[col], t[f"{prefix}images"], t[f"{prefix}patients"]):
            assert _count(cell) == (images, None if pd.isna(patients) else patients)


def test_page_table1_has_no_row_numbers(df):
    html = dataset.table1_for_page(df).to_html()
    assert "row_heading" not in html and "<caption>" in html
    assert "blank level0" not in html


def test_differences_are_exactly_the_disagreeing_counts(df):
    cmp, diff = dataset.table1_comparison(df), dataset.table1_differences(df)
    assert list(diff.columns) == ["dataset", "class", "quantity", "paper", "ours"]
    assert len(diff) == (~cmp["agrees"]).sum() > 0
    assert ((diff["paper"] != diff["ours"]) | diff["ours"].isna()).all()
    # in the paper's row order, then in reading order of the quantities
    rows = list(paper_table(1)[["dataset", "class"]].itertuples(index=False, name=None))
    q = list(dataset.QUANTITIES.values())
    keys = [(rows.index((d, c)), q.index(x)) for d, c, x in zip(diff["dataset"], diff["class"], diff["quantity"])]
    assert keys == sorted(keys)
    html = dataset.differences_for_page(df).to_html()
    assert ("not known" in html) == bool(diff["ours"].isna().any())
    assert re.search(r'class="row_heading[^"]*"\s*>\s*0\s*<', html) is None  # no row numbers


def test_agreement_sentence_counts_the_comparison(df):
    cmp = dataset.table1_comparison(df)
    s = dataset.agreement_sentence(df)
    assert s.startswith(f"{int(cmp['agrees'].sum())} of the paper's {len(cmp)} counts")
    assert f"The {int((~cmp['agrees']).sum())} that differ" in s


def test_table1_prose_matches_the_table(df):
    """Every part's image and patient counts in the prose are Table 1's; a part whose images all name a patient
    is never said to have none, and a part without any is."""
    t = dataset.table1(df).set_index(["dataset", "class"])
    prose = dataset.table1_prose(df)
    assert "carry none" not in prose
    ratios = "/".join(str(round(100 * r)) for r in dataset.D1_SPLIT_RATIOS.values())
    assert ratios in prose
    for (ds, cls), row in t.loc[["D0", "D1"]].iterrows():
        if not row["images"]:
            continue
        line = next(x for x in prose.splitlines() if x.startswith(f"- {ds} {cls}s ({row['images']} images)"))
        if pd.isna(row["patients"]):
            assert "no image has a patient id" in line or "only images" in line
        else:
            assert f": {row['patients']} patients" in line
    neg = df[(df["dataset"] == "D0") & (df["covid"] == 0)]
    if (neg["patient"] != "").all():
        assert "NonCOVID-CT-MetaInfo.csv" in prose


def test_differences_sentence_no_longer_denies_d0_negative_patients(df):
    s = dataset.differences_sentence(df)
    assert "carry no patient ids" not in s
    unknown = dataset.table1(df).query("patients.isna()", engine="python")
    for ds, cls in zip(unknown["dataset"], unknown["class"]):
        assert f"{ds} {cls}" in s


def test_d1_split_ratios_are_the_data_layers():
    names = [f"group-{i}" for i in range(20000)]
    got = pd.Series([_split_of_group(n) for n in names]).value_counts(normalize=True)
    for s, r in dataset.D1_SPLIT_RATIOS.items():
        assert abs(got[s] - r) < 0.015


def test_d1_split_sentence_counts_each_class(df):
    s = dataset.d1_split_sentence(df)
    d1 = df[df["dataset"] == "D1"]
    for cls, c in (("positives", d1[d1["covid"] == 1]), ("negatives", d1[d1["covid"] == 0])):
        if len(c):
            split = "/".join(str(int((c["split"] == x).sum())) for x in ("train", "val", "test"))
            assert f"{len(c)} {cls}" in s and split in s


def test_figure3_basis_is_the_annotated_positives(df):
    s = dataset.lesion_basis_sentence(df)
    ann = df[(df["covid"] == 1) & df["lesions_known"]]
    assert f"the {len(ann)} positive images" in s
    for ds in ("D0", "D1"):
        assert f"{int((ann['dataset'] == ds).sum())} of " in s
    none = int((ann[list(LESIONS)].sum(axis=1) == 0).sum())
    assert dataset.no_lesion_sentence(df).startswith(f"{none} of these {len(ann)} annotated images")


def test_negative_composition_covers_every_negative(df):
    comp = dataset.negative_composition(df)
    assert comp.sum() == (df["covid"] == 0).sum()
    assert all(lab.startswith(("D0 ", "D1 ")) for lab in comp.index)


def _small_texts(fig) -> list[str]:
    """Visible text of `fig` smaller than 10 pt once the figure is shown at most COLUMN_PX wide."""
    width_px = fig.get_figwidth() * fig.dpi
    scale = min(1.0, COLUMN_PX / width_px) * fig.dpi / 72  # CSS px per point
    return [t.get_text() for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() * scale < MIN_CSS_PX - 0.01]


def test_lesion_figure_text_is_readable_at_the_column_width(df):
    fig = dataset.lesion_figure(df)
    try:
        assert _small_texts(fig) == []
        heights = [p.get_height() for p in fig.axes[0].patches]
        assert heights == df[(df["covid"] == 1) & df["lesions_known"]][list(LESIONS)].sum().tolist()
    finally:
        plt.close(fig)


def test_sample_grid_titles_fit_their_panels_and_are_readable(df):
    fig = dataset.sample_grid(df[df["dataset"] == "D0"])
    try:
        assert _small_texts(fig) == []
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        titled = [a for a in fig.axes if a.get_title()]
        assert len(titled) == 8
        names = set(df["name"])
        for a in titled:
            assert a.title.get_window_extent(r).width <= a.get_position().width * fig.get_figwidth() * fig.dpi + 2
            title = a.get_title().replace("\n", "")  # the whole name, or its start and end around an ellipsis
            assert title in names or ("…" in title and any(
                n.startswith(title.split("…")[0]) and n.endswith(title.split("…")[1]) for n in names)), title
    finally:
        plt.close(fig)


def test_long_names_are_shortened_and_wrapped():
    name = "x" * 150 + ".png"
    s = dataset._short(name, 20)
    assert len(s.splitlines()) <= 2 and all(len(line) <= 20 for line in s.splitlines())
    assert s.endswith(".png") and "…" in s
    assert dataset._short("a.png", 20) == "a.png"


def test_copy_summary_names_what_check_found(data_dir):
    info = check(verify=False)
    s = dataset.copy_summary(info)
    assert f"{info['D1']['found']} of D1's {info['D1']['of_paper']} images" in s
    for a in info["D1"]["archives"]["absent"]:
        assert a.rsplit("/", 1)[-1] in s


def test_try_it_box_is_complete():
    s = dataset.try_it(check_seconds=1.234, page_seconds=9.6)
    assert s.startswith("````{admonition} Try it") and s.rstrip().endswith("````")
    assert s.count("```bash") == 2
    assert "ladnn data check --no-verify" in s and "papermill -k python3 notebooks/data.ipynb" in s
    assert "1.2 s" in s and "10 s" in s
    assert "PROFILE=smoke" not in s


def test_cli_seconds_times_a_real_command(data_dir):
    assert 0 < dataset.cli_seconds("data", "check", "--no-verify") < 120
    with pytest.raises(subprocess.CalledProcessError):
        dataset.cli_seconds("data", "no-such-command")


# ---------------------------------------------------------------- the notebook itself
def _cells():
    return json.loads(NOTEBOOK.read_text())["cells"]


def test_notebook_is_saved_as_the_book_expects():
    text = NOTEBOOK.read_text()
    nb = json.loads(text)
    assert text == json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"]["tags"]
    for c in code[:2]:  # the parameters and the imports
        assert "remove-cell" in c["metadata"]["tags"]
    for c in code[2:]:
        assert "hide-input" in c["metadata"].get("tags", []), c["id"]
    assert not any(c.get("outputs") for c in code)


def test_markdown_cells_type_no_numbers():
    """Numbers in prose come from code: a Markdown cell holds digits only in names (Table 1, Figure 3, D0)."""
    for c in _cells():
        if c["cell_type"] == "markdown":
            text = re.sub(r"Table \d|Figure \d|COVID-19|\bD[01]\b|\{\w+\}`[^`]*`|```\{admonition\}", "", "".join(c["source"]))
            assert not re.search(r"\d", text), (c["id"], text)


def test_roles_point_at_existing_targets():
    text = "\n".join("".join(c["source"]) for c in _cells() if c["cell_type"] == "markdown")
    bib = (ROOT / "references.bib").read_text()
    glossary = (ROOT / "book" / "glossary.md").read_text()
    terms = {line.strip().lower() for line in glossary.splitlines() if line and not line.startswith((" ", "`"))}
    cites = re.findall(r"\{cite\}`([^`]+)`", text)
    assert {"liu2020ladnn", "yang2020covidct"} <= set(cites)
    for key in cites:
        assert f"{{{key}," in bib
    used = re.findall(r"\{term\}`([^`<]+)`", text)
    assert {"D0", "D1", "cluster bootstrap"} <= set(used)
    for term in used:
        assert term.lower() in terms, term
    generated = ROOT / "book" / "_generated"
    for doc in re.findall(r"\{doc\}`([^`]+)`", text):
        p = (generated / doc).resolve()  # the page is book/_generated/data; its notebooks come from notebooks/
        assert p.with_suffix(".md").is_file() or (
            p.parent == generated and (ROOT / "notebooks" / f"{p.name}.ipynb").is_file()), doc
