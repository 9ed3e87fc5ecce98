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
changes (a) without weight decay and (b) with it. Then check with one `torch.optim.Adam` step on a gradient $g$ and on
$6g$."""),
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
large it is beside it. The learning curve at 100% shows no detectable effect of the lesion task on the test AUC. How
can both be true? (The gradient diagnostics need one run with six extra backward passes a step: the table comes from
the lab's results.)"""),
    Exercise("uncertainty", "lab", "What uncertainty weighting learns", 10, """\
Uncertainty weighting starts both tasks at weight 1 and learns $e^{-s_t}$. Predict which task ends with the larger
weight after five epochs, and whether the ratio comes near the paper's 5 to 1. Then train it:""",
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
    d = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    d.pop("out", None)
    return json.dumps(d, sort_keys=True)


@dataclass
class Found:
    """The run a solution reads: its test AUC with its 95% interval (whole test patients resampled), where it came
    from, and its training history."""
    auc: tuple[float, float, float]
    where: str
    history: pd.DataFrame


def find_run(cfg: Config, runs_dir: str | Path, tables: dict | None = None) -> Found | None:
    """This build's run with configuration `cfg` (matrix, ablations or lab), else the lab's committed run with it,
    else None."""
    want = _key(cfg)
    for folder in run_dirs(runs_dir).values():
        for r in scan_runs(folder)[0]:
            if _key(r.config) == want:
                m = r.metrics
                return Found((m.covid.auc, *m.covid_ci95.auc), f"this build's run `{shown_path(r.path)}`", r.history)
    tables = tables if tables is not None else lab.committed()
    runs = tables["runs"]
    hit = runs[[_key(json.loads(c)) == want for c in runs["config"]]]
    if hit.empty:
        return None
    y, P, g, _ = lab.seed_matrix(tables, hit.iloc[:1])
    name = hit["run"].iloc[0]
    return Found(runs_auc(y, P, g, lab.N_BOOT), f"the lab's committed run `{name}` (the same configuration)",
                 tables["history"][tables["history"]["run"] == name])


def shown_path(path: Path) -> str:
    """A run folder as the book names it: from its `runs/` folder on (the build passes absolute paths)."""
    parts = Path(path).parts
    return "/".join(parts[len(parts) - 1 - parts[::-1].index("runs"):]) if "runs" in parts else str(path)


def seed_range(tables: dict, method: str, fraction: float = 1.0, weighting: str = "fixed") -> tuple[float, float, int]:
    """The lowest and highest test AUC over the lab's seeds of one setting, and how many seeds."""
    runs = tables["runs"]
    at = runs[(runs["method"] == method) & (runs["train_fraction"] == fraction) & (runs["task_weighting"] == weighting)
              & ~runs["grad_diagnostics"].astype(bool)]
    aucs = []
    for _, row in at.iterrows():
        y, P, g, _ = lab.seed_matrix(tables, at[at["run"] == row["run"]])
        aucs.append(runs_auc(y, P, g, 10)[0])
    return min(aucs), max(aucs), len(aucs)


def class_runs(root: str | Path | None = None) -> dict[str, Config]:
    """Every command of the exercises with the configuration it trains (`command_config`)."""
    return {c: command_config(c, root) for e in EXERCISES for c in e.commands}


# ---------------------------------------------------------------- the solutions
def pts(x: float) -> str:
    return f"{100 * x:.1f}"


def ci(v: tuple[float, float, float]) -> str:
    return f"{pts(v[0])} [{pts(v[1])}, {pts(v[2])}]"


def mask_example(covid_weight: float = 5.0) -> tuple[pd.DataFrame, float]:
    """Exercise "mask": each term's weight in L for the four images, in 24ths (L = sum / 6N with N = 4; 0: not
    counted), and L itself, computed by the library's loss (`task_losses`, `paper_loss`) on logits of 0."""
    y = torch.tensor([[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    on = lesion_mask(y, torch.ones(4, dtype=torch.bool), "any_lesion").to(torch.float64)
    weights = torch.cat([torch.full((4, 1), float(covid_weight), dtype=torch.float64),
                         on[:, None].expand(4, 5)], dim=1)
    table = pd.DataFrame(weights.numpy(), columns=["COVID", *LESIONS],
                         index=["(a) non-COVID", "(b) COVID, no lesion named", "(c) COVID, GGO", "(d) COVID, GGO+Csld"])
    loss = float(paper_loss(task_losses(torch.zeros(4, 6), y), covid_weight))
    return table, loss


def adam_step(scale: float, weight_decay: float, seed: int = 0) -> torch.Tensor:
    """One Adam step (lr 2e-4, the quick recipe's) on a random parameter whose gradient is `scale` times a fixed g."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(1000, generator=gen))
    start = p.detach().clone()
    p.grad = scale * 1e-3 * torch.randn(1000, generator=gen)
    torch.optim.Adam([p], lr=2e-4, weight_decay=weight_decay).step()
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
    tr, va = d0[d0["split"] == "train"], d0[d0["split"] == "val"]
    on = int((tr[list(LESIONS)].sum(axis=1) > 0).sum())
    pos = int(tr["covid"].sum())
    counts = ", ".join(f"{k} {int(tr[k].sum())}" for k in LESIONS)
    empty = [k for k in LESIONS if int(va[k].sum()) == 0]
    return f"""\
{on} of the {len(tr)} training images ({on / len(tr):.0%}; {on / pos:.0%} of the {pos} COVID images) switch the
lesion terms on. Positive labels in the training split: {counts}; in the validation split:
{', '.join(f"{k} {int(va[k].sum())}" for k in LESIONS)}. A lesion with a handful of positives gives its output little
to learn, and {', '.join(empty) if empty else 'no lesion'} {'has' if len(empty) == 1 else 'have'} no positive in the
validation split, so nothing chosen on validation data could look at {'it' if len(empty) == 1 else 'them'}. The test
split is no richer, so those outputs' test AUCs (the lab's section 3) rest on a handful of images and mean little,
whether they land near 50 (a constant's score) or far from it. That is a lesson of its own: an auxiliary task is
judged by what it does to the primary task, and its own outputs may be impossible to evaluate."""


def _scale(runs_dir, tables, root) -> str:
    no = (adam_step(6, 0) - adam_step(1, 0)).abs().max().item()
    step = adam_step(1, 0).abs().max().item()
    wd = (adam_step(6, 5e-4) - adam_step(1, 5e-4)).abs().max().item()
    return f"""\
(a) Adam divides the step by the square root of its running mean of squared gradients, so a gradient six times as
large gives the same step: the largest difference between the two first steps is {no:.1e}, against steps of up to
{step:.1e} (Adam's $\\epsilon$ makes the small difference). (b) Adam's weight decay is added to the gradient before
that division, so next to a gradient six times as large it counts six times less: the two steps now differ by up to
{wd:.1e}{', and some coordinates move in opposite directions' if wd > step * 1.01 else ''}. This is why `ladnn` follows the paper's code (`loss_reduction: mean`) and keeps `per_image` as an
ablation: the Validity chapter measures what it does to the test AUC."""


def _run_line(key: str, command: str, runs_dir, tables, root) -> tuple[str, Found | None]:
    found = find_run(command_config(command, root), runs_dir, tables)
    if found is None:
        return (f"This build has no run of `{command}`; `make book PROFILE=class` trains it and shows its result "
                "here."), None
    return f"Test AUC {ci(found.auc)}, from {found.where}.", found


def _covid_weight(runs_dir, tables, root) -> str:
    line, found = _run_line("covid_weight", BY_KEY["covid_weight"].commands[0], runs_dir, tables, root)
    base = find_run(command_config("ladnn train --profile quick --out x", root), runs_dir, tables)
    lo, hi, n = seed_range(tables, "ladnn")
    out = f"With $w = 1$: {line}"
    if base is not None:
        out += f" The paper's $w = 5$, same seed: {ci(base.auc)}, from {base.where}."
    out += (f" Over the {n} seeds of the lab's committed runs the paper's weighting ranges from {100 * lo:.2f} to "
            f"{100 * hi:.2f}.")
    if found is not None and base is not None:
        d = found.auc[0] - base.auc[0]
        out += (f" The change, {100 * d:+.2f} points, is {'smaller' if abs(d) <= hi - lo else 'larger'} than that "
                f"range of {100 * (hi - lo):.2f} points")
        out += (", so one run cannot tell it from another seed." if abs(d) <= hi - lo else
                ", but one seed per setting is not a comparison: train seeds 1 and 2 too (`--seed 1`) and pair them.")
    out += f"""

Each run's interval is about {pts(base.auc[2] - base.auc[1]) if base else 'fifteen'} points wide: it resamples the
test patients, and {lab.test_split_size(tables)['patients']} patients leave that much room. Two runs scored on the same
images are compared paired, image by image, which is far narrower; the Validity chapter reads this ablation that way,
against the spread of the LA-DNN seeds."""
    return out


def _curve(runs_dir, tables, root) -> str:
    curve = lab.learning_curve(tables)
    best = curve.loc[curve["diff"].idxmax()]
    clear = curve[(curve["diff_lo"] > 0) | (curve["diff_hi"] < 0)]
    det = curve["detectable"]
    return f"""\
The paired advantage is largest at {best['share of training patients']:.0%} of the patients:
{100 * best['diff']:+.1f} points [{100 * best['diff_lo']:+.1f}, {100 * best['diff_hi']:+.1f}].
{'No interval lies clear of zero.' if clear.empty else 'Clear of zero: ' + ', '.join(f'{s:.0%}' for s in clear['share of training patients']) + '.'}
The detectable difference runs from {100 * det.min():.1f} to {100 * det.max():.1f} points: with these seeds and test
patients a true difference of one point would go unseen at every share. "Sample-efficient" needs more seeds and more
test patients than this dataset has, not a steeper curve."""


def _quarter(runs_dir, tables, root) -> str:
    cmds = BY_KEY["quarter"].commands
    lines, found = [], []
    for method, c in zip(("baseline", "LA-DNN"), cmds):
        line, f = _run_line("quarter", c, runs_dir, tables, root)
        lines.append(f"- {method}: {line}")
        found.append(f)
    out = "\n".join(lines)
    if all(found):
        out += f"\n\nLA-DNN minus baseline, seed 0: {100 * (found[1].auc[0] - found[0].auc[0]):+.1f} points."
    ranges = [seed_range(tables, m, 0.25) for m in ("baseline", "ladnn")]
    out += f"""

Over the {ranges[0][2]} seeds of the lab's committed runs at 25% the baseline ranges from {pts(ranges[0][0])} to {pts(ranges[0][1])} and
LA-DNN from {pts(ranges[1][0])} to {pts(ranges[1][1])}: a student's seed-0 pair is one draw from these. Each seed
draws other patients, so the seeds move the AUCs more than the method does; that is why the table pairs the methods
by seed."""
    return out


def _gradients(runs_dir, tables, root) -> str:
    g = lab.gradient_summary(tables)
    if g.empty:
        return "No run of these results recorded its gradients."
    s = g.set_index("term").loc["all five lesions"]
    return f"""\
The summed lesion gradient conflicts with the COVID gradient in {s['conflicting steps']:.0%} of the steps, but its
median cosine is {s['median cosine']:.3f} and its norm {s['median norm ratio']:.2f} times the COVID gradient's. A
cosine that near 0 is what two unrelated directions look like in millions of dimensions: the lesion gradient mostly
moves the shared layers sideways to the COVID task, so it neither helps nor harms it much, and it is small. "Conflict"
by the sign of the cosine says nothing about its size: count conflicts and look at the cosine's magnitude and the
norm ratio together."""


def _uncertainty(runs_dir, tables, root) -> str:
    line, found = _run_line("uncertainty", BY_KEY["uncertainty"].commands[0], runs_dir, tables, root)
    out = line
    if found is not None and "weight_COVID" in found.history:
        last = found.history.iloc[-1]
        out += (f" After the last epoch the learned weights are {last['weight_COVID']:.3f} (COVID) and "
                f"{last['weight_lesions']:.3f} (lesions), a ratio of {last['weight_COVID'] / last['weight_lesions']:.2f}"
                " to 1.")
    w = lab.uncertainty_weights(tables)
    if len(w):
        sentence = lab.uncertainty_sentence(w)
        out += f" Mean over the lab's seeds: {sentence[0].lower()}{sentence[1:]}"
    cfg = command_config(BY_KEY["uncertainty"].commands[0], root)
    steps = cfg.epochs * math.ceil(lab.committed()["runs"]["train_images"].max() / cfg.batch_size)
    out += f"""

If you predicted that the weights move far, or that the COVID task ends with the smaller weight, look at the step
size: Adam moves each log-variance $s_t$ by at most about its learning rate ({cfg.lr:g}) a step, and a run of
{cfg.epochs} epochs of {cfg.batch_size}-image batches takes about {steps} steps, so $s_t$ can move about
{steps * cfg.lr:.3f} at most. The method trains with nearly equal weights: its test AUC says how an equal weighting
does here, not what a learned weighting can do. A longer schedule, or a larger learning rate for $s_t$, would be
needed to see it learn."""
    return out


def _mgda(runs_dir, tables, root) -> str:
    comb = lab.combination_table(tables).set_index("key")
    if "mgda" not in comb.index:
        return "These results have no MGDA run."
    row = comb.loc["mgda"]
    return f"""\
The shortest vector in the hull of two gradients is never longer than the shorter of them, and shorter still the more
they conflict: MGDA moves the shared layers less than either task alone would. Its mean test AUC is {ci(row['auc'])}
over {int(row['seeds'])} seeds, a paired difference from the fixed weights of {100 * row['diff']:+.1f} points
[{100 * row['diff_lo']:+.1f}, {100 * row['diff_hi']:+.1f}]. If you predicted "below", the data disagree: here the
two gradients are nearly orthogonal (section 2), so the step is a blend of both, and the head, which gets each task's
own gradient, does much of the learning on features that were already good. The extreme case is worth a thought:
with no lesion images at all (`--lesion-mask none`) the lesion gradient is zero at every step, the hull contains 0,
and MGDA leaves the shared layers where they are."""


SOLUTIONS = {"mask": _mask, "coverage": _coverage, "scale": _scale, "covid_weight": _covid_weight, "curve": _curve,
             "quarter": _quarter, "gradients": _gradients, "uncertainty": _uncertainty, "mgda": _mgda}


# ---------------------------------------------------------------- the page
def box(key: str, runs_dir: str | Path = "runs/quick", tables: dict | None = None, root: str | Path | None = None) -> str:
    """Exercise `key` as the page shows it: an admonition with its question, its commands and their time, and the
    worked solution folded below it."""
    e = BY_KEY[key]
    body = e.question
    if e.commands:
        body += ("\n\n```bash\n" + "\n".join(e.commands) + "\n```\n\n"
                 + f"{'They take' if len(e.commands) > 1 else 'It takes'} {e.run_time}.")
    return (f"`````{{admonition}} Exercise {number(key)}: {e.title} ({e.minutes} min)\n:class: tip exercise\n{body}\n\n"
            f"````{{dropdown}} Solution\n{solution(key, runs_dir, tables, root)}\n````\n`````\n")


def chapter_exercises(chapter: str, runs_dir: str | Path = "runs/quick", root: str | Path | None = None) -> str:
    """Every exercise of a chapter, one after another (the multi-task chapter includes this file)."""
    tables = lab.load(runs_dir)[0]
    return "\n".join(box(e.key, runs_dir, tables, root) for e in EXERCISES if e.chapter == chapter)


def minutes(chapter: str | None = None) -> int:
    """The class minutes of the exercises (of one chapter)."""
    return sum(e.minutes for e in EXERCISES if chapter in (None, e.chapter))


def run_times(runs_dir: str | Path) -> pd.DataFrame:
    """The training seconds of each of this build's runs that an exercise's command trains (metrics.json `seconds`),
    with the exercise that asks for it."""
    rows = []
    wanted = {_key(cfg): c for c, cfg in class_runs().items()}
    for folder in run_dirs(runs_dir).values():
        for r in scan_runs(folder)[0]:
            if (c := wanted.get(_key(r.config))) is not None:
                e = next(e for e in EXERCISES if c in e.commands)
                rows.append({"exercise": number(e.key), "command": c, "seconds": r.metrics.run.seconds})
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
    curve = lab.learning_curve(tables)
    comb = lab.combination_table(tables)
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
    first = tables["runs"][tables["runs"]["method"] == "ladnn"]["run"].iloc[0]
    labelled = tables["predictions"][tables["predictions"]["run"] == first]
    labelled = labelled[labelled[list(PRED.y_lesions)].sum(axis=1) > 0]
    few = [k for k, c in zip(LESIONS, PRED.y_lesions) if min(labelled[c].sum(), len(labelled) - labelled[c].sum()) < 10]
    if few:
        out.append(f"- The lesion outputs for {', '.join(few)} cannot be judged here: among the {len(labelled)} test "
                   "images with a lesion label, each has fewer than 10 images of one class. An auxiliary task is judged "
                   "by the primary task, and its own outputs need not be useful, or even measurable.")
    return "\n".join(out)


def times_markdown(runs_dir: str | Path, root: str | Path | None = None) -> str:
    """The teacher's page: the plan of the class and the training time of each exercise run this build holds."""
    steps = plan()
    lines = ["| step | minutes |", "|---|---|"] + [f"| {r.step} | {r.minutes} |" for r in steps.itertuples()]
    lines.append(f"| **the whole class** | **{steps['minutes'].sum()}** |")
    out = "\n".join(lines) + "\n\n"
    t = run_times(runs_dir)
    wanted = list(class_runs(root))
    if t.empty:
        return out + (f"This build trained none of the exercises' {len(wanted)} runs; `make book PROFILE=class` "
                      "trains them all.\n")
    out += (f"This build trained {len(t)} of the exercises' {len(wanted)} runs. The seconds each took here, training "
            "and scoring (`metrics.json`), with two runs side by side on one CPU thread each; a student's single run "
            "with two threads took about the time its exercise states:\n\n| exercise | command | seconds |\n"
            "|---|---|---|\n")
    out += "\n".join(f"| {r.exercise} | `{r.command}` | {r.seconds:.0f} |" for r in t.itertuples()) + "\n"
    return out


def write_pages(folder: str | Path, runs_dir: str | Path, root: str | Path | None = None) -> list[Path]:
    """The generated parts of the class's static pages (book/mtl.md and book/class.md include them)."""
    folder = Path(folder)
    files = {"mtl_time.md": time_sentence("mtl") + "\n",
             "mtl_exercises.md": chapter_exercises("mtl", runs_dir, root),
             "class_times.md": times_markdown(runs_dir, root),
             "class_pitfalls.md": pitfalls(runs_dir, root)}
    for name, text in files.items():
        (folder / name).write_text(text)
    return [folder / n for n in files]


def pitfalls(runs_dir: str | Path, root: str | Path | None = None) -> str:
    """The teacher's page's first pitfalls, read from the data and the runs: how few positives the rare lesions
    have, and how wide one run's interval is."""
    from ladnn.data import load_table

    d0 = load_table("D0")
    by = {s: d0[d0["split"] == s] for s in ("train", "val", "test")}
    rare = [k for k in LESIONS if int(by["val"][k].sum()) == 0]
    no_test = [k for k in LESIONS if int(by["test"][k].sum()) == 0]
    counts = ", ".join(f"{k} {int(by['train'][k].sum())}" for k in rare)
    tables = lab.load(runs_dir)[0]
    base = find_run(command_config("ladnn train --profile quick --out x", root), runs_dir, tables)
    labelled = by["test"][by["test"][list(LESIONS)].sum(axis=1) > 0]
    n = len(labelled)
    means = lab.combination_table(tables).set_index("key")[list(LESIONS)].mean()
    per = ", ".join(f"{k} {int(labelled[k].sum())} of {n}" + ("" if pd.isna(means[k]) else f" (AUC {pts(means[k])})")
                    for k in LESIONS)
    out = [f"- **The lesion AUCs mean little.** {', '.join(rare)} have few positive training images ({counts}) and none "
           "in the validation split (exercise 2 counts them). The lab scores each lesion on the test images that "
           f"carry a lesion label; positives there, with the lab's mean AUC over the ways of combining the tasks: "
           f"{per}. An AUC against three or four images of one class is mostly noise, near 50 or far from it"
           + (f", and {', '.join(no_test)} {'has' if len(no_test) == 1 else 'have'} no positive test image at all"
              if no_test else "")
           + ". Students read this as a bug. It is the lesson of exercise 2: an auxiliary task is judged by what it "
           "does to the primary task, and this one's labels are too few to judge its own outputs."]
    if base is not None:
        out.append(f"- **One run is not a result.** One run's test AUC interval is {pts(base.auc[2] - base.auc[1])} "
                   f"points wide (the quick recipe, seed 0: {ci(base.auc)}), because the test split holds "
                   f"{lab.test_split_size(tables)['patients']} patients. The solutions compare runs paired, on the "
                   "same images, and quote the spread of the lab's three seeds; ask students to do the same before "
                   "they call a difference real.")
    return "\n".join(out) + "\n"
