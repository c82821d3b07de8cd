"""Run plugin graphs (partool::SelectiveScan nodes) on ONNX Runtime CPU through a custom op.

Two ways, tried in this order by `create_session` (`kernel_backend()` says which one a session gets):

1. "cpp": the C++ custom-op library `libpartool_ort_ops` (plugins/ort, built by `partool plugins build`
   when ONNX Runtime's C header is found; `partool.plugins.find_ort_custom_op_library`). ONNX Runtime
   loads it with `register_custom_ops_library` and runs the exported graph UNCHANGED (domain partool, the
   packed inputs); each node calls libpartool_kernels' CPU scan on ORT's own buffers, float32 or float16,
   on ORT's intra-op threads.
2. "kernels" / "numpy": an onnxruntime-extensions Python op (`onnx_op`) that calls the same CPU kernel
   through ctypes when `libpartool_kernels` is built, else a NumPy recurrence (correct, only good for
   checking). onnxruntime-extensions only knows Python ops in its own domain and with a fixed input count,
   so `prepare_model` rewrites a copy of the graph: each SelectiveScan node moves to domain
   `ai.onnx.contrib` and gets all eight inputs, an empty tensor standing in for each absent one (has_D /
   has_z / has_delta_bias say which). float32 only.

Measured overhead of the Python op (ORT 1.32, onnxruntime-extensions 0.15.2, 2 shared cores):
onnxruntime-extensions returns a Python op's output as a Python list (`ndarray.tolist()`) that ORT copies
back, about 10 ms per call for one (1, 768, 197) float32 output — more than the kernel itself, 2 s per
Vim-S forward. The C++ library has no such cost; it is the fast path for CPU-only devices.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np
import onnx

from partool.errors import UserError
from partool.ops.onnx import OPTIONAL_INPUTS, PLUGIN_DOMAIN, PLUGIN_OP

ORT_OP_DOMAIN = "ai.onnx.contrib"  # the only domain onnxruntime-extensions serves Python ops from
_INT_ATTRS = ("delta_softplus", "reverse", "has_D", "has_z", "has_delta_bias")
_STR_ATTRS = ("plugin_namespace", "plugin_version")


class _ScanParams(ctypes.Structure):
    """`partool_scan_params_t` of plugins/kernels/include/partool_kernels.h (ABI version 1)."""

    _fields_ = [
        ("batch", ctypes.c_int),
        ("dim", ctypes.c_int),
        ("dstate", ctypes.c_int),
        ("length", ctypes.c_int),
        ("groups", ctypes.c_int),
        ("io_dtype", ctypes.c_int),
        ("u", ctypes.c_void_p),
        ("delta", ctypes.c_void_p),
        ("A", ctypes.c_void_p),
        ("B", ctypes.c_void_p),
        ("C", ctypes.c_void_p),
        ("D", ctypes.c_void_p),
        ("z", ctypes.c_void_p),
        ("delta_bias", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("last_state", ctypes.c_void_p),
        ("delta_softplus", ctypes.c_int),
        ("reverse", ctypes.c_int),
    ]


SCAN_OPS = ("auto", "cpp", "python")


@functools.cache
def _kernels() -> ctypes.CDLL | None:
    """The kernels library when built and of ABI version 1, else None (NumPy fallback)."""
    from partool.plugins import find_kernels_library

    path = find_kernels_library()
    if path is None:
        return None
    lib = ctypes.CDLL(str(path))
    if lib.partool_kernels_abi_version() != 1:
        raise UserError(f"{path} has kernel ABI {lib.partool_kernels_abi_version()}, expected 1; rebuild it")
    lib.partool_selective_scan_fwd_cpu.argtypes = [ctypes.POINTER(_ScanParams), ctypes.c_int]
    lib.partool_selective_scan_fwd_cpu.restype = ctypes.c_int
    lib.partool_last_error_message.restype = ctypes.c_char_p
    return lib


def _cpp_library() -> Path | None:
    from partool.plugins import find_ort_custom_op_library

    return find_ort_custom_op_library()


def kernel_backend(scan_op: str = "auto") -> str:
    """What runs SelectiveScan nodes in sessions from `create_session(..., scan_op=scan_op)`: 'cpp' (the
    C++ custom-op library), or the Python op calling libpartool_kernels ('kernels') or NumPy ('numpy')."""
    if scan_op != "python" and _cpp_library() is not None:
        return "cpp"
    return "kernels" if _kernels() is not None else "numpy"


def _as_4d(x: np.ndarray) -> np.ndarray:
    return x[:, None] if x.ndim == 3 else x


def scan_kernels(
    lib: ctypes.CDLL, u, delta, A, B, C, D, z, delta_bias, softplus: int, reverse: int
) -> np.ndarray:
    """One call of `partool_selective_scan_fwd_cpu` on float32 arrays (None = absent input)."""
    arrays = [
        np.ascontiguousarray(x, np.float32) if x is not None else None
        for x in (u, delta, A, B, C, D, z, delta_bias)
    ]
    u, delta, A, B, C, D, z, delta_bias = arrays
    B, C = _as_4d(B), _as_4d(C)
    out = np.empty_like(u)
    ptr = lambda x: None if x is None else x.ctypes.data  # noqa: E731
    p = _ScanParams(
        u.shape[0], u.shape[1], A.shape[1], u.shape[2], B.shape[1], 0,
        ptr(u), ptr(delta), ptr(A), ptr(B), ptr(C), ptr(D), ptr(z), ptr(delta_bias), ptr(out), None,
        softplus, reverse,
    )  # fmt: skip
    status = lib.partool_selective_scan_fwd_cpu(ctypes.byref(p), 0)
    if status != 0:
        raise RuntimeError(f"partool_selective_scan_fwd_cpu: {lib.partool_last_error_message().decode()}")
    return out


def scan_numpy(u, delta, A, B, C, D, z, delta_bias, softplus: int, reverse: int) -> np.ndarray:
    """The contract's recurrence in NumPy, one step at a time (correctness only)."""
    b, d, length = u.shape
    B, C = _as_4d(B), _as_4d(C)
    g = B.shape[1]
    Bx = np.repeat(B, d // g, axis=1)  # (b, d, n, l)
    Cx = np.repeat(C, d // g, axis=1)
    dt = delta.astype(np.float32) + (0 if delta_bias is None else delta_bias[:, None])
    if softplus:
        dt = np.logaddexp(dt, 0).astype(np.float32)
    h = np.zeros((b, d, A.shape[1]), np.float32)
    y = np.empty((b, d, length), np.float32)
    for t in range(length - 1, -1, -1) if reverse else range(length):
        h = np.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[..., None] * Bx[..., t]
        y[:, :, t] = (h * Cx[..., t]).sum(-1)
    if D is not None:
        y += D[:, None] * u
    if z is not None:
        y *= z / (1 + np.exp(-z))
    return y


@functools.cache
def _register_op() -> str:
    """Register the Python op once per process; returns the onnxruntime-extensions library path."""
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError:
        raise UserError(
            "running partool::SelectiveScan nodes on ONNX Runtime needs onnxruntime-extensions: "
            "pip install onnxruntime-extensions (or export with --scan portable)"
        ) from None
    attrs = {a: PyCustomOpDef.dt_int64 for a in _INT_ATTRS} | {a: PyCustomOpDef.dt_string for a in _STR_ATTRS}

    @onnx_op(
        op_type=PLUGIN_OP, inputs=[PyCustomOpDef.dt_float] * 8, outputs=[PyCustomOpDef.dt_float], attrs=attrs
    )
    def selective_scan(u, delta, A, B, C, D, z, delta_bias, **kw):
        D, z, delta_bias = (
            x if kw[f"has_{n}"] else None for x, n in zip((D, z, delta_bias), OPTIONAL_INPUTS, strict=True)
        )
        args = (u, delta, A, B, C, D, z, delta_bias, kw["delta_softplus"], kw["reverse"])
        lib = _kernels()
        return scan_kernels(lib, *args) if lib is not None else scan_numpy(*args)

    return get_library_path()


def prepare_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a plugin graph whose SelectiveScan nodes ONNX Runtime runs with the registered op."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    empty = "partool_absent_input"
    used = False
    for node in graph.node:
        if node.domain != PLUGIN_DOMAIN or node.op_type != PLUGIN_OP:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        names = [f"has_{n}" for n in OPTIONAL_INPUTS]
        if any(n in attrs for n in names):  # the plugin's input rule, see partool.ops.onnx
            flags = [int(attrs.get(n, 0)) for n in names]
        else:  # no has_*: the inputs are a prefix of u, delta, A, B, C, D, z, delta_bias
            flags = [int(i < len(node.input) - 5) for i in range(3)]
        present = iter(node.input[5:])
        full = list(node.input[:5]) + [next(present) if f else empty for f in flags]
        used |= not all(flags)
        node.ClearField("input")
        node.input.extend(full)
        kept = [a for a in node.attribute if a.name not in names]
        node.ClearField("attribute")
        node.attribute.extend(
            kept + [onnx.helper.make_attribute(n, f) for n, f in zip(names, flags, strict=True)]
        )
        node.domain = ORT_OP_DOMAIN
    if used:
        graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(0, np.float32), empty))
    if not any(o.domain == ORT_OP_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(ORT_OP_DOMAIN, 1))
    return out


def _register_cpp(options, library: Path) -> None:
    try:
        options.register_custom_ops_library(str(library))
    except Exception as e:  # onnxruntime raises its own Fail/RuntimeException types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"ONNX Runtime cannot load the custom-op library {library}: {first}; rebuild it with "
            "`partool plugins build`, or unset PARTOOL_ORT_OPS_LIB"
        ) from None


def create_session(
    model: str | Path | onnx.ModelProto,
    threads: int = 0,
    providers: list[str] | None = None,
    scan_op: str = "auto",
):
    """An onnxruntime.InferenceSession for any partool ONNX file, plugin graphs included.

    `scan_op` picks how SelectiveScan nodes run: "auto" (the C++ library when built, else the Python op),
    "cpp" (the C++ library or a UserError saying how to build it), "python" (the onnxruntime-extensions op).
    """
    import onnxruntime as ort

    if scan_op not in SCAN_OPS:
        raise UserError(f"unknown scan op {scan_op!r}; choose one of: {', '.join(SCAN_OPS)}")
    on_disk = not isinstance(model, onnx.ModelProto)
    proto = onnx.load(str(model), load_external_data=False) if on_disk else model
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    providers = providers or ["CPUExecutionProvider"]
    if any(n.domain == PLUGIN_DOMAIN and n.op_type == PLUGIN_OP for n in proto.graph.node):
        library = _cpp_library() if scan_op != "python" else None
        if library is not None:
            _register_cpp(options, library)
        elif scan_op == "cpp":
            raise UserError(
                "the ONNX Runtime custom-op library (libpartool_ort_ops) is not built; run "
                "`partool plugins build --ort-include DIR` with DIR holding onnxruntime_c_api.h, "
                "or set PARTOOL_ORT_OPS_LIB"
            )
        else:
            options.register_custom_ops_library(_register_op())
            proto = onnx.load(str(model)) if on_disk else proto  # the rewrite needs the weights
            return ort.InferenceSession(
                prepare_model(proto).SerializeToString(), options, providers=providers
            )
    source = str(model) if on_disk else proto.SerializeToString()
    return ort.InferenceSession(source, options, providers=providers)
