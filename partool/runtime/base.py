"""One inference interface for every model format: person crops in, attribute probabilities out.

The video pipeline, `partool demo` and users' scripts call `Backend.predict` and never ask which runtime
sits behind it (`partool.runtime.load_backend` picks it from the path). Each backend only implements
`_infer` on an already normalised (n, 3, H, W) float32 batch of at most `max_batch` rows; the base class
preprocesses crops, splits large inputs into chunks and turns logits into probabilities.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partool.artifacts import META, check_meta
from partool.errors import UserError
from partool.runtime.preprocess import preprocess


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in float32."""
    x = np.asarray(x, np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


class Backend(ABC):
    """A loaded PAR model: `predict(crops or batch) -> probs (N, A) float32` plus the artifact's metadata."""

    name = "backend"

    def __init__(self, meta: dict[str, Any], max_batch: int, min_batch: int = 1) -> None:
        self.meta = meta
        self.attributes: list[str] = list(meta["attributes"])
        self.threshold = float(meta.get("threshold", 0.5))
        self.input_size: tuple[int, int] = (int(meta["input_size"][0]), int(meta["input_size"][1]))
        self.mean = [float(v) for v in meta.get("mean", (0.5, 0.5, 0.5))]
        self.std = [float(v) for v in meta.get("std", (0.5, 0.5, 0.5))]
        self.outputs_logits = meta.get("output", "logits") == "logits"
        self.max_batch = int(max_batch)
        self.min_batch = int(min_batch)

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """BGR uint8 crops -> the normalised (N, 3, H, W) float32 batch this model takes."""
        return preprocess(crops, self.input_size, self.mean, self.std)

    def predict(self, inputs: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Probabilities (N, A) for a list of BGR uint8 crops or a preprocessed (N, 3, H, W) float32 batch."""
        if isinstance(inputs, np.ndarray) and inputs.ndim == 4 and inputs.dtype == np.float32:
            expected = (3, *self.input_size)
            if tuple(inputs.shape[1:]) != expected:
                raise ValueError(f"batch has shape {inputs.shape}; this model takes (N, {expected})")
            batch = inputs
        else:
            batch = self.preprocess(list(inputs))
        n = len(batch)
        if n == 0:
            return np.zeros((0, len(self.attributes)), np.float32)
        parts = []
        for start in range(0, n, self.max_batch):
            chunk = batch[start : start + self.max_batch]
            rows = len(chunk)
            if rows < self.min_batch:  # engines with a minimum batch get zero rows, dropped afterwards
                chunk = np.concatenate(
                    [chunk, np.zeros((self.min_batch - rows, *chunk.shape[1:]), np.float32)]
                )
            out = np.asarray(self._infer(np.ascontiguousarray(chunk)), np.float32)[:rows]
            parts.append(out)
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return sigmoid(out) if self.outputs_logits else out

    def warmup(self) -> None:
        """One call on a blank crop before a live run, so that lazy initialisation (sessions' first run,
        allocations, kernel libraries) is not paid by the first frame with a person in it."""
        self.predict(np.zeros((1, 3, *self.input_size), np.float32))

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output (logits or probabilities, as meta['output'] says) for min..max_batch rows."""

    def describe(self) -> dict[str, Any]:
        """What runs where, for summaries and `--json`."""
        return {"backend": self.name, "max_batch": self.max_batch, "input_size": list(self.input_size)}


def read_sidecar_meta(model_file: Path) -> dict[str, Any]:
    """`partool.json` beside an exported `.onnx` / `.engine`: the run's metadata plus the export's."""
    path = model_file.parent / META
    if not path.is_file():
        raise UserError(
            f"{path} is missing; an exported model needs the partool.json that `partool export` writes "
            "beside it (attributes, input size, normalisation) — keep the two files together"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}; re-run `partool export`") from None
    return check_meta(meta, path)


def refuse_export_precision(path: Path, precision: str | None) -> None:
    """UserError when an exported model (`path`) is asked for a precision: it runs at its export's."""
    if (precision or "auto").strip().lower() != "auto":
        raise UserError(
            f"--precision {precision} applies to run folders (PyTorch); {path.name} runs at the precision it was "
            "exported with: re-export with `partool export --fp16` or `--int8` for another one"
        )
