"""Run folders' files and contract: `model.safetensors` + `partool.json`, the format every later stage reads.

A trained model is a folder so that export, eval and predict need nothing but the path: the JSON says
which registry model to build (name + kwargs), the attribute names in output order, the input size,
the normalisation and the decision threshold; the safetensors file holds the weights and runs no code
when read. Files are written to a temporary name in the same folder and renamed into place, so a
killed process leaves either the old file or the new one, never half of either. This module needs
neither torch nor the models, so torch-free runtimes read `partool.json` with it; saving and rebuilding
a model is `partool.models.run_folder`'s job.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from partool import __version__
from partool.errors import UserError

WEIGHTS = "model.safetensors"
META = "partool.json"
REQUIRED_KEYS = (
    "model",
    "model_kwargs",
    "attributes",
    "input_size",
    "mean",
    "std",
    "threshold",
    "data",
    "partool_version",
)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary file name next to `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; run folders are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays and tuples in metadata become plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def build_meta(
    model: Any,
    attributes: list[str],
    data: str,
    threshold: float = 0.5,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The contract keys of `partool.json` for a PARModel built by `create_model` (from its default_cfg).
    `model_kwargs` rebuild the model from the run folder alone (a text model's checkpoint and tokenizer
    paths are replaced by the sizes and token ids they gave)."""
    cfg = getattr(model, "default_cfg", {})
    if "name" not in cfg:
        raise ValueError("model has no default_cfg['name']; build it with partool.models.create_model")
    kwargs = dict(cfg.get("model_kwargs", {}))
    self_contained = getattr(getattr(model, "backbone", None), "self_contained_kwargs", None)
    if self_contained is not None:  # text models: no paths to the files they were built from
        kwargs = self_contained(kwargs)
    meta: dict[str, Any] = {
        "model": cfg["name"],
        "model_kwargs": kwargs,
        "attributes": [str(a) for a in attributes],
        "input_size": [int(v) for v in cfg["input_size"]],
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "threshold": float(threshold),
        "data": data,
        "partool_version": __version__,
    }
    if training is not None:
        meta["training"] = training
    return meta


def check_meta(meta: Any, where: str | Path) -> dict[str, Any]:
    """UserError naming the file unless `meta` carries every contract key with a usable type."""
    if not isinstance(meta, dict):
        raise UserError(f"{where} does not hold a JSON object; it is not a partool run description")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise UserError(
            f"{where} lacks the key(s) {', '.join(missing)}; it was not written by partool train "
            "(re-train, or add the keys by hand)"
        )
    attrs, size = meta["attributes"], meta["input_size"]
    if not isinstance(attrs, list) or not attrs or not all(isinstance(a, str) for a in attrs):
        raise UserError(f"{where}: 'attributes' must be a non-empty list of names")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise UserError(f"{where}: 'input_size' must be [height, width], got {size!r}")
    if not isinstance(meta["model_kwargs"], dict):
        raise UserError(f"{where}: 'model_kwargs' must be an object")
    return meta


def write_meta(run_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Atomically (re)write `partool.json` in `run_dir` (e.g. to add training history)."""
    path = Path(run_dir) / META
    atomic_write_json(path, check_meta(meta, path))
    return path


def read_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(run folder, metadata) for a run folder or its `partool.json`; UserError when absent or damaged."""
    path = Path(path)
    meta_path = path / META if path.is_dir() else path
    if path.is_dir() and not meta_path.is_file():
        raise UserError(
            f"{path} is a folder but holds no {META}; pass the folder `partool train --out` wrote"
        )
    if not meta_path.is_file():
        raise UserError(
            f"run {path} does not exist; pass a run folder written by `partool train` (e.g. runs/NAME)"
        )
    if meta_path.name != META:
        raise UserError(f"{path} is not a run folder or its {META}; pass the folder `partool train` wrote")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            f"cannot read {meta_path}: {e}; the file is damaged, re-run `partool train`"
        ) from None
    return meta_path.parent, check_meta(meta, meta_path)
