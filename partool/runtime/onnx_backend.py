"""ONNX Runtime backend: an exported `model.onnx` (+ partool.json) on the CPU or CUDA execution provider.

Plugin graphs (partool::SelectiveScan nodes) run through the custom op `partool.runtime.ort_session`
registers only when the graph holds such nodes; portable graphs need plain onnxruntime (and no torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from partool.devices import parse_device
from partool.errors import UserError
from partool.runtime.base import Backend, read_sidecar_meta
from partool.runtime.ort_session import create_session

DEFAULT_MAX_BATCH = 64


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for --device: auto prefers CUDA when this onnxruntime build has it."""
    parsed = parse_device(device)
    cuda = "CUDAExecutionProvider" in available
    if parsed.kind == "cpu" or (parsed.kind == "auto" and not cuda):
        return ["CPUExecutionProvider"]
    if parsed.kind == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if not cuda:
        raise UserError(
            f"--device {device}: this onnxruntime has no CUDA provider (it has {', '.join(available)}); "
            "install onnxruntime-gpu instead of onnxruntime, or use --device cpu"
        )
    return [("CUDAExecutionProvider", {"device_id": parsed.index or 0}), "CPUExecutionProvider"]  # type: ignore[list-item]


class OnnxBackend(Backend):
    """An InferenceSession over the exported graph; batch axis dynamic unless the file fixed it."""

    name = "onnxruntime"

    def __init__(
        self, path: str | Path, device: str = "auto", threads: int = 0, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        import onnx
        import onnxruntime as ort

        path = Path(path)
        meta = read_sidecar_meta(path)
        try:
            proto = onnx.load(str(path))
        except Exception as e:  # protobuf raises DecodeError, onnx its own errors, the OS OSError
            raise UserError(
                f"cannot read {path} as ONNX ({type(e).__name__}: {e}); re-run `partool export`"
            ) from None
        self.providers = choose_providers(device, ort.get_available_providers())
        try:
            self.session = create_session(proto, threads=threads, providers=self.providers)
        except UserError:
            raise
        except Exception as e:  # onnxruntime's Fail/InvalidGraph carry a useful first line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"onnxruntime cannot load {path}: {first}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        static = inp.shape[0] if isinstance(inp.shape[0], int) else None
        super().__init__(
            meta,
            max_batch=static or max_batch,
            min_batch=static or 1,  # a fixed batch axis gets every call padded to it
        )

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "providers": self.session.get_providers()}
