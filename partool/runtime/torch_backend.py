"""PyTorch backend: a run folder (model.safetensors + partool.json) evaluated in inference mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from partool.runtime.base import Backend

DEFAULT_MAX_BATCH = 64


class TorchBackend(Backend):
    """The training-time model itself; the reference every other backend is compared with."""

    name = "torch"

    def __init__(self, run: str | Path, device: str = "auto", max_batch: int = DEFAULT_MAX_BATCH) -> None:
        import torch

        from partool.artifacts import load_run
        from partool.evaluate import resolve_device

        self.device = resolve_device(device)
        self.model, meta = load_run(run, self.device)
        super().__init__({**meta, "output": "logits"}, max_batch=max_batch)
        self._torch = torch

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            return self.model(x).float().cpu().numpy()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "device": str(self.device)}
