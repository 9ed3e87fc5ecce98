import math

import pytest
import torch

from ladnn.loss import lesion_mask, paper_loss, task_losses


def objective(z, y, known=None, covid_weight=5.0, rule="any_lesion", reduction="mean"):
    """What a training step computes of a batch: its task losses, weighted as the paper weighs them."""
    return paper_loss(task_losses(z, y, known, rule), covid_weight, reduction)


def bce(z, y):
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


Z = torch.tensor([[0.0, 1.0, -1.0, 2.0, 0.0, 0.0],   # positive with GGO: all six terms
                  [1.0, 0.5, 0.5, 0.5, 0.5, 0.5],    # positive, no lesion label: COVID term only
                  [-2.0, 3.0, 3.0, 3.0, 3.0, 3.0]])  # negative: COVID term only
Y = torch.tensor([[1.0, 1, 0, 0, 0, 0], [1.0, 0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0, 0]])
KNOWN = torch.tensor([True, True, False])


def test_paper_rule_by_hand():
    lesions0 = bce(1, 1) + bce(-1, 0) + bce(2, 0) + bce(0, 0) + bce(0, 0)
    total = 5 * bce(0, 1) + lesions0 + 5 * bce(1, 1) + 5 * bce(-2, 0)
    assert objective(Z, Y, KNOWN, reduction="per_image") == pytest.approx(total / 3, rel=1e-6)
    # the paper code's BCELoss averages over all N x 6 entries: the same sum, divided by 18
    assert objective(Z, Y, KNOWN) == pytest.approx(total / 18, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        objective(Z, Y, KNOWN, reduction="sum")


def test_weight_and_rules_are_parameters():
    lesions0 = bce(1, 1) + bce(-1, 0) + bce(2, 0) + bce(0, 0) + bce(0, 0)
    lesions1 = 5 * bce(0.5, 0)
    covid = [bce(0, 1), bce(1, 1), bce(-2, 0)]
    assert objective(Z, Y, KNOWN, covid_weight=1.0, reduction="per_image") == pytest.approx((sum(covid) + lesions0) / 3, rel=1e-6)
    assert objective(Z, Y, KNOWN, rule="none", reduction="per_image") == pytest.approx(5 * sum(covid) / 3, rel=1e-6)
    assert objective(Z, Y, KNOWN, rule="positives", reduction="per_image") == pytest.approx(
        (5 * sum(covid) + lesions0 + lesions1) / 3, rel=1e-6)


def test_masks():
    assert lesion_mask(Y, KNOWN, "any_lesion").tolist() == [True, False, False]
    assert lesion_mask(Y, KNOWN, "positives").tolist() == [True, True, False]
    assert lesion_mask(Y, KNOWN, "none").tolist() == [False, False, False]
    with pytest.raises(ValueError):
        lesion_mask(Y, KNOWN, "everything")


def test_baseline_is_plain_bce():
    want = (bce(0, 1) + bce(1, 1) + bce(-2, 0)) / 3
    assert objective(Z[:, :1], Y[:, :1]) == pytest.approx(want, rel=1e-6)
    assert objective(Z[:, :1], Y[:, :1], reduction="per_image") == pytest.approx(want, rel=1e-6)


def test_gradient_reaches_lesion_logits_only_when_masked_in():
    z = Z.clone().requires_grad_(True)
    objective(z, Y, KNOWN).backward()
    assert z.grad[0, 1:].abs().sum() > 0 and z.grad[1:, 1:].abs().sum() == 0
