"""Mamba's inner path in one call, in the manner of mamba_ssm's `mamba_inner_fn`: from the mixer's input
to its output, in_proj → depthwise conv1d + SiLU → x_proj → dt_proj → selective scan (softplus Δ, gated by
silu(z)) → out_proj.

`mamba_inner_fn` is one direction (mamba_ssm's `Mamba`); `bimamba_inner_fn` is Vim's "bimamba v2": a
second direction with its own conv/x_proj/dt_proj/A/D runs anti-causally (the official code flips x and z,
runs the same path and flips back; here the anti-causal conv and the reverse scan compute the same function
without flipped copies) and the two outputs are averaged before out_proj (Vim's `if_divide_out=True`).
Each call takes one of three implementations of the same function:
- export (under ONNX export): written in the ops ONNX Runtime runs fastest (`_export_direction`);
- kernel (inference on a `cpu`/`cuda` kernel backend, `kernel_path_active`): both directions' convs as one
  launch, both x_projs and dt_projs as one batched GEMM each, one fused bidirectional scan (`bimamba_flat`);
- reference (otherwise, and always for training): `causal_conv1d` and `selective_scan`, on any backend.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from partool.ops import kernels
from partool.ops.backends import kernel_path_active
from partool.ops.causal_conv1d import causal_conv1d
from partool.ops.selective_scan import record_scan_flops, selective_scan
from partool.ops.weight_cache import cached_per_version


class MambaDirection(NamedTuple):
    """One direction's weights, as mamba_ssm's `Mamba` holds them."""

    conv_weight: Tensor  # (d_inner, 1, w), nn.Conv1d's depthwise weight
    conv_bias: Tensor | None  # (d_inner,)
    x_proj_weight: Tensor  # (dt_rank + 2 d_state, d_inner)
    dt_proj_weight: Tensor  # (d_inner, dt_rank)
    dt_proj_bias: Tensor  # (d_inner,): added to Δ inside the scan, before the softplus
    A_log: Tensor  # (d_inner, d_state): A = -exp(A_log)
    D: Tensor  # (d_inner,)

    def A(self) -> Tensor:
        return -torch.exp(self.A_log.float())


class BiMambaWeights(NamedTuple):
    """Vim's bimamba v2 mixer: the shared projections and the two directions (the backward one `_b`)."""

    in_proj_weight: Tensor  # (2 d_inner, d_model): x rows, then z rows
    out_proj_weight: Tensor  # (d_model, d_inner)
    fwd: MambaDirection
    bwd: MambaDirection


def _reference_direction(x: Tensor, z: Tensor, w: MambaDirection, reverse: bool) -> Tensor:
    """One direction from channel-major x and z (B, d_inner, L) to the gated scan output (B, d_inner, L)."""
    rank, n = w.dt_proj_weight.shape[1], w.A_log.shape[1]
    xc = causal_conv1d(x, w.conv_weight.squeeze(1), w.conv_bias, activation="silu", reverse=reverse)
    x_dbl = F.linear(xc.transpose(1, 2), w.x_proj_weight)  # (B, L, rank + 2n)
    dt, B, C = torch.split(x_dbl, [rank, n, n], dim=-1)
    delta = F.linear(dt, w.dt_proj_weight).transpose(1, 2)  # (B, d_inner, L); the bias goes in the scan
    return selective_scan(
        xc, delta, w.A(), B.transpose(1, 2), C.transpose(1, 2), w.D.float(), z, w.dt_proj_bias.float(),
        delta_softplus=True, reverse=reverse,
    )  # fmt: skip


def _conv_silu_2d(x: Tensor, w: MambaDirection, reverse: bool) -> Tensor:
    """Depthwise (anti-)causal conv + SiLU of token-major x (b, l, d) -> (b, d, l), for ONNX export: a (1 × w)
    Conv2d over x viewed as (b, d, 1, l). ONNX Runtime runs 2-D depthwise convs in its blocked NCHWc layout,
    faster than the 1-D Conv; both directions' convs share one transpose and one NCHWc reorder of x. Same
    taps and padding as `causal_conv1d`."""
    width = w.conv_weight.shape[-1]
    taps = w.conv_weight.flip(-1) if reverse else w.conv_weight  # (d, 1, w)
    x4 = F.pad(x.unsqueeze(1).permute(0, 3, 1, 2), (0, width - 1) if reverse else (width - 1, 0))
    return F.silu(F.conv2d(x4, taps.unsqueeze(2), w.conv_bias, groups=x.shape[-1])).squeeze(2)


def _export_direction(x: Tensor, z: Tensor, w: MambaDirection, reverse: bool) -> Tensor:
    """One direction as written for ONNX export, from token-major x (B, L, d_inner) and channel-major z
    (B, d_inner, L) to the gated scan output (B, d_inner, L).

    x reaches the depthwise conv through one transpose (`_conv_silu_2d`). x_proj and dt_proj take the
    weight FIRST on the channel-major conv output, so Δ, B and C leave their matmuls in the scan's
    (b, ·, l) layout with no transposes; quantize.py quantizes such a weight per output row. No
    torch.split/chunk: they export as sequence ops."""
    r, n = w.dt_proj_weight.shape[1], w.A_log.shape[1]
    xc = _conv_silu_2d(x, w, reverse)
    x_dbl = torch.matmul(w.x_proj_weight, xc)  # (B, rank + 2n, L)
    delta = torch.matmul(w.dt_proj_weight, x_dbl[:, :r])  # (B, d_inner, L); the bias goes in the scan
    B, C = x_dbl[:, r : r + n], x_dbl[:, r + n :]  # (B, n, L)
    return selective_scan(
        xc, delta, w.A(), B, C, w.D.float(), z, w.dt_proj_bias.float(), delta_softplus=True, reverse=reverse
    )


def mamba_inner_export(
    hidden: Tensor, in_proj_weight: Tensor, out_proj_weight: Tensor, directions: tuple[MambaDirection, ...]
) -> Tensor:
    """The export implementation of `mamba_inner_fn` (one direction) and `bimamba_inner_fn` (two), which
    also runs eagerly (the same function as the others). in_proj is split by weight rows (constant
    slices) into x and z, each `MatMul(activation, weight)` (ORT prepacks a constant second input); z is
    transposed once for both directions. out_proj reads y through a transpose ORT folds into FusedMatMul,
    and the 1/2 of a two-direction average folds into its weight (exact: a power of two)."""
    d = in_proj_weight.shape[0] // 2
    x = torch.matmul(hidden, in_proj_weight[:d].t())  # (B, L, d_inner)
    z = torch.matmul(hidden, in_proj_weight[d:].t()).transpose(1, 2)  # (B, d_inner, L)
    y = None
    for reverse, w in enumerate(directions):
        out = _export_direction(x, z, w, bool(reverse))
        y = out if y is None else y + out
    w_out = out_proj_weight.t() if len(directions) == 1 else out_proj_weight.t() * 0.5
    return torch.matmul(y.transpose(1, 2), w_out)


def mamba_inner_fn(
    hidden: Tensor, in_proj_weight: Tensor, out_proj_weight: Tensor, direction: MambaDirection
) -> Tensor:
    """mamba_ssm's `Mamba` forward without bias terms: token-major (B, L, d_model) -> (B, L, d_model)."""
    if torch.onnx.is_in_onnx_export():
        return mamba_inner_export(hidden, in_proj_weight, out_proj_weight, (direction,))
    x, z = F.linear(hidden, in_proj_weight).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L) each
    return F.linear(_reference_direction(x, z, direction, reverse=False).transpose(1, 2), out_proj_weight)


def bimamba_uses_kernels(hidden: Tensor, in_proj_weight: Tensor) -> bool:
    """Whether `bimamba_inner_fn` on `hidden` takes the kernel implementation (`kernel_path_active`)."""
    return kernel_path_active(hidden, in_proj_weight)


def bimamba_inner_fn(hidden: Tensor, weights: BiMambaWeights, cache_owner: object) -> Tensor:
    """Vim's bimamba v2 mixer: token-major (B, L, d_model) -> (B, L, d_model). `cache_owner` (the module)
    keeps the kernel implementation's stacked weights between calls (`cached_per_version`)."""
    in_w, out_w, fwd, bwd = weights
    if torch.onnx.is_in_onnx_export():
        return mamba_inner_export(hidden, in_w, out_w, (fwd, bwd))
    if bimamba_uses_kernels(hidden, in_w):
        b, length, dim = hidden.shape
        flat = hidden.permute(2, 0, 1).reshape(dim, b * length)  # one copy in, a view out
        return bimamba_flat(flat, b, weights, cache_owner).view(dim, b, length).permute(1, 2, 0)
    x, z = F.linear(hidden, in_w).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L) each
    y = (_reference_direction(x, z, fwd, reverse=False) + _reference_direction(x, z, bwd, reverse=True)) / 2
    return F.linear(y.transpose(1, 2), out_w)


def _stacked_weights(fwd: MambaDirection, bwd: MambaDirection) -> dict[str, Tensor]:
    """What the kernel implementation takes of the weights: per direction the float32 A, D and dt bias,
    both directions' conv taps and biases stacked (2, d_inner, w) and (2, d_inner) for the paired conv, and
    x_proj's and dt_proj's weights stacked (2, ·, ·) for one batched GEMM each."""
    consts = {}
    for sfx, w in (("", fwd), ("_b", bwd)):
        consts |= {
            f"A{sfx}": w.A().contiguous(),
            f"D{sfx}": w.D.float(),
            f"delta_bias{sfx}": w.dt_proj_bias.float(),
        }
    return consts | {
        "conv_weight": torch.stack([w.conv_weight.squeeze(1) for w in (fwd, bwd)]).float(),
        "conv_bias": torch.stack([w.conv_bias for w in (fwd, bwd)]).float(),
        "x_proj_weight": torch.stack([w.x_proj_weight for w in (fwd, bwd)]),
        "dt_proj_weight": torch.stack([w.dt_proj_weight for w in (fwd, bwd)]),
    }


def bimamba_flat(h: Tensor, batch: int, weights: BiMambaWeights, cache_owner: object) -> Tensor:
    """The kernel implementation in the flat layout: h (d_model, B·L), the batch's tokens side by side,
    -> (d_model, B·L). Seven launches: in_proj, both directions' conv1d+SiLU, x_proj and dt_proj of both
    directions (one batched GEMM each), one fused bidirectional scan, out_proj.

    Every projection runs over the whole batch at once (N = B·L: per-image GEMMs of N = L ran slower on
    the CPU, and on a GPU N = 197 misses the 8-element alignment of tensor-core kernels), and each output
    is in the kernels' layout already: x and z are row blocks of in_proj's output, B and C row blocks of
    x_proj's, read in place through the kernels' strides as (B, ·, L) views. No copies, no transposes."""
    in_proj_weight, out_proj_weight, fwd, bwd = weights
    d, (r, n) = fwd.D.shape[0], (fwd.dt_proj_weight.shape[1], fwd.A_log.shape[1])
    length = h.shape[1] // batch
    params = [t for t in (*fwd, *bwd) if t is not None]
    consts = cached_per_version(cache_owner, params, lambda: _stacked_weights(fwd, bwd))

    def per_image(m: Tensor) -> Tensor:  # (rows, B·L) -> (B, rows, L), a view
        return m.view(m.shape[0], batch, length).transpose(0, 1)

    xz = in_proj_weight @ h  # (2 d_inner, B·L)
    x, z = per_image(xz[:d]), per_image(xz[d:])
    # per direction (causal, anti-causal): conv (2, B, d_inner, L) in x's layout, then x_proj
    # (2, rank + 2n, B·L) and dt_proj (2, d_inner, B·L; its bias goes in the scan)
    xc = kernels.causal_conv1d_bidirectional(x, consts["conv_weight"], consts["conv_bias"], True)
    x_dbl = torch.bmm(consts["x_proj_weight"], xc.transpose(1, 2).reshape(2, d, -1))
    delta = torch.bmm(consts["dt_proj_weight"], x_dbl[:, :r])
    fwd_args, bwd_args = (
        {"u": xc[i], "delta": per_image(delta[i]), "A": consts[f"A{sfx}"], "B": per_image(x_dbl[i, r : r + n]),
         "C": per_image(x_dbl[i, r + n :]), "D": consts[f"D{sfx}"], "z": z, "delta_bias": consts[f"delta_bias{sfx}"]}
        for i, sfx in ((0, ""), (1, "_b"))
    )  # fmt: skip
    for _ in range(2):
        record_scan_flops(x.shape, n, has_D=True, has_z=True)
    y = kernels.scan_bidirectional(fwd_args, bwd_args, delta_softplus=True, out_scale=0.5)  # xc[0]'s layout
    return out_proj_weight @ y.transpose(0, 1).reshape(d, -1)
