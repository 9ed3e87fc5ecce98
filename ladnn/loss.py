"""The lesion-attention loss (paper Section 2.2; the rule of the paper's released code), written as a weighted sum
of one loss per task so that other ways of combining the tasks (ladnn.mtl) start from the same six terms."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ladnn.config import PAPER_COVID_WEIGHT


def lesion_mask(y: torch.Tensor, known: torch.Tensor, rule: str) -> torch.Tensor:
    """Which samples get the five lesion terms.
    any_lesion: at least one lesion label is 1 (the paper code's rule); positives: COVID-positive images whose lesion
    labels are known (an annotated positive with no lesion teaches "no lesion"); none: no lesion term at all."""
    if rule == "any_lesion":
        return y[:, 1:].sum(axis=1) > 0
    if rule == "positives":
        return (y[:, 0] > 0) & known.bool()
    if rule == "none":
        return torch.zeros(len(y), dtype=torch.bool, device=y.device)
    raise ValueError(f"unknown lesion mask rule {rule!r}")


def task_losses(logits: torch.Tensor, y: torch.Tensor, known: torch.Tensor | None = None,
                rule: str = "any_lesion") -> torch.Tensor:
    """One loss per output column, each averaged over the N images of the batch:
    L_0 = (1/N) sum_i BCE(COVID_i) and L_k = (1/N) sum_i m_i BCE(lesion_ik) (m_i: the lesion mask). With one logit
    column (the baseline) only L_0."""
    y = y.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, y[:, :logits.shape[1]], reduction="none")
    if logits.shape[1] == 1:
        return bce.mean(0)
    if known is None:
        known = torch.ones(len(y), dtype=torch.bool, device=y.device)
    m = lesion_mask(y, known, rule).to(bce.dtype)
    return torch.cat([bce[:, :1].mean(0), (m[:, None] * bce[:, 1:]).mean(0)])


def task_weights(n_tasks: int, covid_weight: float = PAPER_COVID_WEIGHT, reduction: str = "mean") -> torch.Tensor:
    """The paper's fixed weights of the task losses: (w, 1, 1, 1, 1, 1), divided by 6 (`mean`: the paper code's
    `BCELoss` mean over the N x 6 entries) or not (`per_image`). The baseline's single term has weight 1."""
    if n_tasks == 1:
        return torch.ones(1)
    if reduction not in ("mean", "per_image"):
        raise ValueError(f"unknown loss reduction {reduction!r}")
    c = torch.tensor([covid_weight] + [1.0] * (n_tasks - 1))
    return c / n_tasks if reduction == "mean" else c


def paper_loss(losses: torch.Tensor, covid_weight: float = PAPER_COVID_WEIGHT, reduction: str = "mean") -> torch.Tensor:
    """The task losses (`task_losses`) weighted as the paper weighs them (`task_weights`): its loss of Section 2.2,
    (1/6N) sum_i [ w BCE(COVID_i) + m_i sum_k BCE(lesion_ik) ] (`mean`; `per_image` divides by N). With one task
    (the baseline) only the COVID term, unweighted, and both reductions agree. Training calls it on the losses of
    each batch (`ladnn.train.train_step`)."""
    return _weights_on(len(losses), covid_weight, reduction, losses.device, losses.dtype) @ losses


@functools.lru_cache(maxsize=16)
def _weights_on(n_tasks: int, covid_weight: float, reduction: str, device: torch.device, dtype: torch.dtype
                ) -> torch.Tensor:
    """`task_weights` on `device`, made once per device and setting (no host-to-device copy per training step)."""
    return task_weights(n_tasks, covid_weight, reduction).to(device, dtype)
