"""How torch.onnx writes the scan lowerings: one `partool::SelectiveScan` plugin node, or standard ONNX ops.

`scan_lowering(kind)` enters `partool.ops.lowering`'s context, in which scans trace as that lowering's
custom op, and yields `TRANSLATIONS`, which tells torch.onnx's (dynamo) exporter how to write each op.

Plugin node (docs/architecture.md, "ONNX node"): op_type SelectiveScan, domain partool, attributes
delta_softplus, reverse, plugin_namespace="partool", plugin_version="1". Inputs follow the TensorRT plugin's
rule (plugins/tensorrt/scan_plugin_logic.h): TensorRT's ONNX parser turns an empty input name into a null
tensor, which a plugin cannot take, so the node lists u, delta, A, B, C and then only the PRESENT optional
inputs of D, z, delta_bias, packed in that order, and says which are present with the int attributes
has_D, has_z, has_delta_bias (always all three written).

Portable subgraph: of the forms tried on ONNX Runtime 1.32's CPU provider while this lowering was written
(an ONNX `Scan` over time; every step unrolled; chunks of 8, 16 or 32 steps unrolled), chunks of 32 steps
unrolled with the decays computed per chunk and the state laid out (n, d) ran fastest, about twice as fast
as `Scan`, and that is what the portable lowering writes (`benchmarks/onnx_cpu.py` times the whole model
today; its results are in `benchmarks/results/`). A chunk's decays and inputs (32 × b·d·n
floats) stay in cache; the (n, d) layout makes every broadcast run along d contiguous floats, which ONNX
Runtime vectorises. Softplus is written as its stable decomposition max(x, 0) + log(1 + exp(-|x|)), which
never overflows and ran faster than ONNX's Softplus. A closed form over a chunk (exp of the masked segment
sums, Mamba-2 style) needs T times more exponentials than the recurrence because A is per (channel, state)
here, and the exponentials already dominate, so it was not pursued. The recurrence only multiplies by
exp(Δ·A) ≤ 1 (A < 0, Δ ≥ 0), so the graph is stable for any Δ. `reverse` is the same graph walked from
the last chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
import onnxscript
import torch
from onnxscript import opset18 as op

from partool.errors import UserError
from partool.ops.lowering import LOWERINGS, lowering
from partool.plugins import PLUGIN_DOMAIN, PLUGIN_OP, PLUGIN_VERSION

PORTABLE_CHUNK = 32  # steps per unrolled chunk (the module docstring says why)
OPTIONAL_INPUTS = ("D", "z", "delta_bias")


def _register_schema() -> None:
    """Declare partool::SelectiveScan to onnx, which onnxscript needs to build the node (and checker uses)."""
    if onnx.defs.has(PLUGIN_OP, PLUGIN_DOMAIN):
        return
    schema = onnx.defs.OpSchema
    param, attr, optional = schema.FormalParameter, schema.Attribute, schema.FormalParameterOption.Optional
    io, fp32 = "T", "F"
    inputs = [param("u", io), param("delta", io), param("A", fp32), param("B", io), param("C", io)]
    # The present ones of D, z, delta_bias, packed (has_* say which): positions, not names.
    inputs += [param(f"optional_{i}", fp32, param_option=optional) for i in range(3)]
    ints = ["delta_softplus", "reverse", "has_D", "has_z", "has_delta_bias"]
    attributes = [attr(a, schema.AttrType.INT, "0 or 1") for a in ints]
    attributes += [
        attr(a, schema.AttrType.STRING, "selects the TensorRT plugin")
        for a in ("plugin_namespace", "plugin_version")
    ]
    types = ["tensor(float)", "tensor(float16)"]
    onnx.defs.register_schema(
        schema(
            PLUGIN_OP,
            PLUGIN_DOMAIN,
            1,
            doc="Mamba selective scan (partool docs/architecture.md, 'Selective scan' and 'ONNX node').",
            inputs=inputs,
            outputs=[param("out", io)],
            type_constraints=[(io, types, "u, delta, B, C, z, out"), (fp32, types, "A, D, delta_bias")],
            attributes=attributes,
        )
    )


_register_schema()
_PARTOOL_OPSET = onnxscript.values.Opset(PLUGIN_DOMAIN, 1)


def plugin_node(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False):
    """onnxscript translation of `partool::selective_scan`: one SelectiveScan node (inputs packed)."""
    present = [x for x in (D, z, delta_bias) if x is not None]
    return getattr(_PARTOOL_OPSET, PLUGIN_OP)(
        u,
        delta,
        A,
        B,
        C,
        *present,
        delta_softplus=int(delta_softplus),
        reverse=int(reverse),
        has_D=int(D is not None),
        has_z=int(z is not None),
        has_delta_bias=int(delta_bias is not None),
        plugin_namespace=PLUGIN_DOMAIN,
        plugin_version=PLUGIN_VERSION,
    )


# A typed float32 scalar (a `value_float` Constant is widened to double by onnxslim 0.1.98).
_ONE_F32 = onnx.numpy_helper.from_array(np.ones((), np.float32), "one")


def _ints(*values: int) -> Any:
    return op.Constant(value_ints=list(values))


def _static(dim: Any, what: str) -> int:
    if not isinstance(dim, int):
        raise UserError(
            f"the portable scan lowering needs a fixed {what}, got {dim}; "
            "export with static shapes (only the batch may be dynamic)"
        )
    return dim


def _split(x: Any, sizes: list[int]) -> list[Any]:
    """Pieces of `sizes` steps along axis 0: one Split when equal (Split's sizes input cannot be traced
    here with an output count), else one Slice per piece."""
    if len(sizes) == 1:
        return [x]
    if len(set(sizes)) == 1:
        return list(op.Split(x, axis=0, num_outputs=len(sizes)))
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    return [op.Slice(x, _ints(s), _ints(s + size), _ints(0)) for s, size in zip(starts, sizes, strict=True)]


def portable_subgraph(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False
):
    """onnxscript translation of `partool::selective_scan_portable`: the chunked recurrence, unrolled.

    Time-major throughout, state (b, g, n, c) with c = d / g channels per group:
    a_t = exp(Δ_t A), x_t = Δ_t u_t B_t per chunk; h_t = a_t h_{t-1} + x_t per step; y = C_t · h_t per chunk.
    """
    length = _static(u.shape[2], "sequence length")
    dim, n = _static(A.shape[0], "model width"), _static(A.shape[1], "state size")
    groups = _static(B.shape[1], "number of B/C groups")
    c = dim // groups
    io_type = u.dtype
    f32 = onnx.TensorProto.FLOAT
    if io_type != onnxscript.ir.DataType.FLOAT:
        u, delta, B, C = (op.Cast(x, to=f32) for x in (u, delta, B, C))
        z = None if z is None else op.Cast(z, to=f32)
    dt = delta if delta_bias is None else op.Add(delta, op.Unsqueeze(delta_bias, _ints(1)))
    if delta_softplus:  # max(x, 0) + log(1 + exp(-|x|)): no overflow, and faster than ORT's Softplus
        one = op.Constant(value=_ONE_F32)
        dt = op.Add(op.Relu(dt), op.Log(op.Add(op.Exp(op.Neg(op.Abs(dt))), one)))
    time_major = _ints(length, -1, groups, 1, c)
    dt5 = op.Reshape(op.Transpose(dt, perm=[2, 0, 1]), time_major)  # (l, b, g, 1, c)
    du5 = op.Reshape(op.Transpose(op.Mul(dt, u), perm=[2, 0, 1]), time_major)
    At = op.Transpose(op.Reshape(A, _ints(groups, c, n)), perm=[0, 2, 1])  # (g, n, c)
    B5 = op.Unsqueeze(op.Transpose(B, perm=[3, 0, 1, 2]), _ints(4))  # (l, b, g, n, 1)
    C5 = op.Unsqueeze(op.Transpose(C, perm=[3, 0, 1, 2]), _ints(3))  # (l, b, g, 1, n)

    sizes = [min(PORTABLE_CHUNK, length - s) for s in range(0, length, PORTABLE_CHUNK)]
    pieces = [_split(x, sizes) for x in (dt5, du5, B5, C5)]
    order = range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))
    ys: list[Any] = [None] * len(sizes)
    h = None
    for k in order:
        dt_k, du_k, B_k, C_k = (p[k] for p in pieces)
        a_steps = _split(op.Exp(op.Mul(dt_k, At)), [1] * sizes[k])  # (1, b, g, n, c) each
        x_steps = _split(op.Mul(du_k, B_k), [1] * sizes[k])
        states: list[Any] = [None] * sizes[k]
        for t in reversed(range(sizes[k])) if reverse else range(sizes[k]):
            h = x_steps[t] if h is None else op.Add(op.Mul(a_steps[t], h), x_steps[t])
            states[t] = h
        H = states[0] if len(states) == 1 else op.Concat(*states, axis=0)
        ys[k] = op.MatMul(C_k, H)  # (T, b, g, 1, n) @ (T, b, g, n, c) -> (T, b, g, 1, c)
    y = ys[0] if len(ys) == 1 else op.Concat(*ys, axis=0)
    y = op.Transpose(op.Reshape(y, _ints(length, -1, dim)), perm=[1, 2, 0])  # (b, d, l)
    if D is not None:
        y = op.Add(y, op.Mul(u, op.Unsqueeze(D, _ints(1))))
    if z is not None:
        y = op.Mul(y, op.Mul(z, op.Sigmoid(z)))
    return y if io_type == onnxscript.ir.DataType.FLOAT else op.Cast(y, to=io_type)


TRANSLATIONS: dict[Any, Callable[..., Any]] = {
    torch.ops.partool.selective_scan.default: plugin_node,
    torch.ops.partool.selective_scan_portable.default: portable_subgraph,
}


@contextmanager
def scan_lowering(kind: str) -> Iterator[dict[Any, Callable[..., Any]]]:
    """Within the block, scans trace as the `kind` ("plugin" | "portable") lowering; yields the exporter's
    custom translation table."""
    with lowering(kind):
        yield TRANSLATIONS


__all__ = ["LOWERINGS", "TRANSLATIONS", "plugin_node", "portable_subgraph", "scan_lowering"]
