"""Save a model into a run folder and rebuild it from one (`model.safetensors` + `partool.json`).

The files' contract (keys, atomic writes, reading the metadata) is `partool.artifacts`, which stays free
of torch for the runtimes that only read metadata; this module is the half that needs the model classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from partool import __version__
from partool.artifacts import META, WEIGHTS, atomic_path, check_meta, read_meta, write_meta
from partool.errors import UserError
from partool.models import create_model


def save_run(run_dir: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write the weights and then the metadata of `model` into `run_dir`; returns the folder.

    Shared tensors are stored once (safetensors' `save_model`), so tied weights survive the round trip.
    The weights go first: a reader never sees metadata that points at weights not yet written.
    """
    from safetensors.torch import save_model

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_meta(meta, run_dir / META)
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_model(_unwrap(model), tmp, metadata={"partool_version": __version__, "model": meta["model"]})
    write_meta(run_dir, meta)
    return run_dir


def load_run(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a run folder (or its `partool.json`) in eval mode on `device`, with its metadata."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    run_dir, meta = read_meta(path)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise UserError(
            f"{weights} is missing; the run has no saved weights yet (training stopped before its first "
            "validation?) — finish it with `partool train --resume`"
        )
    model = create_model(
        meta["model"], len(meta["attributes"]), img_size=tuple(meta["input_size"]), **meta["model_kwargs"]
    )
    try:
        load_model(model, str(weights), strict=True, device="cpu")
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {weights}: {e}; the file is damaged, re-run `partool train`") from None
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(
            f"{weights} does not match the model described in {run_dir / META} ({first}); "
            "the two files come from different runs"
        ) from None
    return model.to(device).eval(), meta


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
