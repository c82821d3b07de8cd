"""Vim's bidirectional Mamba mixer ("bimamba v2") and RMSNorm, with the official parameter names.

The mixer holds the weights and composes `partool.ops.mamba_inner.bimamba_inner_fn`, which runs the
official backward direction (own conv/projections/scan on x and z flipped) as an anti-causal conv and a
reverse scan on the unflipped tensors, averages both directions (Vim's `if_divide_out=True`) and picks the
reference, kernel or export implementation per call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from partool.ops.mamba_inner import (
    BiMambaWeights,
    MambaDirection,
    bimamba_flat,
    bimamba_inner_fn,
    bimamba_uses_kernels,
)
from partool.ops.weight_cache import cached_per_version


class RMSNorm(nn.Module):
    """x / rms(x) · weight, computed in float32 (mamba_ssm's RMSNorm; parameter `weight` only)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def float_weight(self) -> Tensor:
        """The weight in float32 for the kernels' add + RMSNorm, converted once per weight version: with
        CUDA graphs a per-call cast of a half model's weight would be one more kernel a layer."""
        w = self.weight
        if w.dtype == torch.float32:
            return w
        return cached_per_version(self, [w], lambda: w.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        if torch.onnx.is_in_onnx_export():
            # x / sqrt(...) rather than x * rsqrt(...): the pattern ONNX Runtime fuses into one
            # SimplifiedLayerNormalization (eager keeps rsqrt, the same function to rounding).
            out = xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        else:
            out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * self.weight.float()).to(self.weight.dtype)


def linspace(start: float, stop: float, num: int) -> list[float]:
    """torch.linspace as Python floats (stochastic-depth rates), usable while building on the meta device."""
    return [start + (stop - start) * i / (num - 1) for i in range(num)] if num > 1 else [start] * num


def dt_bias_init(d_inner: int, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> Tensor:
    """Bias whose softplus is log-uniform in [dt_min, dt_max] (Mamba's dt init, inverse softplus)."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(
        min=floor
    )
    return dt + torch.log(-torch.expm1(-dt))


def s4d_real_log(d_inner: int, d_state: int) -> Tensor:
    """log of S4D-real A = [1..n] per channel (A = -exp(A_log) at run time)."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1).contiguous()


class BiMamba(nn.Module):
    """Bimamba v2 mixer: (B, L, d_model) -> (B, L, d_model). Names match Vim's `Mamba` module."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        d_inner, rank = self.d_inner, self.dt_rank
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        for suffix in ("", "_b"):  # forward direction, then backward: conv1d/x_proj/dt_proj/A_log/D(_b)
            conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True)
            x_proj = nn.Linear(d_inner, rank + 2 * d_state, bias=False)
            dt_proj = nn.Linear(rank, d_inner, bias=True)
            std = rank**-0.5
            nn.init.uniform_(dt_proj.weight, -std, std)
            with torch.no_grad():
                dt_proj.bias.copy_(dt_bias_init(d_inner))
            setattr(self, f"conv1d{suffix}", conv)
            setattr(self, f"x_proj{suffix}", x_proj)
            setattr(self, f"dt_proj{suffix}", dt_proj)
        self.A_log = nn.Parameter(s4d_real_log(d_inner, d_state))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_b_log = nn.Parameter(s4d_real_log(d_inner, d_state))
        self.D_b = nn.Parameter(torch.ones(d_inner))
        for p in (self.A_log, self.D, self.A_b_log, self.D_b):
            p._no_weight_decay = True  # Vim's optimizer convention

    def direction(self, reverse: bool) -> MambaDirection:
        """The weights of one direction (`_b` names for the backward one)."""
        sfx = "_b" if reverse else ""
        conv, dt_proj = getattr(self, f"conv1d{sfx}"), getattr(self, f"dt_proj{sfx}")
        return MambaDirection(
            conv.weight, conv.bias, getattr(self, f"x_proj{sfx}").weight, dt_proj.weight, dt_proj.bias,
            getattr(self, f"A{sfx}_log"), getattr(self, f"D{sfx}"),
        )  # fmt: skip

    def uses_kernels(self, hidden_states: Tensor) -> bool:
        """Whether a forward on `hidden_states` runs on the kernel library (inference on a kernel backend)."""
        return bimamba_uses_kernels(hidden_states, self.in_proj.weight)

    def weights(self) -> BiMambaWeights:
        """The weights `bimamba_inner_fn` takes."""
        return BiMambaWeights(
            self.in_proj.weight, self.out_proj.weight, self.direction(False), self.direction(True)
        )

    def forward_flat(self, h: Tensor, batch: int) -> Tensor:
        """Inference on the kernel library in the flat layout: h (d_model, B·L), the batch's tokens side by
        side, -> (d_model, B·L) (`bimamba_flat`)."""
        return bimamba_flat(h, batch, self.weights(), self)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return bimamba_inner_fn(hidden_states, self.weights(), self)
