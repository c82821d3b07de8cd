"""Constants derived from weights (float32 copies, stacked weights), made once per weight version."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def cached_per_version(owner: object, params: Sequence[Tensor], compute: Callable[[], T]) -> T:
    """compute(), kept on `owner` (a module) until one of `params` changes (pointer, in-place version, dtype
    or device). The kernel paths' derived constants are made once this way instead of on every forward:
    with CUDA graphs each would be a kernel replayed every time. Under torch.compile they are traced into
    the graph instead (no data pointers there)."""
    if torch.compiler.is_compiling():
        return compute()
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    if getattr(owner, "_cached_key", None) != key:
        owner._cached_value, owner._cached_key = compute(), key
    return owner._cached_value
