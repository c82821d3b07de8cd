"""Which ONNX lowering a traced selective scan takes: an explicit, scoped context instead of a backend.

Inside `lowering("plugin" | "portable")` every `selective_scan` call becomes one opaque custom op,
`partool::selective_scan` (exported as the TensorRT plugin node) or `partool::selective_scan_portable`
(exported as standard ONNX ops); `partool.ops.onnx` says how torch.onnx writes each. In eager mode the ops
run the chunked reference, so a model inside the block still computes the right answer. The choice lives in
a ContextVar: it holds for the block (and the thread or task that entered it) only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

from partool.errors import UserError
from partool.ops.scan_reference import scan_reference_fn

LOWERINGS = ("plugin", "portable")
_current: ContextVar[str | None] = ContextVar("partool_scan_lowering", default=None)


def current_lowering() -> str | None:
    """The lowering in force ("plugin" | "portable"), or None outside `lowering()`."""
    return _current.get()


@contextmanager
def lowering(kind: str) -> Iterator[None]:
    """Scans inside the block trace as the `kind` lowering."""
    if kind not in LOWERINGS:
        raise UserError(f"unknown scan lowering {kind!r}; choose one of: {', '.join(LOWERINGS)}")
    token = _current.set(kind)
    try:
        yield
    finally:
        _current.reset(token)


def _reference_out(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
    delta_bias: Tensor | None, delta_softplus: bool, reverse: bool,
) -> Tensor:  # fmt: skip
    """The scan as one opaque op (B, C are (b, g, n, l)), computed in eager mode by the chunked reference."""
    return scan_reference_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)[0]


# partool::selective_scan is exported as the partool::SelectiveScan plugin node, partool::selective_scan_portable
# as the chunked subgraph of standard ONNX ops (partool.ops.onnx).
_OPS = {
    kind: torch.library.custom_op(f"partool::{name}", _reference_out, mutates_args=())
    for kind, name in (("plugin", "selective_scan"), ("portable", "selective_scan_portable"))
}
for _op in _OPS.values():
    _op.register_fake(lambda u, *_: torch.empty_like(u))


def lowered_scan(
    kind: str, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse
) -> tuple[Tensor, Tensor]:
    """The scan as the `kind` lowering's custom op. An exported graph has no state output: the last state
    is an empty tensor, so any use of it fails loudly."""
    out = _OPS[kind](u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    return out, u.new_empty(0, dtype=torch.float32)
