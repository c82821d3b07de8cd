"""The `mamba_ssm` backend: mamba-ssm's own CUDA selective scan, when the package imports (CUDA only)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor


@torch.compiler.assume_constant_result  # torch.compile takes the probe's answer as a constant
def mamba_ssm_available() -> bool:
    return _mamba_ssm_imports()


@functools.cache  # not itself the compile constant: Dynamo traces into a cached function's body
def _mamba_ssm_imports() -> bool:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # any import failure (missing package, ABI mismatch) means "not available"
        return False
    return True


def scan_mamba_ssm(
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
) -> tuple[Tensor, Tensor]:
    """mamba-ssm has no `reverse`: it runs on flipped copies, the last state is then that of step 0."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    if reverse:
        u, delta, B, C = u.flip(-1), delta.flip(-1), B.flip(-1), C.flip(-1)
        z = z.flip(-1) if z is not None else None
    out, last = selective_scan_fn(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus=delta_softplus, return_last_state=True
    )
    return (out.flip(-1) if reverse else out), last
