"""The Python fallback for partool::SelectiveScan nodes on ONNX Runtime, used when libpartool_ort_ops is absent.

An onnxruntime-extensions Python op (`onnx_op`) runs partool's own `selective_scan` on the node's arrays:
the CPU kernel when `libpartool_kernels` is built, else the chunked PyTorch reference (correct, only good
for checking). onnxruntime-extensions only knows Python ops in its own domain and with a fixed input
count, so `prepare_model` rewrites a copy of the graph: each SelectiveScan node moves to domain
`ai.onnx.contrib` and gets all eight inputs, an empty tensor standing in for each absent one (has_D /
has_z / has_delta_bias say which). float32 only. This is the one runtime module that needs torch; only
`partool.runtime.ort_session` imports it, and only for a plugin graph without the C++ library.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import torch

from partool.errors import UserError
from partool.ops import resolve_backend, selective_scan
from partool.ops.onnx import OPTIONAL_INPUTS
from partool.plugins import PLUGIN_DOMAIN, PLUGIN_OP

ORT_OP_DOMAIN = "ai.onnx.contrib"  # the only domain onnxruntime-extensions serves Python ops from
_INT_ATTRS = ("delta_softplus", "reverse", "has_D", "has_z", "has_delta_bias")
_STR_ATTRS = ("plugin_namespace", "plugin_version")


def python_op_backend() -> str:
    """The partool scan backend the Python op calls on the CPU: 'cpu' (the kernel) or 'chunked'."""
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
def register_op() -> str:
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
