"""VMamba v0's 2-D selective scan (SS2D's inner path) in one call: cross-scan, four directional scans,
cross-merge, from the conv output (B, d, H, W) to the channel-last sum (B, H, W, d).

The four directions are row-major, column-major, and both reversed. The two forward ones are stacked on
the channel axis and run as one selective-scan call with B/C grouped per direction (b, 2, n, l); the
reversed two run as one `reverse=True` call over the same unflipped sequences: no flipped copies in or out.
Two implementations of the same function, chosen per call:
- kernel (inference on a `cpu`/`cuda` kernel backend, `kernel_path_active`): both pairs as one bidirectional
  kernel call in a flat (channels, batch·tokens) layout (`_kernel_impl`);
- reference (otherwise, and for training and ONNX export): `selective_scan` on any backend or lowering.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from partool.ops import kernels
from partool.ops.backends import kernel_path_active
from partool.ops.selective_scan import record_scan_flops, selective_scan
from partool.ops.weight_cache import cached_per_version

DIRECTIONS = 4  # row-major, column-major, reversed row-major, reversed column-major


class CrossScanWeights(NamedTuple):
    """SS2D's scan weights as VMamba v0 stacks them per direction k."""

    x_proj_weight: Tensor  # (4, dt_rank + 2 d_state, d)
    dt_projs_weight: Tensor  # (4, d, dt_rank)
    dt_projs_bias: Tensor  # (4, d): added to Δ inside the scan, before the softplus
    A_logs: Tensor  # (4·d, d_state): A = -exp(A_logs)
    Ds: Tensor  # (4·d,)


def transpose_hw(x: Tensor, rows: int, cols: int) -> Tensor:
    """(B, d, rows·cols), a map stored row by row, -> (B, d, cols·rows), the same map column by column.

    Under ONNX export it is written as three transposes through a channel-last layout, with reshapes
    between them so that no optimizer merges them back: ONNX Runtime's Transpose of the two small trailing
    axes of (B, d, rows, cols) takes a slow generic path, while it runs the (d, L) <-> (L, d) and
    (rows, cols, d) -> (cols, rows, d) transposes fast.
    """
    b, d, _ = x.shape
    if not torch.onnx.is_in_onnx_export():
        return x.reshape(b, d, rows, cols).transpose(2, 3).reshape(b, d, rows * cols)
    channel_last = x.transpose(1, 2).reshape(b, rows, cols, d)
    return channel_last.transpose(1, 2).reshape(b, cols * rows, d).transpose(1, 2)


def cross_scan(x: Tensor) -> Tensor:
    """(B, d, H, W) -> (B, 2, d, H·W): row-major and column-major orders. VMamba v0's two other directions
    are these sequences reversed; they are scanned with `reverse=True` instead of being flipped and copied."""
    _, _, height, width = x.shape
    rows = x.flatten(2)
    return torch.stack([rows, transpose_hw(rows, height, width)], dim=1)


def cross_merge(ys: Tensor, height: int, width: int) -> Tensor:
    """(B, 2, d, H·W) row-/column-major outputs (both scan directions summed) -> row-major sum (B, d, H·W)."""
    return ys[:, 0] + transpose_hw(ys[:, 1], width, height)


def cross_scan_fn(x: Tensor, weights: CrossScanWeights, cache_owner: object) -> Tensor:
    """The summed 4-direction scan of x (B, d, H, W) -> (B, H, W, d), softplus Δ, no gate. `cache_owner`
    (the module) keeps the kernel implementation's rearranged weights between calls (`cached_per_version`)."""
    if kernel_path_active(x, weights.x_proj_weight) and x.dtype == weights.x_proj_weight.dtype:
        return _kernel_impl(x, cached_per_version(cache_owner, weights, lambda: _kernel_weights(weights)))
    b, d, h, w = x.shape
    return _reference_impl(x, weights).transpose(1, 2).reshape(b, h, w, d)


def _reference_impl(x: Tensor, weights: CrossScanWeights) -> Tensor:
    """(B, d, H, W) -> (B, d, H·W) as two grouped scans (each call groups its two directions: channel block
    k uses direction k's B/C). The per-direction projections are batched matmuls with the weight first,
    (2, ·, d) @ (B, 2, d, L): channel-major outputs, one ONNX MatMul each (ONNX Runtime's Einsum was several
    times slower) that quantize.py quantizes per output row."""
    b, d, h, w = x.shape
    length, n = h * w, weights.A_logs.shape[1]
    r = weights.dt_projs_weight.shape[-1]
    xs = cross_scan(x)  # (B, 2, d, L)
    A = -torch.exp(weights.A_logs.float()).view(DIRECTIONS, d, n)
    D, bias = weights.Ds.float().view(DIRECTIONS, d), weights.dt_projs_bias.float()
    ys = None
    for first, reverse in ((0, False), (2, True)):
        k = slice(first, first + 2)
        x_dbl = torch.matmul(weights.x_proj_weight[k].to(xs.dtype), xs)  # (B, 2, rank + 2n, L)
        # Slices (views, as torch.split's): torch.split/chunk export as ONNX sequence ops, slices as Slice.
        dts, Bs, Cs = x_dbl[:, :, :r], x_dbl[:, :, r : r + n], x_dbl[:, :, r + n :]
        dts = torch.matmul(weights.dt_projs_weight[k].to(xs.dtype), dts)  # (B, 2, d, L)
        out = selective_scan(
            xs.reshape(b, 2 * d, length), dts.reshape(b, 2 * d, length), A[k].reshape(2 * d, n),
            Bs.contiguous(), Cs.contiguous(), D[k].reshape(-1), delta_bias=bias[k].reshape(-1),
            delta_softplus=True, reverse=reverse,
        )  # fmt: skip
        ys = out if ys is None else ys + out
    return cross_merge(ys.view(b, 2, d, length), h, w)


def _kernel_weights(weights: CrossScanWeights) -> dict[str, Tensor]:
    """The kernel implementation's weights. Per direction pair p (0: directions 0/1 forward, 1: directions
    2/3 reversed) and group g (row-/column-major), direction k = 2p + g. x_proj of both pairs as one
    (2 [g], 2·rank + 4n, d) weight whose output rows are [dt of p0 | dt of p1 | B, C of p0 | B, C of p1];
    dt_proj (2 [p], 2 [g], d, rank); float32 A, D and dt bias (2 [p], 2·d, ·)."""
    d, r = weights.dt_projs_weight.shape[1:]
    n = weights.A_logs.shape[1]
    w = weights.x_proj_weight  # (4 [k], rank + 2n, d)
    x_proj = torch.stack([torch.cat([w[g, :r], w[2 + g, :r], w[g, r:], w[2 + g, r:]]) for g in (0, 1)])
    return {
        "x_proj": x_proj,
        "dt_proj": weights.dt_projs_weight.view(2, 2, d, r),
        "A": (-torch.exp(weights.A_logs.float())).view(2, 2 * d, n),
        "D": weights.Ds.float().view(2, 2 * d),
        "delta_bias": weights.dt_projs_bias.float().view(2, 2 * d),
    }


def _kernel_impl(x: Tensor, c: dict[str, Tensor]) -> Tensor:
    """(B, d, H, W) -> (B, H, W, d), channel-last, in nine launches and without flipped copies.

    Both orders of the map are written once, side by side in the flat layout (2 [g], d, B·H·W), so x_proj
    is one batched GEMM over the whole batch and each pair's dt_proj another; the kernels read u, delta, B
    and C in place through their strides (only B and C of a pair are packed, 2n rows). The forward pair and
    the reversed pair run as one bidirectional scan call whose out_scale = 1 sums them; one strided add
    then merges row- and column-major outputs into the channel-last result."""
    b, d, h, w = x.shape
    tokens = b * h * w
    r, n = c["dt_proj"].shape[-1], c["A"].shape[-1]
    xs = x.new_empty(2, d, b, h * w)  # [g, channel, image, position]: row-major, then column-major
    xs[0].view(d, b, h, w).copy_(x.transpose(0, 1))
    xs[1].view(d, b, w, h).copy_(x.permute(1, 0, 3, 2))
    x_dbl = torch.bmm(c["x_proj"], xs.view(2, d, tokens))  # (2 [g], 2·rank + 4n, B·L)

    def per_image(m: Tensor) -> Tensor:  # (rows, B·L) -> (B, rows, L), a view
        return m.view(m.shape[0], b, h * w).transpose(0, 1)

    u = per_image(xs.view(2 * d, tokens))
    pairs = []
    for p in (0, 1):
        delta = torch.bmm(c["dt_proj"][p], x_dbl[:, p * r : (p + 1) * r])  # (2 [g], d, B·L)
        first = 2 * r + 2 * n * p
        bc = x_dbl[:, first : first + 2 * n].view(2, 2, n, tokens).transpose(0, 1).contiguous()
        B, C = (bc[i].view(2, n, b, h * w).permute(2, 0, 1, 3) for i in (0, 1))  # (B, 2 [g], n, L) views
        pairs.append({"u": u, "delta": per_image(delta.view(2 * d, tokens)), "A": c["A"][p], "B": B, "C": C,
                      "D": c["D"][p], "delta_bias": c["delta_bias"][p]})  # fmt: skip
        record_scan_flops(u.shape, n, has_D=True, has_z=False)
    ys = kernels.scan_bidirectional(pairs[0], pairs[1], delta_softplus=True, out_scale=1.0)
    ys = ys.transpose(0, 1).view(2, d, b, h * w)  # u's layout
    y = x.new_empty(b, h, w, d)
    torch.add(ys[0].view(d, b, h, w).permute(1, 2, 3, 0), ys[1].view(d, b, w, h).permute(1, 3, 2, 0), out=y)
    return y
