"""`selective_scan`: the contract of mamba_ssm's `selective_scan_fn` plus `reverse`, over several backends.

The call validates its arguments, counts its FLOPs for `count_scan_flops`, and runs on the backend
`partool.ops.backends` chooses, or as the ONNX lowering's custom op inside `partool.ops.lowering.lowering`.
Every backend is differentiable: autograd sees through the PyTorch ones and mamba_ssm; the others run under
`_NativeScan`, whose backward is the backend's own (the kernels' backward kernels keep the inputs, never the
states) or, for a forward-only backend, the chunked reference's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from partool.ops.backends import resolve_backend
from partool.ops.lowering import current_lowering, lowered_scan
from partool.ops.scan_reference import scan_reference_fn


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


def _reference_backward(u, delta, A, B, C, D, z, delta_bias, grad_out, delta_softplus, reverse):
    """The gradients of a forward-only backend's scan, by differentiating the chunked reference (None for an
    input that takes none)."""
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_() if x is not None else None for x in inputs]
        out, _ = scan_reference_fn(*leaves, delta_softplus, reverse)
        wanted = [x for x in leaves if x is not None]
        grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
    return [next(grads) if x is not None else None for x in leaves]


class _NativeScan(torch.autograd.Function):
    """A backend whose scan autograd cannot see through: only the inputs are saved; the backward is the
    backend's own (the kernels', which recompute the states) or, without one, the chunked reference's."""

    @staticmethod
    def forward(ctx, fn, backward, delta_softplus, reverse, u, delta, A, B, C, D, z, delta_bias):
        ctx.backward, ctx.flags = backward or _reference_backward, (delta_softplus, reverse)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        out, last = fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
        ctx.mark_non_differentiable(last)
        return out, last

    @staticmethod
    def backward(ctx, grad_out, _grad_last):
        inputs = ctx.saved_tensors
        grads = ctx.backward(*inputs, grad_out, *ctx.flags)
        needs = ctx.needs_input_grad[4:]
        return (
            None,
            None,
            None,
            None,
            *[
                g.to(x.dtype) if need and x is not None and g is not None else None
                for g, x, need in zip(grads, inputs, needs, strict=True)
            ],
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
    """Selective scan with mamba_ssm's `selective_scan_fn` semantics (docs/architecture.md, "Selective scan").

    u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l) or (b, g, n, l); D, delta_bias: (d,).
    Returns out (u's dtype), and the float32 last state (b, d, n) when `return_last_state`.
    `reverse=True` scans from the last step to the first; `backend` overrides the global choice.
    """
    _validate(u, delta, A, B, C, D, z, delta_bias)
    record_scan_flops(u.shape, A.shape[1], D is not None, z is not None)
    if u.device.type == "meta":  # shapes only (FLOP counting, meta-device builds): nothing to compute
        last = torch.empty(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32, device=u.device)
        return (torch.empty_like(u), last) if return_last_state else torch.empty_like(u)
    B4 = B.unsqueeze(1) if B.dim() == 3 else B
    C4 = C.unsqueeze(1) if C.dim() == 3 else C
    if (kind := current_lowering()) is not None:
        out, last = lowered_scan(kind, u, delta, A, B4, C4, D, z, delta_bias, delta_softplus, reverse)
        return (out, last) if return_last_state else out
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    impl = resolve_backend(backend, u.device, needs_grad, d_state=A.shape[1], dtype=u.dtype)
    if impl.differentiable or not needs_grad:
        out, last = impl.fn(u, delta, A, B4, C4, D, z, delta_bias, delta_softplus, reverse)
    else:
        out, last = _NativeScan.apply(
            impl.fn, impl.backward, delta_softplus, reverse, u, delta, A, B4, C4, D, z, delta_bias
        )
    return (out, last) if return_last_state else out


_flop_counters: list[list[int]] = []


def scan_flops(batch: int, dim: int, d_state: int, length: int, has_D: bool, has_z: bool) -> int:
    """FLOPs of one scan as mamba_ssm and VMamba count them: 9·b·l·d·n, plus b·d·l each for D and z."""
    return 9 * batch * length * dim * d_state + batch * dim * length * (int(has_D) + int(has_z))


def record_scan_flops(shape: torch.Size, d_state: int, has_D: bool, has_z: bool) -> None:
    """Add one scan of u's `shape` (b, d, l) to every `count_scan_flops` block in progress (fused ops that
    run scans without `selective_scan` call this too)."""
    if _flop_counters:
        b, d, length = shape
        cost = scan_flops(b, d, d_state, length, has_D, has_z)
        for counter in _flop_counters:
            counter.append(cost)


@contextmanager
def count_scan_flops() -> Iterator[list[int]]:
    """Collects `scan_flops` of every `selective_scan` call made inside the block (one entry per call)."""
    counter: list[int] = []
    _flop_counters.append(counter)
    try:
        yield counter
    finally:
        _flop_counters[:] = [c for c in _flop_counters if c is not counter]
