"""Inference backends with one interface: `load_backend(path).predict(crops) -> probabilities`.

torch (run folders), onnxruntime (`.onnx`) and tensorrt (`.engine`, torch-free); see `base.py`.
"""

from partool.runtime.base import Backend, load_backend
from partool.runtime.preprocess import preprocess

__all__ = ["Backend", "load_backend", "preprocess"]
