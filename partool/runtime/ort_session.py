"""ONNX Runtime sessions for any partool ONNX file, plugin graphs (partool::SelectiveScan nodes) included.

A portable graph (standard ONNX ops only) gets a plain InferenceSession, and this module then imports
neither torch nor partool.ops: an edge device runs it with onnxruntime and NumPy alone. A plugin graph's
SelectiveScan nodes run one of two ways, tried in this order by `create_session` (`kernel_backend()` says
which one a session gets):

1. "cpp": the C++ custom-op library `libpartool_ort_ops` (plugins/ort, built by `partool plugins build`
   when ONNX Runtime's C header is found; `partool.plugins.find_ort_custom_op_library`). ONNX Runtime
   loads it with `register_custom_ops_library` and runs the exported graph UNCHANGED (domain partool, the
   packed inputs); each node calls libpartool_kernels' CPU scan on ORT's own buffers, float32 or float16,
   on ORT's intra-op threads. The fast path for CPU-only devices.
2. "cpu" / "chunked": the onnxruntime-extensions Python op of `partool.runtime.ort_python_op`, which runs
   partool's own `selective_scan` (and so loads torch): correct everywhere, but each call pays a copy of
   its output back into ORT. `benchmarks/onnx_cpu.py` measures the paths (its `scan_custom_op` field says
   which one ran); its results are in `benchmarks/results/`.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from partool.errors import UserError
from partool.plugins import PLUGIN_DOMAIN, PLUGIN_OP, find_ort_custom_op_library

SCAN_OPS = ("auto", "cpp", "python")


def has_plugin_nodes(model: onnx.ModelProto) -> bool:
    """Whether the graph holds partool::SelectiveScan nodes (a `--scan plugin` export)."""
    return any(n.domain == PLUGIN_DOMAIN and n.op_type == PLUGIN_OP for n in model.graph.node)


def kernel_backend(scan_op: str = "auto") -> str:
    """What runs SelectiveScan nodes in sessions from `create_session(..., scan_op=scan_op)`: 'cpp' (the
    C++ custom-op library), else the partool scan backend the Python op calls ('cpu' kernel or 'chunked')."""
    if scan_op != "python" and find_ort_custom_op_library() is not None:
        return "cpp"
    from partool.runtime.ort_python_op import python_op_backend

    return python_op_backend()


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
    if has_plugin_nodes(proto):
        library = find_ort_custom_op_library() if scan_op != "python" else None
        if library is not None:
            _register_cpp(options, library)
        elif scan_op == "cpp":
            raise UserError(
                "the ONNX Runtime custom-op library (libpartool_ort_ops) is not built; run "
                "`partool plugins build --ort-include DIR` with DIR holding onnxruntime_c_api.h, "
                "or set PARTOOL_ORT_OPS_LIB"
            )
        else:
            from partool.runtime.ort_python_op import prepare_model, register_op

            options.register_custom_ops_library(register_op())
            proto = onnx.load(str(model)) if on_disk else proto  # the rewrite needs the weights
            return ort.InferenceSession(
                prepare_model(proto).SerializeToString(), options, providers=providers
            )
    source = str(model) if on_disk else proto.SerializeToString()
    return ort.InferenceSession(source, options, providers=providers)
