"""`--device` strings (auto, cpu, cuda, cuda:N), parsed in one place for every runtime.

PyTorch, ONNX Runtime and TensorRT each turn the parsed device into their own handle (a torch.device,
execution providers, a CUDA ordinal), but they all accept the same spellings and reject the same typos
with the same message; parsing here needs no torch, so torch-free runtimes can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from partool.errors import UserError

DeviceKind = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class Device:
    """A parsed `--device`: `auto` (CUDA when the runtime has it, else CPU), `cpu`, or `cuda` with an optional
    GPU index (None: the runtime's default GPU)."""

    kind: DeviceKind
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(text: str | None) -> Device:
    """'auto' (also for None or ''), 'cpu', 'cuda' or 'cuda:N', any case; UserError for anything else."""
    spec = (text or "auto").strip().lower()
    if spec in ("auto", "cpu", "cuda"):
        return Device(spec)  # type: ignore[arg-type]
    kind, _, index = spec.partition(":")
    if kind == "cuda" and index.isascii() and index.isdigit():
        return Device("cuda", int(index))
    raise UserError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N")
