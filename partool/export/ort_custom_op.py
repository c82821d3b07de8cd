"""Run plugin graphs (partool::SelectiveScan nodes) on ONNX Runtime CPU through a custom op.

Two ways, tried in this order by `create_session` (`kernel_backend()` says which one a session gets):

1. "cpp": the C++ custom-op library `libpartool_ort_ops` (plugins/ort, built by `partool plugins build`
   when ONNX Runtime's C header is found; `partool.plugins.find_ort_custom_op_library`). ONNX Runtime
   loads it with `register_custom_ops_library` and runs the exported graph UNCHANGED (domain partool, the
   packed inputs); each node calls libpartool_kernels' CPU scan on ORT's own buffers, float32 or float16,
   on ORT's intra-op threads.
2. "cpu" / "chunked": an onnxruntime-extensions Python op (`onnx_op`) that runs partool's own
   `selective_scan` on the node's arrays: the same CPU kernel when `libpartool_kernels` is built, else the
   chunked PyTorch reference (correct, only good for checking). onnxruntime-extensions only knows Python ops in its own domain and with a fixed input count,
   so `prepare_model` rewrites a copy of the graph: each SelectiveScan node moves to domain
   `ai.onnx.contrib` and gets all eight inputs, an empty tensor standing in for each absent one (has_D /
   has_z / has_delta_bias say which). float32 only.

Measured overhead of the Python op (ORT 1.32, onnxruntime-extensions 0.15.2, 2 shared cores):
onnxruntime-extensions returns a Python op's output as a Python list (`ndarray.tolist()`) that ORT copies
back, about 10 ms per call for one (1, 768, 197) float32 output — more than the kernel itself, 2 s per
Vim-S forward. The C++ library has no such cost; it is the fast path for CPU-only devices.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import torch

from partool.errors import UserError
from partool.ops import resolve_backend, selective_scan
from partool.ops.onnx import OPTIONAL_INPUTS, PLUGIN_DOMAIN, PLUGIN_OP

ORT_OP_DOMAIN = "ai.onnx.contrib"  # the only domain onnxruntime-extensions serves Python ops from
_INT_ATTRS = ("delta_softplus", "reverse", "has_D", "has_z", "has_delta_bias")
_STR_ATTRS = ("plugin_namespace", "plugin_version")


SCAN_OPS = ("auto", "cpp", "python")


def _cpp_library() -> Path | None:
    from partool.plugins import find_ort_custom_op_library

    return find_ort_custom_op_library()


def kernel_backend(scan_op: str = "auto") -> str:
    """What runs SelectiveScan nodes in sessions from `create_session(..., scan_op=scan_op)`: 'cpp' (the
    C++ custom-op library), else the partool scan backend the Python op calls ('cpu' kernel or 'chunked')."""
    if scan_op != "python" and _cpp_library() is not None:
        return "cpp"
    return resolve_backend("auto", torch.device("cpu")).name


def scan_python(u, delta, A, B, C, D, z, delta_bias, softplus: int, reverse: int) -> np.ndarray:
    """The Python op's body: partool's own scan (the CPU kernel when built, else the chunked reference)
    on zero-copy torch views of ORT's float32 arrays (None = absent input)."""
    as_tensor = lambda x: None if x is None else torch.from_numpy(np.ascontiguousarray(x, np.float32))  # noqa: E731
    with torch.inference_mode():
        out = selective_scan(*map(as_tensor, (u, delta, A, B, C, D, z, delta_bias)),
                             delta_softplus=bool(softplus), reverse=bool(reverse))  # fmt: skip
    return out.numpy()


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
        return scan_python(u, delta, A, B, C, D, z, delta_bias, kw["delta_softplus"], kw["reverse"])

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
