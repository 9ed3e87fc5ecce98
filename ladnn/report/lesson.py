"""The class in multi-task learning (book pages "Teaching with this book", "Multi-task learning with lesion attention"
and "Multi-task lab"): its exercises, each with a worked solution computed here from the library, the data, this
build's runs or the lab's committed results.

An exercise that asks students to train gives a complete `ladnn train --profile quick ...` command. Its solution is
the run of this build with exactly that command's configuration (the class profile trains every one of them: see
`class_runs`); where the build has none, the lab's committed run with that configuration, said so; where neither has
it, the solution says which profile trains it. Every exercise that needs the lab's whole grid reads the lab's tables
(`ladnn.report.lab.load`), which are the committed results unless this build is the lab profile's."""
from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ladnn.config import LESIONS, Config
from ladnn.loss import lesion_mask, paper_loss, task_losses
from ladnn.metrics import auc, paired_difference
from ladnn.profiles import load_profile, training_runs
from ladnn.report import lab
from ladnn.rundir import run_dirs, scan_runs
from ladnn.scores import PRED, runs_auc


@dataclass(frozen=True)
class Exercise:
    """One exercise: where it stands, the minutes of class it takes, its question (Markdown), the commands it runs
    and how long they took us (a measured time, stated in the box)."""
    key: str
    chapter: str  # "mtl" or "lab"
    title: str
    minutes: int
    question: str
    commands: tuple[str, ...] = ()
    run_time: str = ""


# Measured with two CPU threads, one run at a time (README, "Timings"): a run on the whole training split took 57 to
# 61 s, one on a quarter of it 29 s; the first run of a fresh clone also caches the frozen layers' activations of
# every image, 23 s more.
FIRST_RUN = "the first run of a fresh clone takes about 25 s more: it caches the frozen layers' activations"
RUN_TIME = f"about 1 minute on two CPU cores; {FIRST_RUN}"

EXERCISES = (
    Exercise("mask", "mtl", "The mask, by hand", 10, """\
A batch holds four training images: (a) a non-COVID image, (b) a COVID image whose caption names no lesion, (c) a
COVID image with ground-glass opacity (GGO), (d) a COVID image with GGO and consolidation (Csld). The network outputs
a logit of 0 everywhere, so every binary cross-entropy term is $\\ln 2 \\approx 0.693$.

1. Which of the $4 \\times 6$ terms does the masked loss $L$ count, and with what weight?
2. What is $L$ with the paper's $w = 5$, and with $w = 1$?
3. Image (b) is a COVID image. Why does it teach the lesion outputs nothing?"""),
    Exercise("coverage", "mtl", "How often is the auxiliary task on?", 5, """\
In D0's training split, how many images switch the lesion terms on ($m_i = 1$)? How many positive labels does each
lesion have, and how many does the validation split have? Predict first, then count with `ladnn.data.load_table("D0")`
(the columns `split`, `covid` and one per lesion). What does the count mean for a lesion output's AUC?"""),
    Exercise("scale", "mtl", "Divide by 6N or by N?", 10, """\
`loss_reduction: per_image` divides the masked loss by $N$ instead of $6N$: the loss and its gradient grow six times.
The optimiser is Adam with weight decay $5 \\times 10^{-4}$ (`Config.weight_decay`). Predict how the first update
changes (a) without weight decay and (b) with it. Then check with one `torch.optim.Adam` step (learning rate
of the quick recipe, `Config.lr`) on 1000 parameters drawn from $N(0, 1)$, with a gradient
$g = 10^{-3} \\cdot N(0, 1)$ and then $6g$ (`ladnn.report.lesson.adam_step`)."""),
    Exercise("covid_weight", "mtl", "The COVID weight", 10, """\
The paper counts the COVID term five times ($w = 5$). Predict what $w = 1$ does to the test AUC, then train it:""",
             ("ladnn train --profile quick --covid-weight 1.0 --out runs/try/w1",), RUN_TIME),
    Exercise("curve", "lab", "Read the learning curve", 5, """\
From the table and figure of section 1 (the lab's whole grid: three seeds at each share, read from the lab's results
as the page says above): at which share of the training patients is LA-DNN's paired advantage over the baseline
largest, and does any interval lie clear of zero? What does the "detectable" column say about a difference of one
point of AUC?"""),
    Exercise("quarter", "lab", "A quarter of the patients", 10, """\
Train both methods on 25% of the training patients, seed 0 (the same nested subset for both), and compare their test
AUCs with each other and with the table's 25% row:""",
             ("ladnn train --profile quick --method baseline --train-fraction 0.25 --out runs/try/f25-baseline",
              "ladnn train --profile quick --train-fraction 0.25 --out runs/try/f25-ladnn"),
             f"about 30 s each on two CPU cores; {FIRST_RUN}"),
    Exercise("gradients", "lab", "Conflict without harm", 5, """\
Section 2's table says how often the summed lesion gradient conflicts with the COVID gradient (cosine below 0) and how
large it is beside it. Section 1's learning curve at 100% says what the lesion task does to the test AUC. How do the
two fit together? (The gradient diagnostics need one run with six extra backward passes a step: the table comes from
the lab's results.)"""),
    Exercise("uncertainty", "lab", "What uncertainty weighting learns", 10, """\
Uncertainty weighting starts both tasks at weight 1 and learns $e^{-s_t}$. Predict which task ends with the larger
weight by the end of training, and whether the ratio comes near the paper's 5 to 1. Then train it:""",
             ("ladnn train --profile quick --task-weighting uncertainty --out runs/try/uncertainty",),
             RUN_TIME),
    Exercise("mgda", "lab", "MGDA's short step", 5, """\
MGDA's update is the shortest vector in the convex hull of the two tasks' gradients. How long is that step beside each
task's own gradient, the more so when they conflict, and what should that do to training? Predict whether MGDA's test AUC lies
above or below the fixed weights', then read section 3's table (the lab's results: three seeds)."""),
)
BY_KEY = {e.key: e for e in EXERCISES}


def number(key: str) -> int:
    """An exercise's number in the class: the multi-task chapter's first, then the lab's."""
    return [e.key for e in EXERCISES].index(key) + 1


# ---------------------------------------------------------------- the runs a solution reads
def repo_root(root: str | Path | None = None) -> Path:
    """The repository whose profiles/ the commands' `--profile` reads: `root`, else the working directory or the
    nearest folder above it that has profiles/ (a notebook runs in notebooks/), else the one above the package."""
    if root is not None:
        return Path(root)
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / "profiles" / "quick.yaml").is_file():
            return d
    return Path(__file__).resolve().parents[2]


def command_config(command: str, root: str | Path | None = None) -> Config:
    """The configuration a `ladnn train` command trains (what its `--dry-run` prints), without the output folder."""
    from ladnn import cli

    root = repo_root(root)
    argv = shlex.split(command)[2:]
    a = cli.parser().parse_args(["train", *argv])
    return cli._config(a, ["train", *argv], str(root))


def _key(cfg: Config | dict) -> str:
    return json.dumps(cfg.to_dict() if isinstance(cfg, Config) else dict(cfg), sort_keys=True)


@dataclass
class Found:
    """The run a solution reads: its test AUC with its 95% interval (whole test patients resampled), where it came
    from, its training history and its test predictions (sorted by image)."""
    auc: tuple[float, float, float]
    where: str
    history: pd.DataFrame
    predictions: pd.DataFrame


def paired(a: Found, b: Found) -> dict:
    """AUC(a) - AUC(b) on the same test images, with its 95% interval (whole patients resampled, the same draw for
    both: `ladnn.metrics.paired_difference`)."""
    pa, pb = a.predictions, b.predictions
    if list(pa[PRED.image]) != list(pb[PRED.image]):
        raise ValueError("paired runs must be scored on the same test images")
    return paired_difference(pa[PRED.y_true].to_numpy(), pa[PRED.p_covid].to_numpy(), pb[PRED.p_covid].to_numpy(),
                             pa[PRED.group].to_numpy(), lab.N_BOOT, seed=0)


def find_run(cfg: Config, runs_dir: str | Path, tables: dict | None = None) -> Found | None:
    """This build's run with configuration `cfg` (matrix, ablations or lab), else the lab's committed run with it,
    else None."""
    want = _key(cfg)
    for folder in run_dirs(runs_dir).values():
        for r in scan_runs(folder)[0]:
            if _key(r.config) == want:
                m = r.metrics
                return Found((m.covid.auc, *m.covid_ci95.auc), f"this build's run `{shown_path(r.path)}`", r.history,
                             r.predictions.sort_values(PRED.image, ignore_index=True))
    tables = tables if tables is not None else lab.committed()
    runs = tables["runs"]
    hit = runs[[_key(json.loads(c)) == want for c in runs["config"]]]
    if hit.empty:
        return None
    y, P, g, _ = lab.seed_matrix(tables, hit.iloc[:1])
    name = hit["run"].iloc[0]
    pred = tables["predictions"]
    return Found(runs_auc(y, P, g, lab.N_BOOT), f"the lab's committed run `{name}` (the same configuration)",
                 tables["history"][tables["history"]["run"] == name],
                 pred[pred["run"] == name].sort_values(PRED.image, ignore_index=True))


def shown_path(path: Path) -> str:
    """A run folder as the book names it: from its `runs/` folder on (the build passes absolute paths)."""
    parts = Path(path).parts
    return "/".join(parts[len(parts) - 1 - parts[::-1].index("runs"):]) if "runs" in parts else str(path)


def run_auc(tables: dict, run: str) -> float:
    """One run's test AUC, from the lab tables' predictions."""
    y, P, _, _ = lab.seed_matrix(tables, tables["runs"][tables["runs"]["run"] == run])
    return auc(y, P[0])


def seed_range(tables: dict, method: str, fraction: float = 1.0, weighting: str = "fixed") -> tuple[float, float, int]:
    """The lowest and highest test AUC over the lab's seeds of one setting, and how many seeds."""
    runs = tables["runs"]
    at = runs[(runs["method"] == method) & (runs["train_fraction"] == fraction) & (runs["task_weighting"] == weighting)
              & ~runs["grad_diagnostics"].astype(bool)]
    aucs = [run_auc(tables, r) for r in at["run"]]
    return min(aucs), max(aucs), len(aucs)


def cached(tables: dict, name: str, make):
    """`make(tables)` once per set of tables: the lab's curve and combination table are bootstraps, and the lab page,
    several solutions and the summary read them."""
    key = f"_{name}"
    if key not in tables:
        tables[key] = make(tables)
    return tables[key]


def class_runs(root: str | Path | None = None) -> dict[str, Config]:
    """Every command of the exercises with the configuration it trains (`command_config`)."""
    return {c: command_config(c, root) for e in EXERCISES for c in e.commands}


# ---------------------------------------------------------------- the lesion labels, counted once
def lesion_counts() -> pd.DataFrame:
    """Per lesion: positives in D0's training and validation splits, and, on the test images that carry a lesion
    label (where the lab scores each lesion), its positives and negatives."""
    from ladnn.data import load_table

    d0 = load_table("D0")
    test = d0[d0["split"] == "test"]
    test = test[test[list(LESIONS)].sum(axis=1) > 0]
    rows = [{"lesion": k, "train": int(d0.loc[d0["split"] == "train", k].sum()),
             "val": int(d0.loc[d0["split"] == "val", k].sum()), "test_pos": int(test[k].sum()),
             "test_neg": int(len(test) - test[k].sum())} for k in LESIONS]
    return pd.DataFrame(rows).set_index("lesion")


# fewer images than this of one class among the labelled test images: the lesion's test AUC cannot be judged
MIN_CLASS = 10


def unjudged(counts: pd.DataFrame) -> list[str]:
    """The lesions whose test AUC rests on fewer than MIN_CLASS images of one class (none: no AUC at all)."""
    return [k for k, r in counts.iterrows() if min(r["test_pos"], r["test_neg"]) < MIN_CLASS]


def unjudged_sentence(counts: pd.DataFrame) -> str:
    """Why those lesions' test AUCs mean little, lesion by lesion."""
    parts = []
    for k in unjudged(counts):
        r = counts.loc[k]
        n = int(r["test_pos"] + r["test_neg"])
        if min(r["test_pos"], r["test_neg"]) == 0:
            parts.append(f"{k} has {'no positive' if r['test_pos'] == 0 else 'no negative'} image among them, so no AUC")
        elif r["test_neg"] < r["test_pos"]:
            parts.append(f"{k} is named in {int(r['test_pos'])} of them, so its AUC rests on the {int(r['test_neg'])} "
                         "without it")
        else:
            parts.append(f"{k} rests on {int(r['test_pos'])} positives of {n}")
    return "; ".join(parts)


# ---------------------------------------------------------------- the solutions
def pts(x: float) -> str:
    return f"{100 * x:.1f}"


def ci(v: tuple[float, float, float]) -> str:
    return f"{pts(v[0])} [{pts(v[1])}, {pts(v[2])}]"


def mask_example(covid_weight: float = 5.0) -> tuple[pd.DataFrame, float]:
    """Exercise "mask": each term's weight in L for the four images, in 24ths (L = sum / 6N with N = 4; 0: not
    counted), and L itself, computed by the library's loss (`task_losses`, `paper_loss`) on logits of 0 (CPU tensors:
    a worked example that meets no model)."""
    y = torch.tensor([[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    on = lesion_mask(y, torch.ones(4, dtype=torch.bool), "any_lesion").to(torch.float64)
    weights = torch.cat([torch.full((4, 1), float(covid_weight), dtype=torch.float64),
                         on[:, None].expand(4, 5)], dim=1)
    table = pd.DataFrame(weights.numpy(), columns=["COVID", *LESIONS],
                         index=["(a) non-COVID", "(b) COVID, no lesion named", "(c) COVID, GGO", "(d) COVID, GGO+Csld"])
    loss = float(paper_loss(task_losses(torch.zeros(4, 6), y), covid_weight))
    return table, loss


def adam_step(scale: float, weight_decay: float, lr: float = 2e-4, seed: int = 0) -> torch.Tensor:
    """One Adam step on 1000 parameters drawn from N(0, 1) whose gradient is `scale` times a fixed g ~ 1e-3 N(0, 1)
    (exercise "scale" passes the quick recipe's learning rate)."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(1000, generator=gen))
    start = p.detach().clone()
    p.grad = scale * 1e-3 * torch.randn(1000, generator=gen)
    torch.optim.Adam([p], lr=lr, weight_decay=weight_decay).step()
    return p.detach() - start


def solution(key: str, runs_dir: str | Path = "runs/quick", tables: dict | None = None, root: str | Path | None = None) -> str:
    """The worked solution of exercise `key`, in Markdown."""
    tables = tables if tables is not None else lab.load(runs_dir)[0]
    return SOLUTIONS[key](runs_dir, tables, root)


def _mask(runs_dir, tables, root) -> str:
    t5, l5 = mask_example(5.0)
    _, l1 = mask_example(1.0)
    on = int((t5 > 0).to_numpy().sum())
    rows = "\n".join(f"| {i} | " + " | ".join("" if v == 0 else f"{v:g}/24" for v in r) + " |"
                     for i, r in t5.iterrows())
    return f"""\
1. The COVID term of every image counts ($w/6N$ each); the five lesion terms count only for (c) and (d), the images
   with at least one lesion label: {on} of the 24 terms. The weight of each term in $L$ (blank: not counted):

   | image | COVID | {' | '.join(LESIONS)} |
   |---|---|---|---|---|---|---|
{chr(10).join('   ' + r for r in rows.splitlines())}

2. With every term at $\\ln 2$: $L = (4w + 10)\\ln 2 / 24$, so {l5:.3f} for $w = 5$ and {l1:.3f} for $w = 1$
   (`paper_loss(task_losses(logits, y), w)`, computed when this page was built).
3. Its lesion labels are all 0, so $m_i = 0$: the paper's rule reads "no lesion named" as "unknown", not as "no
   lesion". The rule `positives` (`--lesion-mask positives`) would count it and teach "no lesion" instead."""


def _coverage(runs_dir, tables, root) -> str:
    from ladnn.data import load_table

    d0 = load_table("D0")
    tr = d0[d0["split"] == "train"]
    on = int((tr[list(LESIONS)].sum(axis=1) > 0).sum())
    pos = int(tr["covid"].sum())
    c = lesion_counts()
    empty = [k for k in LESIONS if c.loc[k, "val"] == 0]
    n_test = int(c["test_pos"].iloc[0] + c["test_neg"].iloc[0])
    return f"""\
{on} of the {len(tr)} training images ({on / len(tr):.0%}; {on / pos:.0%} of the {pos} COVID images) switch the
lesion terms on. Positive labels in the training split: {', '.join(f"{k} {c.loc[k, 'train']}" for k in LESIONS)};
in the validation split: {', '.join(f"{k} {c.loc[k, 'val']}" for k in LESIONS)}. A lesion with a handful of positives
gives its output little to learn, and {', '.join(empty) if empty else 'no lesion'} {'has' if len(empty) == 1 else 'have'}
no positive in the validation split, so the kept epoch (each run keeps the one with the lowest validation COVID loss)
could not be chosen with {'it' if len(empty) == 1 else 'them'} in view, even by accident.

The lab scores each lesion on the {n_test} test images that carry a lesion label: {unjudged_sentence(c)}. Those
AUCs mean little, whether they land near 50 (a constant's score) or far from it. That is a lesson of its own: an
auxiliary task is judged by what it does to the primary task, and its own outputs may be impossible to evaluate."""


def _scale(runs_dir, tables, root) -> str:
    cfg = command_config("ladnn train --profile quick --out x", root)
    step1 = lambda scale, decay: adam_step(scale, decay, cfg.lr)
    no = (step1(6, 0) - step1(1, 0)).abs().max().item()
    step = step1(1, 0).abs().max().item()
    wd = (step1(6, cfg.weight_decay) - step1(1, cfg.weight_decay)).abs().max().item()
    return f"""\
(a) Adam divides the step by the square root of its running mean of squared gradients, so a gradient six times as
large gives the same step: the largest difference between the two first steps is {no:.1e}, against steps of up to
{step:.1e} (Adam's $\\epsilon$ makes the small difference). (b) Adam's weight decay is added to the gradient before
that division, so next to a gradient six times as large it counts six times less: the two steps now differ by up to
{wd:.1e}{', and some coordinates move in opposite directions' if wd > step * 1.01 else ''}. How much it matters
depends on the size of the decay term (decay times parameter) beside the gradient, which this toy sets at a similar
size. This is why `ladnn` follows the paper's code (`loss_reduction: mean`) and keeps `per_image` as an ablation: the
Validity chapter measures what it does to the test AUC."""


def _run_line(key: str, command: str, runs_dir, tables, root) -> tuple[str, Found | None]:
    found = find_run(command_config(command, root), runs_dir, tables)
    if found is None:
        return (f"This build has no run of `{command}`; `make book PROFILE=class` trains it and shows its result "
                "here."), None
    return f"Test AUC {ci(found.auc)}, from {found.where}.", found


def seeds_of(cfg: Config, runs_dir: str | Path, tables: dict) -> tuple[list[float], str]:
    """Test AUCs of `cfg` over every seed: this build's runs when it has two or more seeds of it, else the lab's
    committed runs; and where they come from."""
    other = lambda c: {**(c.to_dict() if isinstance(c, Config) else c), "seed": None, "out": None}
    want = other(cfg)
    own = [r.metrics.covid.auc for r in scan_runs(run_dirs(runs_dir)["matrix"])[0] if other(r.config) == want]
    if len(own) >= 2:
        return own, "this build's runs"
    runs = tables["runs"]
    hit = runs[[other(json.loads(c)) == want for c in runs["config"]]]
    aucs = [run_auc(tables, r) for r in hit["run"]]
    return aucs, "the lab's committed runs"


def _covid_weight(runs_dir, tables, root) -> str:
    line, found = _run_line("covid_weight", BY_KEY["covid_weight"].commands[0], runs_dir, tables, root)
    base_cfg = command_config("ladnn train --profile quick --out x", root)
    base = find_run(base_cfg, runs_dir, tables)
    aucs, where = seeds_of(base_cfg, runs_dir, tables)
    out = f"With $w = 1$: {line}"
    if base is not None:
        out += f" The paper's $w = 5$, same seed: {ci(base.auc)}, from {base.where}."
    lo, hi = min(aucs), max(aucs)
    out += f" Over the {len(aucs)} seeds of {where} the paper's weighting ranges from {pts(lo)} to {pts(hi)}."
    if found is not None and base is not None:
        d = paired(found, base)
        holds0 = d["auc_diff_ci"][0] <= 0 <= d["auc_diff_ci"][1]
        reading = ("the interval holds 0, so this run cannot tell the change from no change" if holds0 else
                   "the interval lies clear of 0 for this seed")
        width = 100 * (d["auc_diff_ci"][1] - d["auc_diff_ci"][0])
        narrower = width < 100 * min(found.auc[2] - found.auc[1], base.auc[2] - base.auc[1])
        out += f"""

Paired on the same test images, $w = 1$ minus $w = 5$ is {100 * d['auc_diff']:+.1f} points
[{100 * d['auc_diff_ci'][0]:+.1f}, {100 * d['auc_diff_ci'][1]:+.1f}]: {reading}. Each run's own interval is
{pts(found.auc[2] - found.auc[1])} to {pts(base.auc[2] - base.auc[1])} points wide, because it resamples the
{lab.test_split_size(tables)['patients']} test patients; the paired one is {width:.1f} points wide,
{'narrower because both runs see the same draw of patients' if narrower else 'no narrower: the two runs disagree image by image'}. One seed is still one seed: the Validity chapter reads this ablation against the spread of the LA-DNN seeds,
and a class that wants an answer trains seeds 1 and 2 as well (`--seed 1`)."""
    return out


def _curve(runs_dir, tables, root) -> str:
    return curve_solution(cached(tables, "curve", lab.learning_curve))


def curve_solution(curve: pd.DataFrame) -> str:
    """Exercise "curve", from `ladnn.report.lab.learning_curve`'s table."""
    best = curve.loc[curve["diff"].idxmax()]
    clear = curve[(curve["diff_lo"] > 0) | (curve["diff_hi"] < 0)]
    det, top = 100 * curve["detectable"], 100 * curve["diff_hi"]
    shares = lambda rows: ", ".join(f"{x:.0%}" for x in rows["share of training patients"])
    one = ("at every share" if (det <= 1).all() else
           f"at {shares(curve[det <= 1])} but not at {shares(curve[det > 1])}" if (det <= 1).any() else "at no share")
    out = f"""\
The paired advantage is largest at {best['share of training patients']:.0%} of the patients:
{100 * best['diff']:+.1f} points [{100 * best['diff_lo']:+.1f}, {100 * best['diff_hi']:+.1f}].
{'No interval lies clear of zero.' if clear.empty else 'Clear of zero: ' + shares(clear) + '.'}
The detectable difference runs from {det.min():.1f} to {det.max():.1f} points, so a true difference of one point would
be found with 80% power {one}."""
    if clear.empty:
        out += f""" The intervals' upper ends ({top.min():+.1f} to {top.max():+.1f} points) rule out a larger gain at
each share; smaller ones cannot be ruled out. If LA-DNN is sample-efficient on this recipe, its gain is below
{top.max():.1f} points of AUC."""
    else:
        out += """ Where an interval lies clear of zero, ask how many seeds and test patients stand behind it before
calling the method sample-efficient: the table's "seeds" column says."""
    return out


def _quarter(runs_dir, tables, root) -> str:
    cmds = BY_KEY["quarter"].commands
    lines, found = [], []
    for method, c in zip(("baseline", "LA-DNN"), cmds):
        line, f = _run_line("quarter", c, runs_dir, tables, root)
        lines.append(f"- {method}: {line}")
        found.append(f)
    out = "\n".join(lines)
    if all(found):
        d = paired(found[1], found[0])
        out += (f"\n\nLA-DNN minus baseline, seed 0, paired on the same test images: {100 * d['auc_diff']:+.1f} points "
                f"[{100 * d['auc_diff_ci'][0]:+.1f}, {100 * d['auc_diff_ci'][1]:+.1f}].")
    ranges = [seed_range(tables, m, 0.25) for m in ("baseline", "ladnn")]
    row = cached(tables, "curve", lab.learning_curve).set_index("share of training patients").loc[0.25]
    seed_spread = max(r[1] - r[0] for r in ranges)
    why = ": that is why the table pairs the methods by seed" if seed_spread > abs(row["diff"]) else ""
    out += f"""

The table's 25% row is the mean over the {ranges[0][2]} seeds of the lab's results: baseline
{pts(row['baseline'][0])}, LA-DNN {pts(row['ladnn'][0])}, a paired difference of {100 * row['diff']:+.1f} points. Seed by
seed the baseline ranges from {pts(ranges[0][0])} to {pts(ranges[0][1])} and LA-DNN from {pts(ranges[1][0])} to
{pts(ranges[1][1])}: a student's seed-0 pair is one draw from these. The seeds move the AUCs by up to
{pts(seed_spread)} points, the method by {abs(100 * row['diff']):.1f} on average{why}."""
    return out


def _gradients(runs_dir, tables, root) -> str:
    g = lab.gradient_summary(tables)
    if g.empty:
        return "No run of these results recorded its gradients."
    s = g.set_index("term").loc["all five lesions"]
    along = s["median cosine"] * s["median norm ratio"]
    return f"""\
The summed lesion gradient points against the COVID gradient in {s['conflicting steps']:.0%} of the steps, with a
median cosine of {s['median cosine']:.3f}: a consistent opposition (two random directions among millions of parameters
would have cosines of a few ten-thousandths), but a small one. Its norm is {s['median norm ratio']:.2f} times the COVID
gradient's, so its component along the COVID gradient is about {s['median cosine']:.3f} x {s['median norm ratio']:.2f}
= {100 * along:+.1f}% of the COVID gradient: too little to slow the COVID task. The norm ratio is measured with the
paper's weights, which count the COVID term five times; without them the lesion gradient would be about
{5 * s['median norm ratio']:.1f} times the COVID one. "Conflict" by the sign of a cosine says nothing about its size:
look at the cosine's magnitude and the norm ratio together. These figures come from one run (seed 0, the lab's
diagnostic run); their spread over seeds was not measured."""


def _uncertainty(runs_dir, tables, root) -> str:
    line, found = _run_line("uncertainty", BY_KEY["uncertainty"].commands[0], runs_dir, tables, root)
    out = line
    if found is not None and "weight_COVID" in found.history:
        last = found.history.iloc[-1]
        larger = "COVID" if last["weight_COVID"] > last["weight_lesions"] else "lesion"
        out += (f" After the last epoch the learned weights are {last['weight_COVID']:.3f} (COVID) and "
                f"{last['weight_lesions']:.3f} (lesions): the {larger} task ends with the larger weight, by "
                f"{abs(last['weight_COVID'] - last['weight_lesions']):.3f}.")
    w = lab.uncertainty_weights(tables)
    if len(w):
        sentence = lab.uncertainty_sentence(w)
        out += f" Mean over the lab's seeds: {sentence[0].lower()}{sentence[1:]}"
    cfg = command_config(BY_KEY["uncertainty"].commands[0], root)
    steps = cfg.epochs * math.ceil(tables["runs"]["train_images"].max() / cfg.batch_size)
    out += f"""

What to predict from: the loss $e^{{-s_t}} L_t + s_t/2$ is lowest in $s_t$ where $e^{{-s_t}} = 1/(2L_t)$, so a
task's weight falls while its loss is above 0.5 and rises once it is below; the per-epoch table above shows where the
lab's runs went. How far the weights can move is set by the step size: Adam moves each $s_t$ by at most about its learning rate ({cfg.lr:g}) a step, and
{cfg.epochs} epochs of {cfg.batch_size}-image batches are about {steps} steps, so $s_t$ can move about
{steps * cfg.lr:.3f} at most. The method trains with nearly equal weights: its test AUC says how an equal weighting
does here, not what a learned weighting can do; a longer schedule, or a larger learning rate for $s_t$, would be
needed to see it learn."""
    return out


def _mgda(runs_dir, tables, root) -> str:
    return mgda_solution(cached(tables, "comb", lab.combination_table))


def mgda_solution(comb: pd.DataFrame) -> str:
    """Exercise "mgda", from `ladnn.report.lab.combination_table`'s table."""
    comb = comb.set_index("key")
    if "mgda" not in comb.index:
        return "These results have no MGDA run."
    row = comb.loc["mgda"]
    holds0 = row["diff_lo"] <= 0 <= row["diff_hi"]
    verdict = ("The interval holds 0: the data support neither \"above\" nor \"below\"." if holds0 else
               f"The interval lies {'above' if row['diff_lo'] > 0 else 'below'} 0: MGDA did "
               f"{'better' if row['diff_lo'] > 0 else 'worse'} than the fixed weights on these seeds.")
    return f"""\
The shortest vector in the hull of two gradients is never longer than the shorter of them, and shorter still the more
they point apart: MGDA's combined gradient on the shared layers is short. Its mean test AUC is {ci(row['auc'])} over
{int(row['seeds'])} seeds, a paired difference from the fixed weights of {100 * row['diff']:+.1f} points
[{100 * row['diff_lo']:+.1f}, {100 * row['diff_hi']:+.1f}]. {verdict} Why a short gradient need not mean slow
training: Adam divides each parameter's step by the running size of its own gradient (exercise {number('scale')}), so a
gradient that is uniformly shorter gives nearly the same steps. What MGDA changes is the direction: a blend of the
two tasks' gradients with weights set by their sizes. The extreme case is worth a thought: with no lesion images at
all (`--lesion-mask none`) the lesion gradient is zero at every step, the hull contains 0, and the shared layers get
no gradient from either task; only Adam's weight decay still moves them, pulling every weight toward 0."""


SOLUTIONS = {"mask": _mask, "coverage": _coverage, "scale": _scale, "covid_weight": _covid_weight, "curve": _curve,
             "quarter": _quarter, "gradients": _gradients, "uncertainty": _uncertainty, "mgda": _mgda}


# ---------------------------------------------------------------- the page
def shell_lines(command: str, width: int = 64) -> str:
    """A command as the page prints it: over `width` characters, its `--out` on a continuation line."""
    return command.replace(" --out ", " \\\n    --out ") if len(command) > width else command


def box(key: str, runs_dir: str | Path = "runs/quick", tables: dict | None = None, root: str | Path | None = None) -> str:
    """Exercise `key` as the page shows it: an admonition with its question, its commands and their time, and the
    worked solution folded below it."""
    e = BY_KEY[key]
    body = e.question
    if e.commands:
        body += ("\n\n```bash\n" + "\n".join(shell_lines(c) for c in e.commands) + "\n```\n\n"
                 + f"{'They take' if len(e.commands) > 1 else 'It takes'} {e.run_time}.")
    return (f"`````{{admonition}} Exercise {number(key)}: {e.title} ({e.minutes} min)\n:class: tip exercise\n{body}\n\n"
            f"````{{dropdown}} Solution\n{solution(key, runs_dir, tables, root)}\n````\n`````\n")


def chapter_exercises(chapter: str, runs_dir: str | Path = "runs/quick", root: str | Path | None = None,
                      tables: dict | None = None) -> str:
    """Every exercise of a chapter, one after another (the multi-task chapter includes this file)."""
    tables = tables if tables is not None else lab.load(runs_dir)[0]
    return "\n".join(box(e.key, runs_dir, tables, root) for e in EXERCISES if e.chapter == chapter)


def minutes(chapter: str | None = None) -> int:
    """The class minutes of the exercises (of one chapter)."""
    return sum(e.minutes for e in EXERCISES if chapter in (None, e.chapter))


def run_times(runs_dir: str | Path, root: str | Path | None = None) -> pd.DataFrame:
    """The training seconds of each of this build's runs that an exercise's command trains (metrics.json `seconds`),
    with the exercise that asks for it."""
    rows = []
    wanted = {_key(cfg): c for c, cfg in class_runs(root).items()}
    for folder in run_dirs(runs_dir).values():
        for r in scan_runs(folder)[0]:
            if (c := wanted.get(_key(r.config))) is not None:
                e = next(e for e in EXERCISES if c in e.commands)
                prec = r.metrics.run.precision or {}
                rows.append({"exercise": number(e.key), "command": c, "seconds": r.metrics.run.seconds,
                             "device": r.metrics.run.device, "threads": prec.get("threads")})
    return pd.DataFrame(rows).sort_values("exercise") if rows else pd.DataFrame(rows)


# ---------------------------------------------------------------- the plan of the class
# Minutes of reading each chapter takes in class (the teacher's plan); the exercises' minutes are in EXERCISES.
READING = {"mtl": 25, "lab": 25}
TITLES = {"mtl": "Multi-task learning with lesion attention", "lab": "Multi-task lab"}


def time_sentence(chapter: str) -> str:
    """How long a chapter takes in class: its reading and its exercises."""
    n = sum(e.chapter == chapter for e in EXERCISES)
    return (f"In class this chapter takes about {READING[chapter] + minutes(chapter)} minutes: {READING[chapter]} of "
            f"reading and {minutes(chapter)} for its {n} exercises.")


def plan() -> pd.DataFrame:
    """The class, step by step: what students do and the minutes it takes."""
    rows = []
    for ch in ("mtl", "lab"):
        rows.append({"step": f"read {TITLES[ch]}", "minutes": READING[ch]})
        rows += [{"step": f"exercise {number(e.key)}: {e.title}" + (" (trains)" if e.commands else ""),
                  "minutes": e.minutes} for e in EXERCISES if e.chapter == ch]
    return pd.DataFrame(rows)


def lab_summary(tables: dict) -> str:
    """The lab's summary bullets, each read from the tables the page shows."""
    curve = cached(tables, "curve", lab.learning_curve)
    comb = cached(tables, "comb", lab.combination_table)
    others = comb[comb["key"] != "fixed"]
    clear = others[(others["diff_lo"] > 0) | (others["diff_hi"] < 0)]
    w = lab.uncertainty_weights(tables)
    g = lab.gradient_summary(tables)
    out = ["- A learning curve compares methods only when its subsets are nested, drawn by patient and paired by seed. "
           + lab.curve_sentence(curve)]
    if not g.empty:
        s = g.set_index("term").loc["all five lesions"]
        out.append(f"- The summed lesion gradient conflicted with the COVID gradient in {s['conflicting steps']:.0%} of "
                   f"the steps, with a median cosine of {s['median cosine']:.3f}: a conflict by the sign of a cosine is "
                   "common; its size decides whether it matters.")
    out.append(f"- Of the {len(others)} other ways of combining the tasks, "
               + ("none moved the test AUC by an amount these runs detect (every paired interval holds 0)."
                  if clear.empty else f"{', '.join(clear['weighting'])} moved the test AUC clear of 0.")
               + (f" Uncertainty weighting's learned weights moved at most "
                  f"{(w - 1).abs().to_numpy().max():.3f} from 1." if len(w) else ""))
    few = unjudged(lesion_counts())
    if few:
        out.append(f"- The lesion outputs for {', '.join(few)} cannot be judged on this test split: each has fewer than "
                   f"{MIN_CLASS} labelled test images of one class. An auxiliary task is judged by the primary task, and "
                   "its own outputs need not be useful, or even measurable.")
    return "\n".join(out)


def times_markdown(runs_dir: str | Path, root: str | Path | None = None) -> str:
    """The teacher's page: the plan of the class and the training time of each exercise run this build holds."""
    steps = plan()
    lines = ["| step | minutes |", "|---|---|"] + [f"| {r.step} | {r.minutes} |" for r in steps.itertuples()]
    lines.append(f"| **the whole class** | **{steps['minutes'].sum()}** |")
    trains = [str(number(e.key)) for e in EXERCISES if e.commands]
    out = "\n".join(lines) + "\n\n"
    out += (f"{len(trains)} exercises train a model (exercises {', '.join(trains[:-1])} and {trains[-1]}). Start their "
            "runs before the reading, two at a time on a laptop with two cores, or build the class book once "
            "beforehand, which trains every run the exercises ask for (see below).\n\n")
    t = run_times(runs_dir, root)
    wanted = list(class_runs(root))
    if t.empty:
        return out + (f"This build trained none of the exercises' {len(wanted)} runs; `make book PROFILE=class` "
                      "trains them all.\n")
    out += (f"This build trained {len(t)} of the exercises' {len(wanted)} runs. The seconds each took here, training "
            "and scoring (`metrics.json`), on the device and threads each run recorded; a single run on two CPU threads "
            "took about the time its exercise states:\n\n| exercise | command | seconds | device |\n"
            "|---|---|---|---|\n")
    out += "\n".join(f"| {r.exercise} | `{r.command}` | {r.seconds:.0f} | {r.device}"
                      + (f", {r.threads} thread{'s' if r.threads != 1 else ''}" if r.threads else "") + " |"
                      for r in t.itertuples()) + "\n"
    return out


def write_pages(folder: str | Path, runs_dir: str | Path, root: str | Path | None = None) -> list[Path]:
    """The generated parts of the class's static pages (book/mtl.md and book/class.md include them)."""
    folder = Path(folder)
    tables = lab.load(runs_dir)[0]
    files = {"mtl_time.md": time_sentence("mtl") + "\n",
             "mtl_exercises.md": chapter_exercises("mtl", runs_dir, root, tables),
             "class_times.md": times_markdown(runs_dir, root),
             "class_pitfalls.md": pitfalls(runs_dir, root, tables)}
    for name, text in files.items():
        (folder / name).write_text(text)
    return [folder / n for n in files]


def pitfalls(runs_dir: str | Path, root: str | Path | None = None, tables: dict | None = None) -> str:
    """The teacher's page's pitfalls, the first two read from the data and the runs."""
    c = lesion_counts()
    rare = [k for k in LESIONS if c.loc[k, "val"] == 0]
    tables = tables if tables is not None else lab.load(runs_dir)[0]
    base = find_run(command_config("ladnn train --profile quick --out x", root), runs_dir, tables)
    n_test = int(c["test_pos"].iloc[0] + c["test_neg"].iloc[0])
    few = ", ".join(f"{k} {c.loc[k, 'train']}" for k in rare)
    out = [(f"- **The lesion AUCs mean little.** {', '.join(rare)} have few positive training images ({few}) and none in "
           f"the validation split (exercise {number('coverage')} counts them). On the {n_test} test images with a lesion "
           "label, "
           f"{unjudged_sentence(c)}. Students read the odd AUCs in the lab's section 3 (below 50, or far above it) as a "
           f"bug. They are the lesson of exercise {number('coverage')}: an auxiliary task is judged by what it does to the primary task, "
           "and this one's labels are too few to judge its own outputs.")]
    if base is not None:
        out.append(f"- **One run is not a result.** One run's test AUC interval is "
                   f"{round(100 * base.auc[2], 1) - round(100 * base.auc[1], 1):.0f} points wide (the quick recipe, "
                   f"seed 0: {ci(base.auc)}), because the test split holds {lab.test_split_size(tables)['patients']} "
                   "patients. The solutions compare runs paired, on the same images, and quote the spread over seeds; "
                   "ask students to do the same before they call a difference real.")
    reading = [str(number(e.key)) for e in EXERCISES if e.chapter == "lab" and not e.commands]
    root = repo_root(root)
    counts = {p: len(training_runs(load_profile(p, root), root)) for p in ("quick", "lab")}
    fields = {"reading": ", ".join(reading[:-1]) + " and " + reading[-1], "quick_runs": counts["quick"],
              "lab_runs": counts["lab"] - counts["quick"], "lab_minutes": LAB_BUILD_MINUTES}
    return "\n".join(out + [p.format(**fields) for p in STATIC_PITFALLS]) + "\n"


# Measured: `make book PROFILE=lab` from scratch on two CPU cores (README, "Timings")
LAB_BUILD_MINUTES = 41


def smaller_share_box(fraction: float = 0.05, root: str | Path | None = None) -> str:
    """The lab's "Try it" on the learning curve: add a smaller share to the lab profile. The subsets' sizes are
    counted with `ladnn.data.train_subset` on D0 (said so, and left out, when the data are not here)."""
    from ladnn.data import DataError, load_table, train_subset

    root = repo_root(root)
    prof = load_profile("lab", root)
    seeds, shares = prof["lab"]["seeds"], prof["lab"]["fractions"]
    counts = {p: len(training_runs(load_profile(p, root), root)) for p in ("quick", "lab")}
    new = f"[{', '.join(f'{x:g}' for x in sorted([fraction, *shares]))}]"
    out = (f"Add a smaller share to the lab: in `profiles/lab.yaml`, change `fractions: [{', '.join(f'{x:g}' for x in shares)}]` "
           f"to `fractions: {new}` and run `make book PROFILE=lab`. From scratch that build took about "
           f"{LAB_BUILD_MINUTES} minutes on two CPU cores (the README's measurement: the quick profile's {counts['quick']} "
           f"runs and the lab's {counts['lab'] - counts['quick']}, then the notebooks); a build that finds the lab's "
           f"earlier runs in `runs/lab` trains only the {2 * len(seeds)} new ones (two methods, {len(seeds)} seeds) "
           "before the notebooks run again.")
    try:
        d0 = load_table("D0")
    except DataError:
        sizes = None
    else:
        train = d0[d0["split"] == "train"]
        sizes = [(len(x), int(x["covid"].sum())) for x in (train_subset(train, fraction, s) for s in seeds)]
    if sizes:
        small = min(sizes)
        out += (f" Look at the table's \"images\" column first: at {fraction:.0%} of the patients the {len(seeds)} "
                f"seeds keep {min(n for n, _ in sizes)} to {max(n for n, _ in sizes)} training images, the smallest "
                f"with {small[1]} COVID-19 images against {small[0] - small[1]} others.")
    else:
        out += " Look at the table's \"images\" column first (this page was built without the data to count them)."
    out += (f" Then ask whether the paired interval at {fraction:.0%} is narrower or wider than at {min(shares):.0%}, "
            "and why.")
    return f"```{{admonition}} Try it\n:class: tip\n{out}\n```\n"


# the pitfalls that need no data (counts filled in from the profiles; measured times are the README's, "Timings")
STATIC_PITFALLS = [
    ("- **The numbers move in the third decimal.** The runs fine-tune the top three blocks on cached activations; "
    "another processor, another number of CPU threads or a GPU sums floating-point numbers in another order. A student's "
    "AUC may differ from the solution's by a few tenths of a point; a larger difference means another configuration "
    "(compare `runs/try/NAME/config.json` with `--dry-run`)."),
    ("- **The first run on a fresh clone is slower:** it caches the frozen layers' activations of every image, which "
     "every later run of the recipe reuses (about 25 s on two cores)."),
    ("- **The lab's grid is not retrained in class.** The lab profile's build (its {lab_runs} runs with the quick "
    "profile's {quick_runs}, then the notebooks) took {lab_minutes} minutes on two cores (`make book PROFILE=lab`). The class book "
    "and the quick book show the lab's committed results, and the lab says so at its top; the exercises that need them "
    "({reading}) read those."),
    ("- **Not every setting combines.** The baseline has one task, so `--method baseline --task-weighting mgda` is an "
    "error, which names the field; the gradient diagnostics (`--grad-diagnostics`) make each epoch about five times "
    "slower."),
]
