"""Depthwise causal (or anti-causal) conv1d: the `causal_conv1d` CUDA kernel when it imports, else PyTorch.

Mamba's short convolution: out[:, c, t] = act(bias[c] + Σ_k weight[c, k] · x[:, c, t − (w−1) + k]).
`reverse=True` is the anti-causal twin, equal to flip(conv(flip(x))), which Vim's backward direction
needs; the PyTorch path computes it directly (right padding, mirrored taps) with no flipped copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # optional CUDA kernel (pip install causal-conv1d)
    from causal_conv1d import causal_conv1d_fn as _cuda_causal_conv1d
except ImportError:  # pragma: no cover - depends on the environment
    _cuda_causal_conv1d = None

_ACTIVATIONS = (None, "silu", "swish")


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = "silu",
    reverse: bool = False,
) -> Tensor:
    """Depthwise causal conv over the last axis: x (b, d, l), weight (d, w), bias (d,) -> (b, d, l).

    `activation` is None or "silu"/"swish"; `reverse=True` makes it anti-causal (looks at t..t+w−1).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"expected x (b, d, l) and weight (d, w); got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if _use_cuda_kernel(x):
        if reverse:
            return _cuda_causal_conv1d(x.flip(-1), weight, bias, activation=activation).flip(-1)
        return _cuda_causal_conv1d(x, weight, bias, activation=activation)
    width = weight.shape[1]
    if reverse:  # out[t] = Σ_k w[k] x[t + (w−1) − k]: pad on the right, mirror the taps.
        padded, taps = F.pad(x, (0, width - 1)), weight.flip(-1)
    else:
        padded, taps = F.pad(x, (width - 1, 0)), weight
    out = F.conv1d(
        padded, taps.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype), groups=x.shape[1]
    )
    return F.silu(out) if activation is not None else out


def _use_cuda_kernel(x: Tensor) -> bool:
    """The CUDA kernel runs eagerly on CUDA tensors; tracing/export always takes the portable path."""
    if _cuda_causal_conv1d is None or not x.is_cuda:
        return False
    return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())
