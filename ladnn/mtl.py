"""Ways of combining the task losses into one update, and what the tasks' gradients do on the shared layers.

The paper (Section 2.2) adds its six task losses with fixed weights (`ladnn.loss.task_weights`: COVID x5). The
multi-task lab (`Config.task_weighting`) compares that with
- uncertainty weighting (Kendall, Gal and Cipolla, "Multi-task learning using uncertainty to weigh losses for scene
  geometry and semantics", CVPR 2018): one learned log-variance s_t per task and the loss
  sum_t exp(-s_t) L_t + s_t / 2 (their eq. 10 for classification terms, with s_t = log sigma_t^2);
- Jacobian descent (torchjd, Quinton and Rey, 2024): the gradient of each task loss on the shared layers is one row
  of a matrix that an aggregator (UPGrad, MGDA, PCGrad, CAGrad, Nash-MTL) turns into the update; the head's rows
  get their own task's gradient.

These methods weigh the paper's two tasks (`combined_tasks`): the COVID term and the multi-label lesion task (the
sum of the five masked lesion terms), without the paper's weights. Two tasks, not six, because the paper frames the
lesions as one auxiliary task, and because every task costs one more backward pass through the shared layers.

`GradientProbe` measures, on the shared layers, the cosine between the gradient of each lesion term and that of the
COVID term, and the ratio of their norms, with the terms weighted as in the paper's loss (`Config.grad_diagnostics`).
"""
from __future__ import annotations

import torch
from torch import nn

from ladnn.config import LESIONS, Config
from ladnn.loss import paper_loss, task_weights

JD_AGGREGATORS = ("upgrad", "mgda", "pcgrad", "cagrad", "nashmtl")
CAGRAD_C = 0.5  # CAGrad's c, the value of its paper's experiments (Liu et al., NeurIPS 2021)


def split_head(net: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The shared body and the head of a trainable network: `LADNN` (backbone, head), the `nn.Sequential` upper
    part of `ladnn.models.split_model` (its last module is the head), or any other module taken as a head alone."""
    if hasattr(net, "backbone") and hasattr(net, "head"):
        return net.backbone, net.head
    if isinstance(net, nn.Sequential) and len(net) > 1:
        return net[:-1], net[-1]
    return nn.Identity(), net


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


class UncertaintyWeighting(nn.Module):
    """Kendall et al. (2018), eq. 10: sum_t exp(-s_t) L_t + s_t / 2, with a learned s_t = log sigma_t^2 per task,
    starting at 0 (every weight 1)."""

    def __init__(self, n_tasks: int):
        super().__init__()
        self.log_var = nn.Parameter(torch.zeros(n_tasks))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return (torch.exp(-self.log_var) * losses + self.log_var / 2).sum()

    def weights(self) -> torch.Tensor:
        return torch.exp(-self.log_var.detach())


def aggregator(name: str, n_tasks: int):
    """A torchjd aggregator by name (`JD_AGGREGATORS`), with its defaults (CAGrad: c = `CAGRAD_C`)."""
    from torchjd import aggregation as A

    make = {"upgrad": A.UPGrad, "mgda": A.MGDA, "pcgrad": A.PCGrad, "cagrad": lambda: A.CAGrad(c=CAGRAD_C),
            "nashmtl": lambda: A.NashMTL(n_tasks=n_tasks)}
    if name not in make:
        raise ValueError(f"unknown aggregator {name!r}; known: {', '.join(make)}")
    return make[name]()


class TaskCombiner:
    """One backward pass that turns the task losses into gradients, by `cfg.task_weighting`. `parameters()` are
    the combiner's own trainable parameters (uncertainty weighting's s_t), for the optimiser."""

    def __init__(self, cfg: Config, net: nn.Module):
        self.cfg, self.kind = cfg, cfg.task_weighting
        self.n = len(cfg.tasks)
        self.body, self.head = split_head(net)
        self.uncertainty = UncertaintyWeighting(2) if self.kind == "uncertainty" else None
        self.aggregator = aggregator(self.kind, 2) if self.kind in JD_AGGREGATORS else None

    def parameters(self) -> list[nn.Parameter]:
        return list(self.uncertainty.parameters()) if self.uncertainty is not None else []

    def to(self, device) -> TaskCombiner:
        if self.uncertainty is not None:
            self.uncertainty.to(device)
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(shared features, logits) of a batch."""
        features = self.body(x)
        return features, self.head(features)

    def backward(self, losses: torch.Tensor, features: torch.Tensor) -> None:
        """Gradients into `.grad` of the network (and the combiner's own parameters)."""
        if self.aggregator is not None:
            from torchjd.autojac import jac_to_grad, mtl_backward

            shared, head = trainable(self.body), trainable(self.head)
            # the two tasks share the head's graph: keep it for the second; one task at a time (faster on the CPU)
            mtl_backward(list(combined_tasks(losses)), features=features, tasks_params=[head, head],
                         shared_params=shared, retain_graph=True, parallel_chunk_size=1)
            jac_to_grad(shared, self.aggregator)
        elif self.uncertainty is not None:
            self.uncertainty(combined_tasks(losses)).backward()
        else:
            paper_loss(losses, self.cfg.covid_weight, self.cfg.loss_reduction).backward()

    def weights(self) -> dict[str, float]:
        """The current weight of each task where the method has one (uncertainty weighting), for the history."""
        if self.uncertainty is None:
            return {}
        return {f"weight_{t}": float(w) for t, w in zip(("COVID", "lesions"), self.uncertainty.weights())}


def combined_tasks(losses: torch.Tensor) -> torch.Tensor:
    """The six task losses as the paper's two tasks: [L_COVID, L_GGO + ... + L_InSepThi]."""
    return torch.stack([losses[0], losses[1:].sum()])


def task_gradients(losses: torch.Tensor, params: list[torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
    """T x P: the gradient of each weighted term scale_t x L_t on `params`, flattened (a parameter a term does not
    reach contributes zeros). The graph is kept for the training step's own backward pass."""
    rows = []
    for s, loss in zip(scale, losses):
        grads = torch.autograd.grad(s * loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)]))
    return torch.stack(rows)


def gradient_stats(G: torch.Tensor) -> list[dict]:
    """Rows of G: the COVID term's gradient, then one per lesion. For each lesion, and for their sum ("lesions"),
    the cosine with the COVID gradient (nan when the lesion gradient is zero: no image of the batch had the term)
    and the ratio of its norm to the COVID gradient's norm."""
    g0 = G[0]
    n0 = g0.norm()
    out = []
    for name, g in [*zip(LESIONS, G[1:]), ("lesions", G[1:].sum(0))]:
        n = g.norm()
        cos = float(g0 @ g / (n0 * n)) if n > 0 and n0 > 0 else float("nan")
        out.append({"task": name, "cosine": cos, "norm_ratio": float(n / n0) if n0 > 0 else float("nan")})
    return out


class GradientProbe:
    """Records `gradient_stats` of every training step on the shared layers' trainable parameters (the body of
    `split_head`), with the terms weighted as in the paper's loss (COVID x `covid_weight`)."""

    def __init__(self, cfg: Config, net: nn.Module):
        self.params = trainable(split_head(net)[0])
        self.scale = task_weights(len(cfg.tasks), cfg.covid_weight, "per_image")
        self.rows: list[dict] = []
        self.epoch, self.step = 0, 0

    def record(self, losses: torch.Tensor) -> None:
        self.step += 1
        if self.scale.device != losses.device or self.scale.dtype != losses.dtype:
            self.scale = self.scale.to(losses)  # once: no host-to-device copy per step
        G = task_gradients(losses, self.params, self.scale)
        self.rows += [{"epoch": self.epoch, "step": self.step, **r} for r in gradient_stats(G.float())]

    def epoch_summary(self) -> dict[str, float]:
        """The epoch's median cosine of the summed lesion gradient with the COVID one, and the share of its steps
        where they conflict (cosine < 0), for the history."""
        cos = torch.tensor([r["cosine"] for r in self.rows if r["epoch"] == self.epoch and r["task"] == "lesions"])
        cos = cos[~cos.isnan()]
        if not len(cos):
            return {"grad_cosine_lesions": float("nan"), "grad_conflict_lesions": float("nan")}
        return {"grad_cosine_lesions": float(cos.median()), "grad_conflict_lesions": float((cos < 0).float().mean())}
