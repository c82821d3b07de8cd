"""The weighted BCE of Rethinking-PAR (CEL_Sigmoid with sample_weight) that MambaPAR trains with.

With r_j the positive ratio of attribute j on the training split, a positive label weighs
exp(1 - r_j) and a negative one exp(r_j), so rare positives count more; unknown labels (> 1) weigh
0. The loss is the weighted per-element BCE-with-logits summed over attributes, averaged over the
batch (Rethinking-PAR's `loss_m.sum(1).mean()`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class WeightedBCELoss(nn.Module):
    """forward(logits, targets) -> scalar batch loss; targets are 0 / 1 / >1 (unknown), shape (B, A)."""

    pos_ratio: torch.Tensor

    def __init__(self, pos_ratio: Sequence[float] | np.ndarray | torch.Tensor) -> None:
        super().__init__()
        ratio = torch.as_tensor(np.asarray(pos_ratio, dtype=np.float32))
        if ratio.ndim != 1 or bool(((ratio < 0) | (ratio > 1)).any()):
            raise ValueError(f"pos_ratio must be a vector of fractions in [0, 1], got {ratio.tolist()}")
        self.register_buffer("pos_ratio", ratio)

    def weights(self, targets: torch.Tensor) -> torch.Tensor:
        """Per-element weights for a batch of targets."""
        ratio = self.pos_ratio.to(device=targets.device, dtype=torch.float32)
        w = torch.where(targets == 1, torch.exp(1 - ratio), torch.exp(ratio))
        return torch.where(targets > 1, torch.zeros_like(w), w)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.shape != targets.shape or logits.shape[-1] != self.pos_ratio.numel():
            raise ValueError(
                f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must match and have "
                f"{self.pos_ratio.numel()} attributes"
            )
        targets = targets.float()
        bce = F.binary_cross_entropy_with_logits(logits.float(), targets.clamp(max=1), reduction="none")
        return (bce * self.weights(targets)).sum(dim=1).mean()
