"""The multi-task lab: nested patient subsets, gradient diagnostics against a hand computation, every way of combining
the tasks training a step, the lab profile, and the committed results against today's code and data."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from torch import nn

from ladnn.config import LESIONS, TASK_WEIGHTINGS, Config, ConfigError
from ladnn.data import groups_of, splits, train_subset
from ladnn.loss import paper_loss, task_losses, task_weights
from ladnn.mtl import GradientProbe, TaskCombiner, combined_tasks, gradient_stats, split_head
from ladnn.profiles import BuildError, load_profile, training_runs
from ladnn.report import lab
from ladnn.train import train_step

FRACTIONS = (0.1, 0.25, 0.5, 1.0)


# ---------------------------------------------------------------- nested subsets
@pytest.fixture(scope="module")
def official(data_dir):
    return splits(Config())


def test_subsets_are_nested_by_patient_and_hold_both_classes(official):
    train = official["train"]
    for seed in (0, 1, 2):
        subsets = [train_subset(train, f, seed) for f in FRACTIONS]
        pats = [set(groups_of(s)) for s in subsets]
        for small, large, f in zip(pats, pats[1:], FRACTIONS):
            assert small < large, f"seed {seed}: the {f:.0%} subset is not inside the next one"
        for s, f in zip(subsets, FRACTIONS):
            assert s["covid"].nunique() == 2
            # whole patients: every image of a kept patient is kept
            kept = set(groups_of(s))
            assert len(s) == sum(g in kept for g in groups_of(train))
            for c in (0, 1):
                n = len(set(groups_of(train[train["covid"] == c])))
                assert len(set(groups_of(s[s["covid"] == c]))) == math.ceil(f * n)
    assert set(train_subset(train, 0.25, 0)["name"]) != set(train_subset(train, 0.25, 1)["name"])
    assert train_subset(train, 1.0, 0).equals(train)


def test_subsets_are_patient_disjoint_from_validation_and_test(official):
    held_out = set(groups_of(official["val"])) | set(groups_of(official["test"]))
    for f in FRACTIONS:
        for seed in (0, 1, 2):
            assert not set(groups_of(train_subset(official["train"], f, seed))) & held_out


def test_bad_fraction_is_refused():
    with pytest.raises(ConfigError, match="train_fraction"):
        Config(train_fraction=0)
    with pytest.raises(ConfigError, match="train_fraction"):
        Config(train_fraction=1.5)
    with pytest.raises(ConfigError, match="task_weighting.*baseline"):
        Config(method="baseline", task_weighting="mgda")
    with pytest.raises(ConfigError, match="grad_diagnostics.*baseline"):
        Config(method="baseline", grad_diagnostics=True)


# ---------------------------------------------------------------- the loss as task losses
def test_the_paper_loss_is_the_weighted_task_losses():
    torch.manual_seed(0)
    z, y = torch.randn(16, 6), (torch.rand(16, 6) < 0.4).float()
    known = torch.rand(16) < 0.5
    L = task_losses(z, y, known)
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    masked = (y[:, 1:].sum(1) > 0).float()  # the paper code's rule: an image with a lesion label gets all five
    total = (5.0 * bce[:, 0] + masked * bce[:, 1:].sum(1)).sum()  # the equation of Section 2.2, by hand
    for red, images in (("mean", 6 * 16), ("per_image", 16)):
        assert torch.allclose(task_weights(6, 5.0, red) @ L, total / images)
        assert torch.allclose(paper_loss(L, 5.0, red), total / images)
    assert torch.allclose(combined_tasks(L), torch.stack([L[0], L[1:].sum()]))


# ---------------------------------------------------------------- gradient diagnostics
def _tiny(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 6))
    x = torch.randn(8, 3)
    y = torch.zeros(8, 6)
    y[:5, 0] = 1
    y[0, 1] = y[1, 2] = y[2, 1] = y[3, 3] = 1  # four images with lesion labels; no InSepThi positive
    return net, x, y


def test_gradient_cosines_equal_a_hand_computation():
    """Body h = W x + b (the shared layer), head z = V h + c. dL_t/dz_it = m_it (sigmoid(z_it) - y_it) / N, so the
    body's gradient of task t is sum_i dL_t/dz_it V_t x_i^T (W) and sum_i dL_t/dz_it V_t (b), computed here in
    numpy."""
    net, x, y = _tiny()
    cfg = Config()
    probe = GradientProbe(cfg, net)
    z = net(x)
    probe.record(task_losses(z, y))
    W, V = net[0].weight.detach().numpy(), net[1].weight.detach().numpy()
    X, Z, Y = x.numpy(), z.detach().numpy(), y.numpy()
    m = np.ones((8, 6))
    m[:, 1:] = (Y[:, 1:].sum(1) > 0)[:, None]
    dz = m * (1 / (1 + np.exp(-Z)) - Y) / 8
    dz[:, 0] *= 5.0  # the COVID term as the paper weighs it
    G = np.stack([np.concatenate([(V[t][:, None] * (dz[:, t] @ X)[None, :]).ravel(), V[t] * dz[:, t].sum()])
                  for t in range(6)])
    assert G.shape == (6, W.size + 4)
    rows = {r["task"]: r for r in probe.rows}
    g0 = G[0]
    for k, name in enumerate(LESIONS, start=1):
        g = G[k]
        if np.linalg.norm(g) == 0:
            assert math.isnan(rows[name]["cosine"])
            continue
        assert rows[name]["cosine"] == pytest.approx(g0 @ g / np.linalg.norm(g0) / np.linalg.norm(g), abs=1e-5)
        assert rows[name]["norm_ratio"] == pytest.approx(np.linalg.norm(g) / np.linalg.norm(g0), rel=1e-5)
    s = G[1:].sum(0)
    assert rows["lesions"]["cosine"] == pytest.approx(g0 @ s / np.linalg.norm(g0) / np.linalg.norm(s), abs=1e-5)
    assert probe.epoch_summary()["grad_conflict_lesions"] == float(rows["lesions"]["cosine"] < 0)


def test_gradient_stats_of_known_vectors():
    G = torch.tensor([[1.0, 0, 0], [1, 1, 0], [-1, 0, 0], [0, 0, 0], [0, 2, 0], [0, 0, 3]])
    st = {r["task"]: r for r in gradient_stats(G)}
    assert st["GGO"]["cosine"] == pytest.approx(1 / math.sqrt(2))
    assert st["Csld"]["cosine"] == pytest.approx(-1) and st["Csld"]["norm_ratio"] == pytest.approx(1)
    assert math.isnan(st["CrPa"]["cosine"]) and st["CrPa"]["norm_ratio"] == 0
    assert st["AirBr"]["cosine"] == pytest.approx(0) and st["InSepThi"]["norm_ratio"] == pytest.approx(3)
    assert st["lesions"]["cosine"] == pytest.approx(0)  # (0, 3, 3) against (1, 0, 0)


def test_diagnostics_do_not_change_the_training():
    cfg, state = Config(), None
    params = []
    for diag in (False, True):
        net, x, y = _tiny()
        if state is None:
            state = {k: v.clone() for k, v in net.state_dict().items()}
        net.load_state_dict(state)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        probe = GradientProbe(cfg, net) if diag else None
        for _ in range(3):
            train_step(TaskCombiner(cfg, net), opt, x, y, torch.ones(8, dtype=torch.bool), cfg, torch.device("cpu"),
                       probe)
        params.append(torch.cat([p.detach().ravel() for p in net.parameters()]))
    assert torch.equal(params[0], params[1])


# ---------------------------------------------------------------- ways of combining the tasks
@pytest.mark.parametrize("kind", TASK_WEIGHTINGS)
def test_each_combination_trains_a_step_and_moves_the_loss(kind):
    net, x, y = _tiny(1)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 6))
    cfg = Config(task_weighting=kind)
    combine = TaskCombiner(cfg, net)
    opt = torch.optim.SGD([*net.parameters(), *combine.parameters()], lr=0.05)
    known = torch.ones(8, dtype=torch.bool)
    before = task_losses(net(x), y, known).detach()
    body = [p.detach().clone() for p in split_head(net)[0].parameters()]
    train_step(combine, opt, x, y, known, cfg, torch.device("cpu"))
    after = task_losses(net(x), y, known).detach()
    assert not torch.equal(before, after)
    assert combined_tasks(after)[0] < combined_tasks(before)[0], f"{kind}: the COVID loss did not fall"
    assert any(not torch.equal(a, b.detach()) for a, b in zip(body, split_head(net)[0].parameters())), \
        f"{kind}: the shared layers did not move"
    if kind == "uncertainty":
        assert not torch.equal(combine.uncertainty.log_var.detach(), torch.zeros(2))
        assert set(combine.weights()) == {"weight_COVID", "weight_lesions"}


def test_an_unknown_weighting_is_refused():
    with pytest.raises(ConfigError, match="task_weighting"):
        Config(task_weighting="gradnorm")


# ---------------------------------------------------------------- the lab profile and its results
def test_the_lab_profile_lists_its_runs():
    prof = load_profile("lab", ROOT)
    quick = load_profile("quick", ROOT)
    assert [c.to_dict() for c in prof["runs"]] == [c.to_dict() for c in quick["runs"]]  # base: quick
    names = [n for n, _, out in training_runs(prof, ROOT) if out.parent == ROOT / "runs" / "lab" / "lab"]
    assert len(names) == len(set(names)) == 3 * 2 * 3 + 6 * 3 + 1
    cfgs = dict(prof["lab_runs"])
    assert cfgs["lab-baseline-f010-s2"].train_fraction == 0.1 and cfgs["lab-baseline-f010-s2"].method == "baseline"
    assert cfgs["lab-ladnn-mgda-s1"].task_weighting == "mgda" and cfgs["lab-ladnn-mgda-s1"].seed == 1
    assert cfgs["lab-ladnn-gradients-s0"].grad_diagnostics
    first = prof["runs"][0].to_dict()
    for c in cfgs.values():  # each lab run is the first recipe with its one change
        d = c.to_dict()
        changed = {k for k in d if d[k] != first[k]} - {"method", "seed", "train_fraction", "task_weighting",
                                                          "grad_diagnostics"}
        assert not changed


def test_a_bad_lab_key_or_base_is_named(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "quick.yaml").write_text((ROOT / "profiles" / "quick.yaml").read_text())
    bad = tmp_path / "profiles" / "x.yaml"
    bad.write_text("base: quick\nlab:\n  fraction: [0.1]\n")
    with pytest.raises(BuildError, match=r"lab: unknown key 'fraction'; did you mean 'fractions'"):
        load_profile("x", tmp_path)
    bad.write_text("base: nosuch\n")
    with pytest.raises(BuildError, match="base: no profile 'nosuch'"):
        load_profile("x", tmp_path)


def test_committed_results_match_todays_lab_profile_and_data(data_dir):
    tables = lab.committed()
    assert lab.check_committed(tables, *lab.committed_must_match(ROOT)) == []
    # the check can fail: a changed config, a wrong label and a missing run are each named
    t = {k: v.copy() for k, v in tables.items()}
    t["runs"].loc[0, "config"] = t["runs"].loc[0, "config"].replace('"epochs": 5', '"epochs": 6')
    t["predictions"].loc[0, "y_true"] = 1 - t["predictions"].loc[0, "y_true"]
    t["runs"] = t["runs"].iloc[:-1]
    problems = lab.check_committed(t, *lab.committed_must_match(ROOT))
    assert any("config differs" in p for p in problems)
    assert any("test images or labels differ" in p for p in problems)
    assert any("missing" in p for p in problems)


def test_the_chapters_tables_from_the_committed_results():
    tables = lab.committed()
    curve = lab.learning_curve(tables)
    assert list(curve["share of training patients"]) == [0.1, 0.25, 0.5, 1.0]
    assert (curve["training images"].diff().dropna() > 0).all()
    for _, r in curve.iterrows():
        assert r["diff_lo"] <= r["diff"] <= r["diff_hi"]
        for m in ("baseline", "ladnn"):
            assert r[m][1] <= r[m][0] <= r[m][2]
    assert "%" in lab.curve_sentence(curve)
    comb = lab.combination_table(tables)
    assert comb["key"].tolist()[0] == "fixed" and set(comb["key"]) == set(TASK_WEIGHTINGS)
    assert (comb["seeds"] == 3).all()
    grads = lab.gradient_summary(tables)
    assert list(grads["term"]) == [*LESIONS, "all five lesions"]
    assert ((grads["conflicting steps"] >= 0) & (grads["conflicting steps"] <= 1)).all()
    assert isinstance(lab.combination_view(comb), pd.DataFrame)
