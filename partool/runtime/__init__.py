"""Inference backends with one interface: `load_backend(path).predict(crops) -> probabilities`.

torch (run folders), onnxruntime (`.onnx`) and tensorrt (`.engine`, torch-free); see `base.py`. A backend's
module is imported only when a model of its kind is loaded, so a `.onnx` or an `.engine` runs without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from partool.artifacts import META
from partool.errors import UserError
from partool.runtime.base import Backend, refuse_export_precision
from partool.runtime.preprocess import preprocess

__all__ = ["BACKENDS", "Backend", "load_backend", "preprocess"]

Opener = Callable[[Path, str, str | Path | None], Backend]  # (model file, device, plugin) -> backend


def _onnxruntime(path: Path, device: str, plugin: str | Path | None) -> Backend:
    from partool.runtime.onnx_backend import OnnxBackend

    return OnnxBackend(path, device=device)


def _tensorrt(path: Path, device: str, plugin: str | Path | None) -> Backend:
    from partool.runtime.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path, device=device, plugin=plugin)


# An exported model's runtime, by file suffix; a run folder (or its partool.json) runs on PyTorch.
BACKENDS: dict[str, Opener] = {
    ".onnx": _onnxruntime,
    ".engine": _tensorrt,
    ".plan": _tensorrt,
    ".trt": _tensorrt,
}


def load_backend(
    path: str | Path,
    device: str = "auto",
    plugin: str | Path | None = None,
    precision: str = "auto",
    cuda_graphs: bool = True,
) -> Backend:
    """The backend for a run folder (torch), a `.onnx` (onnxruntime) or a `.engine` (tensorrt).

    `precision` and `cuda_graphs` are the PyTorch runtime's: an exported model runs at the precision it
    was exported or built with, so asking one for another precision is an error, not a silent no-op.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"model {path} does not exist; pass a run folder (runs/NAME), a model.onnx or a model.engine"
        )
    if path.is_dir() or path.name == META:
        from partool.runtime.torch_backend import TorchBackend

        return TorchBackend(path, device=device, precision=precision, cuda_graphs=cuda_graphs)
    refuse_export_precision(path, precision)
    opener = BACKENDS.get(path.suffix.lower())
    if opener is None:
        raise UserError(
            f"model {path}: cannot tell the runtime from the name; pass a run folder, a .onnx or a .engine file"
        )
    return opener(path, device, plugin)
