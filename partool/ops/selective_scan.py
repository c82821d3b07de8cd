"""`selective_scan`: the contract of mamba_ssm's `selective_scan_fn` plus `reverse`, over several backends.

Backends are registered by name. Differentiable ones (the references, mamba_ssm) run as they are; a
forward-only one (the `cpu`/`cuda` kernels of `plugins/kernels`) runs under an autograd Function whose
backward recomputes the scan with the chunked reference, so every backend is differentiable.
Choice: the call's `backend=` argument, else `set_backend()`, else `PARTOOL_SCAN_BACKEND`, else `auto`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from partool.errors import UserError
from partool.ops.scan_reference import scan_chunked, scan_sequential

# fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse) -> (out, last_state (b, d, n) float32).
# Arguments arrive validated, with B and C as (b, g, n, l); dtypes are the caller's.
ScanFn = Callable[..., tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class ScanBackend:
    name: str
    fn: ScanFn
    is_available: Callable[[], bool]
    devices: frozenset[str]  # device types it runs on: {"cpu"}, {"cuda"}, or both
    differentiable: bool  # False: forward only, backward recomputed by the chunked reference
    priority: int  # `auto` picks the available backend with the highest priority for the device


_BACKENDS: dict[str, ScanBackend] = {}
_global_backend: str | None = None


def register_backend(backend: ScanBackend) -> None:
    """Add (or replace) a backend; `partool.ops.kernels` registers `cpu` and `cuda` this way."""
    _BACKENDS[backend.name] = backend


def available_backends() -> dict[str, bool]:
    """Every registered backend and whether it can run here."""
    return {name: b.is_available() for name, b in _BACKENDS.items()}


def set_backend(name: str | None) -> None:
    """Set the process-wide default backend (None: back to PARTOOL_SCAN_BACKEND / auto)."""
    if name is not None:
        _check_name(name)
    global _global_backend
    _global_backend = name


def get_backend() -> str:
    """The backend name in force when a call passes none."""
    return _global_backend or os.environ.get("PARTOOL_SCAN_BACKEND") or "auto"


def _check_name(name: str) -> None:
    if name != "auto" and name not in _BACKENDS:
        choices = ", ".join(["auto", *_BACKENDS])
        raise UserError(f"unknown selective-scan backend {name!r}; choose one of: {choices}")


def resolve_backend(name: str | None, device: torch.device, needs_grad: bool = False) -> ScanBackend:
    """The backend that will run a call on `device` (raises UserError if the named one cannot).

    `auto` skips forward-only backends when gradients are needed: their backward recomputes the scan with
    the chunked reference, so for training the chunked reference alone is faster.
    """
    name = name or get_backend()
    _check_name(name)
    if name == "auto":
        usable = [
            b
            for b in _BACKENDS.values()
            if device.type in b.devices and b.is_available() and (b.differentiable or not needs_grad)
        ]
        return max(usable, key=lambda b: b.priority)
    backend = _BACKENDS[name]
    if device.type not in backend.devices:
        raise UserError(
            f"selective-scan backend {name!r} does not run on {device.type}; "
            f"use one of {sorted(backend.devices)} or backend 'auto'"
        )
    if not backend.is_available():
        raise UserError(
            f"selective-scan backend {name!r} is not available here; `partool doctor` shows why, "
            "or use backend 'auto'"
        )
    return backend


def _validate(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, length), got shape {tuple(u.shape)}")
    b, d, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (dim={d}, d_state), got {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("complex A is not supported: partool's scan is real-valued")
    n = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        if x.dim() not in (3, 4) or x.shape[0] != b or x.shape[-2] != n or x.shape[-1] != length:
            raise ValueError(
                f"{name} must be (batch={b}, d_state={n}, length={length}) or (batch, groups, d_state, "
                f"length), got {tuple(x.shape)}"
            )
        if x.dim() == 4 and d % x.shape[1]:
            raise ValueError(f"{name} has {x.shape[1]} groups, which does not divide dim={d}")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None and x.shape != (d,):
            raise ValueError(f"{name} must be (dim={d},), got {tuple(x.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")


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
    """The full contract on top of a core scan, computed in (at least) float32 and cast back to u's dtype."""
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


class _ForwardOnlyScan(torch.autograd.Function):
    """Runs a forward-only kernel; its backward differentiates the chunked reference instead."""

    @staticmethod
    def forward(ctx, fn, delta_softplus, reverse, u, delta, A, B, C, D, z, delta_bias):
        ctx.flags = (delta_softplus, reverse)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        out, last = fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
        ctx.mark_non_differentiable(last)
        return out, last

    @staticmethod
    def backward(ctx, grad_out, _grad_last):
        inputs = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        with torch.enable_grad():
            leaves = [
                x.detach().requires_grad_(need) if x is not None else None
                for x, need in zip(inputs, needs, strict=True)
            ]
            out, _ = scan_reference_fn(*leaves, *ctx.flags)
            wanted = [x for x, need in zip(leaves, needs, strict=True) if need and x is not None]
            grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
        return (
            None,
            None,
            None,
            *[next(grads) if need and x is not None else None for x, need in zip(leaves, needs, strict=True)],
        )


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    reverse: bool = False,
    *,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with mamba_ssm's `selective_scan_fn` semantics (see ARCHITECTURE.md, "Selective scan").

    u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l) or (b, g, n, l); D, delta_bias: (d,).
    Returns out (u's dtype), and the float32 last state (b, d, n) when `return_last_state`.
    `reverse=True` scans from the last step to the first; `backend` overrides the global choice.
    """
    _validate(u, delta, A, B, C, D, z, delta_bias)
    if _flop_counters:
        b, d, length = u.shape
        cost = scan_flops(b, d, A.shape[1], length, D is not None, z is not None)
        for counter in _flop_counters:
            counter.append(cost)
    if u.device.type == "meta":  # shapes only (FLOP counting, meta-device builds): nothing to compute
        last = torch.empty(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32, device=u.device)
        return (torch.empty_like(u), last) if return_last_state else torch.empty_like(u)
    B4 = B.unsqueeze(1) if B.dim() == 3 else B
    C4 = C.unsqueeze(1) if C.dim() == 3 else C
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    impl = resolve_backend(backend, u.device, needs_grad)
    if impl.differentiable or not needs_grad:
        out, last = impl.fn(u, delta, A, B4, C4, D, z, delta_bias, delta_softplus, reverse)
    else:
        out, last = _ForwardOnlyScan.apply(
            impl.fn, delta_softplus, reverse, u, delta, A, B4, C4, D, z, delta_bias
        )
    return (out, last) if return_last_state else out


_flop_counters: list[list[int]] = []


def scan_flops(batch: int, dim: int, d_state: int, length: int, has_D: bool, has_z: bool) -> int:
    """FLOPs of one scan as mamba_ssm and VMamba count them: 9·b·l·d·n, plus b·d·l each for D and z."""
    return 9 * batch * length * dim * d_state + batch * dim * length * (int(has_D) + int(has_z))


@contextmanager
def count_scan_flops() -> Iterator[list[int]]:
    """Collects `scan_flops` of every `selective_scan` call made inside the block (one entry per call)."""
    counter: list[int] = []
    _flop_counters.append(counter)
    try:
        yield counter
    finally:
        _flop_counters[:] = [c for c in _flop_counters if c is not counter]


def _always() -> bool:
    return True


register_backend(
    ScanBackend(
        "reference",
        lambda *args: scan_reference_fn(*args, chunked=False),
        _always,
        frozenset({"cpu", "cuda"}),
        differentiable=True,
        priority=0,
    )
)
register_backend(
    ScanBackend(
        "chunked", scan_reference_fn, _always, frozenset({"cpu", "cuda"}), differentiable=True, priority=10
    )
)
