"""WeightedBCELoss against values computed by hand from the formula."""

from __future__ import annotations

import math

import pytest
import torch

from partool.train.losses import WeightedBCELoss


def _bce(logit: float, target: int) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_two_by_two_hand_computed() -> None:
    ratio = [0.25, 0.5]
    loss = WeightedBCELoss(ratio)
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # the 2 is unknown: weight 0
    row0 = _bce(0.0, 1) * math.exp(1 - 0.25) + _bce(2.0, 0) * math.exp(0.5)
    row1 = _bce(-1.0, 0) * math.exp(0.25)
    # summed over attributes, averaged over the batch; by hand: (0.693147·2.117000 + 2.126928·1.648721
    # + 0.313262·1.284025) / 2 = 2.688170
    assert loss(logits, targets).item() == pytest.approx(2.688170, abs=1e-5)
    assert loss(logits, targets).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_weights_and_unknown_gets_no_gradient() -> None:
    loss = WeightedBCELoss([0.1, 0.9])
    targets = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    w = loss.weights(targets)
    torch.testing.assert_close(
        w, torch.tensor([[math.exp(0.9), math.exp(0.1)], [math.exp(0.1), 0.0]]), rtol=1e-6, atol=0.0
    )
    logits = torch.zeros(2, 2, requires_grad=True)
    loss(logits, targets).backward()
    assert logits.grad is not None
    assert logits.grad[1, 1].item() == 0.0
    # d/dz of w * BCE at z = 0 is w * (sigmoid(0) - y) / batch
    assert logits.grad[0, 0].item() == pytest.approx(math.exp(0.9) * (0.5 - 1) / 2)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        WeightedBCELoss([1.5])
    with pytest.raises(ValueError):
        WeightedBCELoss([0.5, 0.5])(torch.zeros(2, 3), torch.zeros(2, 3))
