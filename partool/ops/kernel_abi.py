"""ctypes binding of `libpartool_kernels` (plugins/kernels): the C ABI, and tensors marshalled into it.

The Structures below mirror `partool_kernels.h` field for field (tests compare their offsets with a C
compiler's). Tensors are cast to one io dtype (u's: float32, float16 or bfloat16) and passed in place
when their rows are dense in a layout the kernels' strides describe (`dense_rows`: contiguous, or a
(d, b·l) matrix viewed as (b, d, l)), else as contiguous copies; A, D and delta_bias go as float32.
The CUDA calls enqueue on PyTorch's current stream; a scan runs the library's fastest variant for its
shape, timed on the shape's first eager call (`scan_tuning`); `use_scan_variant` forces one.
`partool.ops.kernels` builds the ops on top of this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from partool.errors import UserError
from partool.ops.scan_tuning import ScanTuner, cuda_event_time
from partool.plugins import find_kernels_library

ABI_VERSION = 4
MAX_DSTATE = 16
MAX_CONV_WIDTH = 4
STATUS_NO_CUDA = 5

DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_p = ctypes.c_void_p


class ScanParams(ctypes.Structure):
    """partool_scan_params_t."""

    _fields_ = [
        ("batch", ctypes.c_int),
        ("dim", ctypes.c_int),
        ("dstate", ctypes.c_int),
        ("length", ctypes.c_int),
        ("groups", ctypes.c_int),
        ("io_dtype", ctypes.c_int),
        ("u", _p),
        ("delta", _p),
        ("A", _p),
        ("B", _p),
        ("C", _p),
        ("D", _p),
        ("z", _p),
        ("delta_bias", _p),
        ("out", _p),
        ("last_state", _p),
        ("delta_softplus", ctypes.c_int),
        ("reverse", ctypes.c_int),
        ("batch_stride", ctypes.c_int64),
        ("dim_stride", ctypes.c_int64),
        ("bc_batch_stride", ctypes.c_int64),
        ("bc_state_stride", ctypes.c_int64),
    ]


class BidirScanParams(ctypes.Structure):
    """partool_bidir_scan_params_t."""

    _fields_ = [("fwd", ScanParams), ("bwd", ScanParams), ("out", _p), ("out_scale", ctypes.c_float)]


class Conv1dParams(ctypes.Structure):
    """partool_conv1d_params_t."""

    _fields_ = [
        ("batch", ctypes.c_int),
        ("dim", ctypes.c_int),
        ("length", ctypes.c_int),
        ("width", ctypes.c_int),
        ("io_dtype", ctypes.c_int),
        ("x", _p),
        ("weight", _p),
        ("bias", _p),
        ("out", _p),
        ("silu", ctypes.c_int),
        ("reverse", ctypes.c_int),
        ("batch_stride", ctypes.c_int64),
        ("dim_stride", ctypes.c_int64),
    ]


class Conv1dPairParams(ctypes.Structure):
    """partool_conv1d_pair_params_t."""

    _fields_ = [("first", Conv1dParams), ("second", Conv1dParams)]


class ScanBwdParams(ctypes.Structure):
    """partool_scan_bwd_params_t."""

    _fields_ = [
        ("fwd", ScanParams),
        ("dout", _p),
        *((name, _p) for name in ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias")),
    ]


class Conv1dBwdParams(ctypes.Structure):
    """partool_conv1d_bwd_params_t."""

    _fields_ = [("fwd", Conv1dParams), ("dout", _p), ("dx", _p), ("dweight", _p), ("dbias", _p)]


class AddRmsNormParams(ctypes.Structure):
    """partool_add_rms_norm_params_t."""

    _fields_ = [
        ("batch", ctypes.c_int),
        ("dim", ctypes.c_int),
        ("length", ctypes.c_int),
        ("io_dtype", ctypes.c_int),
        ("eps", ctypes.c_float),
        ("x", _p),
        ("residual", _p),
        ("weight", _p),
        ("residual_out", _p),
        ("out", _p),
    ]


class KernelError(RuntimeError):
    """A kernel call returned a nonzero status; `status` is the code, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_library(path: str | None = None) -> ctypes.CDLL | None:
    """The kernels library with its signatures declared, or None when it is not built (yet).

    Raises UserError when the file exists but is unusable (wrong ABI version, not loadable).
    """
    lib_path = Path(path) if path else find_kernels_library()
    if lib_path is None:
        return None
    return _load(str(lib_path.resolve()))


@functools.cache
def _load(lib_path: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(lib_path))
    except OSError as exc:
        raise UserError(f"cannot load {lib_path}: {exc}; rebuild it with `partool plugins build`") from exc
    lib.partool_kernels_abi_version.restype = ctypes.c_int
    lib.partool_kernels_abi_version.argtypes = []
    version = lib.partool_kernels_abi_version()
    if version != ABI_VERSION:
        raise UserError(
            f"{lib_path} has kernel ABI {version}, this partool needs {ABI_VERSION}; "
            "rebuild it with `partool plugins build`"
        )
    signatures = {
        "partool_status_string": ([ctypes.c_int], ctypes.c_char_p),
        "partool_last_error_message": ([], ctypes.c_char_p),
        "partool_kernels_has_cuda": ([], ctypes.c_int),
        "partool_selective_scan_fwd_cpu": ([ctypes.POINTER(ScanParams), ctypes.c_int], ctypes.c_int),
        "partool_selective_scan_fwd_cuda": ([ctypes.POINTER(ScanParams), _p], ctypes.c_int),
        "partool_selective_scan_workspace_size": ([ctypes.POINTER(ScanParams)], ctypes.c_size_t),
        "partool_selective_scan_bidir_fwd_cpu": (
            [ctypes.POINTER(BidirScanParams), ctypes.c_int],
            ctypes.c_int,
        ),
        "partool_selective_scan_bidir_fwd_cuda": ([ctypes.POINTER(BidirScanParams), _p], ctypes.c_int),
        "partool_scan_cuda_variant_name": ([ctypes.c_int], ctypes.c_char_p),
        "partool_selective_scan_fwd_cuda_variant": (
            [ctypes.POINTER(ScanParams), ctypes.c_int, _p],
            ctypes.c_int,
        ),
        "partool_selective_scan_bidir_fwd_cuda_variant": (
            [ctypes.POINTER(BidirScanParams), ctypes.c_int, _p],
            ctypes.c_int,
        ),
        "partool_causal_conv1d_fwd_cpu": ([ctypes.POINTER(Conv1dParams), ctypes.c_int], ctypes.c_int),
        "partool_causal_conv1d_fwd_cuda": ([ctypes.POINTER(Conv1dParams), _p], ctypes.c_int),
        "partool_causal_conv1d_pair_fwd_cpu": (
            [ctypes.POINTER(Conv1dPairParams), ctypes.c_int],
            ctypes.c_int,
        ),
        "partool_causal_conv1d_pair_fwd_cuda": ([ctypes.POINTER(Conv1dPairParams), _p], ctypes.c_int),
        "partool_add_rms_norm_fwd_cpu": ([ctypes.POINTER(AddRmsNormParams), ctypes.c_int], ctypes.c_int),
        "partool_add_rms_norm_fwd_cuda": ([ctypes.POINTER(AddRmsNormParams), _p], ctypes.c_int),
        "partool_selective_scan_bwd_cpu": ([ctypes.POINTER(ScanBwdParams), ctypes.c_int], ctypes.c_int),
        "partool_selective_scan_bwd_cuda": ([ctypes.POINTER(ScanBwdParams), _p], ctypes.c_int),
        "partool_causal_conv1d_bwd_cpu": ([ctypes.POINTER(Conv1dBwdParams), ctypes.c_int], ctypes.c_int),
        "partool_causal_conv1d_bwd_cuda": ([ctypes.POINTER(Conv1dBwdParams), _p], ctypes.c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return lib


_loaded: dict[str | None, ctypes.CDLL] = {}  # PARTOOL_KERNELS_LIB (None: the default lookup) -> library


def library() -> ctypes.CDLL:
    """The loaded library. A successful lookup is kept (a disk search per call would cost a good part of a small scan);
    a failed one is retried on the next call, so a library built meanwhile is found."""
    key = os.environ.get("PARTOOL_KERNELS_LIB") or None
    lib = _loaded.get(key)
    if lib is None:
        lib = load_library(key)
        if lib is None:
            raise UserError("libpartool_kernels is not built; run `partool plugins build`")
        _loaded[key] = lib
    return lib


def check(status: int) -> None:
    """Raise KernelError for a nonzero status, with the library's message."""
    if status != 0:
        lib = library()
        detail = lib.partool_last_error_message().decode(errors="replace")
        raise KernelError(status, f"{lib.partool_status_string(status).decode()}: {detail}")


def io_dtype(x: Tensor) -> torch.dtype:
    """The io dtype a kernel computes x's dtype in (float32 for any dtype the kernels lack)."""
    return x.dtype if x.dtype in DTYPES else torch.float32


def _ptr(x: Tensor | None) -> int | None:
    return None if x is None else x.data_ptr()


def _cpu_threads() -> int:
    return torch.get_num_threads()


def _cuda_stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def dense_rows(x: Tensor) -> bool:
    """x (b, d, l) is laid out as the kernels' strides describe without copies: each length-l row
    contiguous, and the rows packed without gaps or overlaps in any order of the two leading axes (a
    contiguous tensor, or a (d, b·l) matrix viewed as (b, d, l))."""
    if x.numel() == 0 or (x.shape[2] > 1 and x.stride(2) != 1):
        return False
    expected = x.shape[2]
    for stride, size in sorted((x.stride(i), x.shape[i]) for i in (0, 1) if x.shape[i] > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def rows_like(x: Tensor | None, layout: Tensor, dtype: torch.dtype) -> Tensor | None:
    """x in `dtype` with the memory layout of `layout` (u: the kernels take one layout for u, delta, z, out)."""
    if x is None or (x.dtype == dtype and x.stride() == layout.stride()):
        return x
    return torch.empty_like(layout, dtype=dtype).copy_(x)


def kernel_rows(x: Tensor, dtype: torch.dtype) -> Tensor:
    """x (b, d, l) in `dtype`, in place when its layout is one the kernels read (`dense_rows`), else contiguous."""
    x = x.to(dtype)
    return x if dense_rows(x) else x.contiguous()


def _state_rows(B: Tensor, C: Tensor, io: torch.dtype) -> tuple[Tensor, Tensor]:
    """B and C as (b, g, n, l) in `io`, kept in place (e.g. slices of x_proj's output) when both have one
    layout with contiguous steps and the groups packed like states; else contiguous copies."""
    B4 = (B.unsqueeze(1) if B.dim() == 3 else B).to(io)
    C4 = (C.unsqueeze(1) if C.dim() == 3 else C).to(io)
    _, g, n, length = B4.shape
    ok = B4.stride() == C4.stride() and (length == 1 or B4.stride(3) == 1)
    ok = ok and (g == 1 or n == 1 or B4.stride(1) == n * B4.stride(2))
    # no expanded axes: a zero stride means "contiguous" to the kernels
    ok = ok and all(stride > 0 for size, stride in zip(B4.shape, B4.stride(), strict=True) if size > 1)
    return (B4, C4) if ok else (B4.contiguous(), C4.contiguous())


def prepare_scan(u, delta, A, B, C, D, z, delta_bias):
    """Tensors in the kernel dtypes and layouts: u in place when the kernels can read it so (`dense_rows`)
    and delta and z in u's layout, B and C as (b, g, n, l) in place where possible (`_state_rows`), A, D and
    delta_bias contiguous float32. The output takes u's layout (`torch.empty_like`)."""
    io = io_dtype(u)
    u = kernel_rows(u, io)
    B4, C4 = _state_rows(B, C, io)

    def f32(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.to(torch.float32).contiguous()

    return (
        u,
        rows_like(delta, u, io),
        f32(A),
        B4,
        C4,
        f32(D),
        rows_like(z, u, io),
        f32(delta_bias),
    )


def _bc_strides(B: Tensor) -> tuple[int, int]:
    """(bc_batch_stride, bc_state_stride) of a `_state_rows` B (b, g, n, l); 0 (contiguous) where unused."""
    b, g, n, _ = B.shape
    state = B.stride(2) if n > 1 else (B.stride(1) if g > 1 else 0)
    return (B.stride(0) if b > 1 else 0), state


def scan_params(u, delta, A, B, C, D, z, delta_bias, out, last, softplus: bool, reverse: bool) -> ScanParams:
    """partool_scan_params_t of `prepare_scan`d tensors; out has u's layout."""
    b, d, length = u.shape
    if A.is_complex():
        raise ValueError("the partool kernels take real A only")
    bc_batch, bc_state = _bc_strides(B)
    return ScanParams(
        batch=b,
        dim=d,
        dstate=A.shape[1],
        length=length,
        groups=B.shape[1],
        io_dtype=DTYPES[u.dtype],
        u=_ptr(u),
        delta=_ptr(delta),
        A=_ptr(A),
        B=_ptr(B),
        C=_ptr(C),
        D=_ptr(D),
        z=_ptr(z),
        delta_bias=_ptr(delta_bias),
        out=_ptr(out),
        last_state=_ptr(last),
        delta_softplus=int(bool(softplus)),
        reverse=int(bool(reverse)),
        batch_stride=u.stride(0) if b > 1 else 0,
        dim_stride=u.stride(1) if d > 1 else 0,
        bc_batch_stride=bc_batch,
        bc_state_stride=bc_state,
    )


def bidir_params(fwd: tuple, bwd: tuple, out: Tensor, softplus: bool, out_scale: float) -> BidirScanParams:
    """partool_bidir_scan_params_t of two `prepare_scan`d directions (the second scans in reverse) into `out`."""
    return BidirScanParams(
        fwd=scan_params(*fwd, out, None, softplus, False),
        bwd=scan_params(*bwd, out, None, softplus, True),
        out=_ptr(out),
        out_scale=float(out_scale),
    )


def conv_params(
    x: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor, silu: bool, reverse: bool
) -> Conv1dParams:
    """partool_conv1d_params_t of x (b, d, l) in a kernel dtype and layout (`kernel_rows`; out the same),
    float32 weight (d, w) and bias."""
    return Conv1dParams(
        batch=x.shape[0],
        dim=x.shape[1],
        length=x.shape[2],
        width=weight.shape[1],
        io_dtype=DTYPES[x.dtype],
        x=_ptr(x),
        weight=_ptr(weight),
        bias=_ptr(bias),
        out=_ptr(out),
        silu=int(bool(silu)),
        reverse=int(bool(reverse)),
        batch_stride=x.stride(0) if x.shape[0] > 1 else 0,
        dim_stride=x.stride(1) if x.shape[1] > 1 else 0,
    )


_SCAN_ENTRIES = ("selective_scan", "selective_scan_bidir")
_tuner: ScanTuner | None = None


def scan_tuner() -> ScanTuner:
    """The process's choice of CUDA scan variant per shape (made on first use, with the library's names)."""
    global _tuner
    if _tuner is None:
        lib = library()
        names = []
        while (name := lib.partool_scan_cuda_variant_name(len(names))) is not None:
            names.append(name.decode())
        _tuner = ScanTuner(names, torch.cuda.is_current_stream_capturing)
    return _tuner


def tuned_scan_variants() -> dict[tuple, str]:
    """Each CUDA scan shape timed so far in this process, with its winning variant's name."""
    return {} if _tuner is None else _tuner.chosen()


@contextlib.contextmanager
def use_scan_variant(name: str | None) -> Iterator[None]:
    """CUDA scans in the block run variant `name` ("auto", "rows/states16", ...; None: the tuned one)."""
    with scan_tuner().forced(name):
        yield


def _scan_key(entry: str, params: ctypes.Structure, device: torch.device) -> tuple:
    p = params.fwd if entry == "selective_scan_bidir" else params
    shape = (p.batch, p.dim, p.dstate, p.length, p.groups, p.io_dtype, p.batch_stride, p.dim_stride)
    return (entry, device.index, *shape)


def launch(entry: str, params: ctypes.Structure, device: torch.device, backward: bool = False) -> None:
    """Run `partool_<entry>_fwd_cuda` (`_bwd_` with `backward`) on the current stream of a CUDA device (a
    forward scan: with its tuned variant), or its `_cpu` twin on PyTorch's threads; KernelError on a
    failing status."""
    lib = library()
    stem = f"partool_{entry}_{'bwd' if backward else 'fwd'}"
    if device.type != "cuda":
        check(getattr(lib, f"{stem}_cpu")(ctypes.byref(params), _cpu_threads()))
        return
    with torch.cuda.device(device):
        stream = _cuda_stream(device)
        if backward or entry not in _SCAN_ENTRIES:
            check(getattr(lib, f"{stem}_cuda")(ctypes.byref(params), stream))
            return
        fn = getattr(lib, f"{stem}_cuda_variant")

        def run(variant: int) -> None:
            check(fn(ctypes.byref(params), variant, stream))

        run(scan_tuner().choose(_scan_key(entry, params, device), run, cuda_event_time))


def add_rms_norm_params(
    x: Tensor, residual: Tensor | None, weight: Tensor, eps: float, residual_out: Tensor | None, out: Tensor
) -> AddRmsNormParams:
    """partool_add_rms_norm_params_t of contiguous x (b, d, l) in a kernel dtype and float32 rest."""
    return AddRmsNormParams(
        batch=x.shape[0],
        dim=x.shape[1],
        length=x.shape[2],
        io_dtype=DTYPES[x.dtype],
        eps=float(eps),
        x=_ptr(x),
        residual=_ptr(residual),
        weight=_ptr(weight),
        residual_out=_ptr(residual_out),
        out=_ptr(out),
    )


def _library_available() -> bool:
    try:
        library()
    except UserError:
        return False
    return True


@torch.compiler.assume_constant_result  # torch.compile cannot trace ctypes: evaluated once, at trace time
def cpu_available() -> bool:
    """The kernels library is built and loads."""
    return _library_available()


@torch.compiler.assume_constant_result
def cuda_available() -> bool:
    """The library holds CUDA kernels and PyTorch sees a CUDA device."""
    if not (_library_available() and torch.cuda.is_available()):
        return False
    return bool(library().partool_kernels_has_cuda())
