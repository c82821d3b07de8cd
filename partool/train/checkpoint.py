"""Resume state `last.pt`: everything a killed run needs to continue as if it had never stopped.

The file holds model, optimiser and grad-scaler state, the epoch reached, the best metric, the history
and the random-number-generator states of torch (CPU and CUDA), numpy and Python. It is read with
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers, so the RNG
states are stored as tensors and ints rather than the tuples the libraries hand out. It is written to
a temporary file and renamed, so a kill during the write leaves the previous epoch's file intact.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partool.artifacts import atomic_path
from partool.errors import UserError

LAST = "last.pt"
FORMAT = 1  # bump when the layout changes incompatibly


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch, CUDA, numpy and Python as tensors and plain values."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA states only when the same number of GPUs is visible)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write `state` (plus the format number) to `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save({"format": FORMAT, **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a resume state with `weights_only=True`; UserError naming the file when it is absent or damaged."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"nothing to resume: {path} does not exist; start the run without --resume "
            "(or point --out at the folder of the interrupted run)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"cannot read resume state {path} ({first}); it is damaged or not partool's — "
            "delete it and start again with --force"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a partool resume state of format {FORMAT}; start again with --force")
    return state
