"""Residual add + RMSNorm over the channels of channel-major x (b, d, l): the step between two Vim blocks."""

from __future__ import annotations

import torch
from torch import Tensor

from partool.ops import kernels
from partool.ops.backends import kernel_path_active
from partool.ops.kernel_abi import io_dtype


def add_rms_norm(
    x: Tensor, residual: Tensor | None, weight: Tensor, eps: float, return_residual: bool = True
) -> tuple[Tensor, Tensor | None]:
    """r = residual + x (float32; r = x without a residual), out = r / rms_d(r) · weight in x's dtype
    (float32 for a dtype the kernels lack). Returns (out, r), r None unless `return_residual`.

    One kernel launch on an active kernel backend (`kernel_path_active`), where PyTorch runs ~10 ops
    (casts, add, square, mean, rsqrt, products); the same function in PyTorch otherwise."""
    if kernel_path_active(x, weight):
        return kernels.add_rms_norm(x, residual, weight, eps, return_residual)
    r = x.float() if residual is None else residual.float() + x.float()
    out = r * torch.rsqrt(r.pow(2).mean(1, keepdim=True) + eps) * weight.float()[:, None]
    return out.to(io_dtype(x)), r if return_residual else None
