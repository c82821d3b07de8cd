"""Depthwise causal (or anti-causal) conv1d: partool's kernels, the `causal_conv1d` CUDA kernel, or PyTorch.

Mamba's short convolution: out[:, c, t] = act(bias[c] + Σ_k weight[c, k] · x[:, c, t − (w−1) + k]).
`reverse=True` is the anti-causal twin, equal to flip(conv(flip(x))), which Vim's backward direction
needs; every path computes it directly (right padding, mirrored taps) with no flipped copies.
With a `cpu`/`cuda` scan backend in force the library's conv runs, forward and backward (`_KernelConv1d`):
its backward keeps only x, where PyTorch's keeps the padded copy and the pre-activation as well.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from partool.ops import kernel_abi, kernels
from partool.ops.backends import resolve_backend

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
    if _use_library_kernel(x, weight):
        return _KernelConv1d.apply(x, weight, bias, activation is not None, reverse)
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


def _use_library_kernel(x: Tensor, weight: Tensor) -> bool:
    """partool's conv kernels run eagerly, for the dtypes and widths they take, when a `cpu`/`cuda` scan
    backend is in force for x's device (training included: they have a backward)."""
    if x.dtype not in kernel_abi.DTYPES or weight.shape[1] > kernel_abi.MAX_CONV_WIDTH or x.numel() == 0:
        return False
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or x.device.type not in ("cpu", "cuda"):
        return False
    return resolve_backend(None, x.device, needs_grad=torch.is_grad_enabled()).name in ("cpu", "cuda")


class _KernelConv1d(torch.autograd.Function):
    """The library's conv1d (+ SiLU) with its backward kernel; saves x and the weights only."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu, reverse):
        ctx.flags = (silu, reverse)
        ctx.save_for_backward(x, weight, bias)
        return kernels.causal_conv1d(x, weight, bias, silu, reverse)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias = ctx.saved_tensors
        dx, dweight, dbias = kernels.causal_conv1d_bwd(x, weight, bias, grad_out, *ctx.flags)
        db = None if bias is None else dbias.to(bias.dtype)
        return dx.to(x.dtype), dweight.to(weight.dtype), db, None, None
