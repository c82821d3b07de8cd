"""Pure-PyTorch selective scans: the sequential ground truth and a chunked form that is fast on CPU.

The cores (`scan_sequential`, `scan_chunked`) take normalised arguments: B and C as (b, g, n, l), every
tensor already float32, softplus/bias already applied to delta. `scan_reference_fn` puts the whole
contract of `partool.ops.selective_scan` around them. All are differentiable through autograd.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _expand_groups(x: Tensor, dim: int) -> Tensor:
    """(b, g, n, l) -> (b, d, n, l) view: channel c uses group c // (d / g)."""
    b, g, n, length = x.shape
    return x.unsqueeze(2).expand(b, g, dim // g, n, length).reshape(b, dim, n, length)


def scan_sequential(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, reverse: bool = False
) -> tuple[Tensor, Tensor]:
    """One step at a time: h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, y_t = C_t · h_t. Returns (y, last state)."""
    b, d, length = u.shape
    Bx, Cx = _expand_groups(B, d), _expand_groups(C, d)
    h = u.new_zeros(b, d, A.shape[1])
    ys: list[Tensor] = [u.new_empty(0)] * length
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * Bx[..., t] * u[:, :, t, None]
        ys[t] = (h * Cx[..., t]).sum(-1)
    return torch.stack(ys, dim=-1), h


def _scan_chunk(
    dt: Tensor, du: Tensor, Bt: Tensor, Ct: Tensor, Ag: Tensor, h: Tensor
) -> tuple[Tensor, Tensor]:
    """One chunk, time-major: dt, du (T, b, g, c, 1); Bt, Ct (T, b, g, n); Ag (g, c, n); h (b, g, c, n)."""
    a = torch.exp(dt * Ag)
    x = du * Bt.unsqueeze(3)
    states = []
    for t in range(a.shape[0]):
        h = torch.addcmul(x[t], a[t], h)
        states.append(h)
    y = (torch.stack(states) * Ct.unsqueeze(3)).sum(-1)  # (T, b, g, c)
    return y, h


@functools.cache
def _compiled_chunk() -> Callable[..., tuple[Tensor, Tensor]]:
    return torch.compile(_scan_chunk, dynamic=False)


def default_chunk(state_size: int, compiled: bool) -> int:
    """Steps per chunk, measured on 2 cores at Vim-S shapes: 16 while a chunk of states stays in cache
    (b·d·n up to ~32K floats), 4 beyond; a compiled chunk keeps its states in registers, so 16 always."""
    return 16 if compiled or state_size <= 32768 else 4


def scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    reverse: bool = False,
    chunk: int | None = None,
    compiled: bool = False,
) -> tuple[Tensor, Tensor]:
    """The same scan in chunks of `chunk` steps: a few large ops per chunk instead of ~9 small ops a step.

    Per chunk, the decays a_t = exp(Δ_t A), the inputs x_t = Δ_t B_t u_t and the outputs y_t = C_t · h_t are
    computed for all steps at once; only h_t = a_t h_{t-1} + x_t (one fused multiply-add) is sequential,
    and the state is carried from chunk to chunk. The chunk's (T, b, d, n) working set stays in cache, which
    on a CPU beats any form that materialises the whole (l, b, d, n) state. `compiled=True` runs each chunk
    through torch.compile (one fused loop; pays a one-off compile of ~30 s on 2 cores).
    """
    if reverse:
        y, h = scan_chunked(
            u.flip(-1), delta.flip(-1), A, B.flip(-1), C.flip(-1), chunk=chunk, compiled=compiled
        )
        return y.flip(-1), h
    b, d, length = u.shape
    g, n = B.shape[1], A.shape[1]
    c = d // g
    chunk = chunk or default_chunk(b * d * n, compiled)
    pad = (-length) % chunk  # padded steps get Δ = 0: decay 1 and input 0 leave the state unchanged
    dt = F.pad(delta, (0, pad)).permute(2, 0, 1).reshape(-1, b, g, c, 1)  # time-major
    du = F.pad(delta * u, (0, pad)).permute(2, 0, 1).reshape(-1, b, g, c, 1)
    Bt = F.pad(B, (0, pad)).permute(3, 0, 1, 2).contiguous()  # (l, b, g, n)
    Ct = F.pad(C, (0, pad)).permute(3, 0, 1, 2).contiguous()
    Ag = A.view(g, c, n)
    body = _compiled_chunk() if compiled else _scan_chunk
    h = u.new_zeros(b, g, c, n)
    ys = []
    for start in range(0, length + pad, chunk):
        sl = slice(start, start + chunk)
        y, h = body(dt[sl], du[sl], Bt[sl], Ct[sl], Ag, h)
        ys.append(y)
    y = torch.cat(ys).permute(1, 2, 3, 0).reshape(b, d, -1)[..., :length]
    return y, h.reshape(b, d, n)


def scan_reference_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    reverse: bool,
    *,
    chunked: bool = True,
) -> tuple[Tensor, Tensor]:
    """The full contract on top of a core scan, computed in (at least) float32 and cast back to u's dtype.

    B and C arrive as (b, g, n, l). Returns (out, last state (b, d, n))."""
    dtype = u.dtype
    work = torch.promote_types(dtype, torch.float32)  # fp16/bf16 -> fp32; float64 stays (gradcheck)
    uf, dt = u.to(work), delta.to(work)
    if delta_bias is not None:
        dt = dt + delta_bias.to(work)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    if chunked:
        y, last = scan_chunked(
            uf, dt, A.to(work), B.to(work), C.to(work), reverse, compiled=_compile_chunks()
        )
    else:
        y, last = scan_sequential(uf, dt, A.to(work), B.to(work), C.to(work), reverse)
    if D is not None:
        y = y + D.to(work)[:, None] * uf
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype), last


def _compile_chunks() -> bool:
    """PARTOOL_SCAN_COMPILE=1 runs the chunked scan through torch.compile (faster CPU training, ~30 s compile)."""
    return os.environ.get("PARTOOL_SCAN_COMPILE", "0") == "1"
