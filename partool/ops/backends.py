"""The selective-scan backends: each one registered here, and the choice of one for a call.

Backends: `reference` (sequential PyTorch, the ground truth), `chunked` (PyTorch, fast on CPU), `cpu` and
`cuda` (the kernel library, `partool.ops.kernels`), `mamba_ssm` (mamba-ssm's CUDA scan, when it imports).
The PyTorch ones and mamba_ssm are differentiated by autograd; the kernels have backward kernels of their
own, which recompute the states instead of storing them (`partool.ops.selective_scan` wires them in).
Choice: the call's `backend=` argument, else `set_backend()`, else `PARTOOL_SCAN_BACKEND`, else `auto`,
the available backend of highest priority that runs on the device and takes the scan's d_state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from partool.errors import UserError
from partool.ops import kernel_abi, kernels
from partool.ops.scan_mamba_ssm import mamba_ssm_available, scan_mamba_ssm
from partool.ops.scan_reference import scan_reference_fn

# fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse) -> (out, last_state (b, d, n) float32).
# Arguments arrive validated, with B and C as (b, g, n, l); dtypes are the caller's.
ScanFn = Callable[..., tuple[Tensor, Tensor]]
# backward(u, delta, A, B, C, D, z, delta_bias, dout, delta_softplus, reverse) -> float32 (du, ddelta, dA,
# dB, dC, dD, dz, ddelta_bias), an absent optional input's gradient empty.
ScanBwdFn = Callable[..., tuple[Tensor, ...]]


@dataclass(frozen=True)
class ScanBackend:
    name: str
    fn: ScanFn
    is_available: Callable[[], bool]
    devices: frozenset[str]  # device types it runs on: {"cpu"}, {"cuda"}, or both
    differentiable: bool  # autograd differentiates fn (else `backward`, or the chunked reference)
    priority: int  # `auto` picks the available backend with the highest priority for the device
    backward: ScanBwdFn | None = None  # a backward of its own for a fn autograd cannot see through
    max_dstate: int | None = None  # the largest d_state it takes (None: any); `auto` skips it beyond
    dtypes: frozenset[torch.dtype] | None = None  # the dtypes it computes in (None: any); `auto` skips others

    def trains(self) -> bool:
        """Whether it has a gradient of its own (autograd's, or its backward's)."""
        return self.differentiable or self.backward is not None


_BACKENDS: dict[str, ScanBackend] = {}
_global_backend: str | None = None


def register_backend(backend: ScanBackend) -> None:
    """Add (or replace) a backend."""
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


def resolve_backend(
    name: str | None,
    device: torch.device,
    needs_grad: bool = False,
    d_state: int | None = None,
    dtype: torch.dtype | None = None,
) -> ScanBackend:
    """The backend that will run a call on `device` (raises UserError if the named one cannot).

    `auto` skips, when gradients are needed, backends without a gradient of their own (their backward would
    recompute the scan with the chunked reference, slower than the chunked reference alone), backends that
    do not take `d_state` (the kernels stop at 16: the chunked reference runs beyond) and backends that do
    not compute in `dtype` (the kernels would round float64 to float32).
    """
    name = name or get_backend()
    _check_name(name)
    if name == "auto":
        usable = [
            b
            for b in _BACKENDS.values()
            if device.type in b.devices
            and b.is_available()
            and (b.trains() or not needs_grad)
            and (d_state is None or b.max_dstate is None or d_state <= b.max_dstate)
            and (dtype is None or b.dtypes is None or dtype in b.dtypes)
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


def kernel_path_active(x: Tensor, weight: Tensor) -> bool:
    """Whether a fused op may run on the kernel library: inference (no autograd on x or `weight`, the
    module's parameters' stand-in), no tracing or ONNX export in play (torch.compile traces the kernels as
    custom ops), and a `cpu`/`cuda` kernel backend in force for x's device."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if x.device.type not in ("cpu", "cuda"):  # e.g. meta (FLOP counting): no kernel runs there
        return False
    return resolve_backend(None, x.device, dtype=x.dtype).name in ("cpu", "cuda")


def _kernel_scan(device_type: str) -> ScanFn:
    def fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        if not 1 <= A.shape[1] <= kernel_abi.MAX_DSTATE:
            raise UserError(
                f"the {device_type} scan kernel supports d_state 1..{kernel_abi.MAX_DSTATE}, got "
                f"{tuple(A.shape)}; use backend 'chunked' (or 'auto', which does beyond that)"
            )
        return kernels.scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)

    return fn


def _always() -> bool:
    return True


def _sequential(*args) -> tuple[Tensor, Tensor]:
    return scan_reference_fn(*args, chunked=False)


_BOTH = frozenset({"cpu", "cuda"})
for _backend in (
    ScanBackend("reference", _sequential, _always, _BOTH, differentiable=True, priority=0),
    ScanBackend("chunked", scan_reference_fn, _always, _BOTH, differentiable=True, priority=10),
    ScanBackend("mamba_ssm", scan_mamba_ssm, mamba_ssm_available, frozenset({"cuda"}), True, 15),
    *(
        ScanBackend(
            device,
            _kernel_scan(device),
            available,
            frozenset({device}),
            differentiable=False,
            priority=20,
            backward=kernels.scan_bwd,
            max_dstate=kernel_abi.MAX_DSTATE,
            dtypes=frozenset(kernel_abi.DTYPES),
        )
        for device, available in (("cpu", kernel_abi.cpu_available), ("cuda", kernel_abi.cuda_available))
    ),
):
    register_backend(_backend)
