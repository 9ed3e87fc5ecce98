"""The lesion-attention loss (paper Section 2.2; the rule of the paper's released code)."""
from __future__ import annotations

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


def lesion_attention_loss(logits: torch.Tensor, y: torch.Tensor, known: torch.Tensor | None = None,
                          covid_weight: float = PAPER_COVID_WEIGHT, rule: str = "any_lesion",
                          reduction: str = "mean") -> torch.Tensor:
    """The per-image terms  w * BCE(COVID)  +  m_i * sum_k BCE(lesion_k)  (m_i: the lesion mask), summed over the
    batch and divided by N x 6 (`mean`: the paper code's `BCELoss` mean over every entry) or by N (`per_image`).
    With one logit column (the baseline) only the COVID term is used, unweighted, and both reductions agree."""
    y = y.to(logits.dtype)
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0])
    if known is None:
        known = torch.ones(len(y), dtype=torch.bool, device=y.device)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    m = lesion_mask(y, known, rule).to(bce.dtype)
    per_image = covid_weight * bce[:, 0] + m * bce[:, 1:].sum(axis=1)
    if reduction == "mean":
        return per_image.sum() / bce.numel()
    if reduction == "per_image":
        return per_image.mean()
    raise ValueError(f"unknown loss reduction {reduction!r}")
