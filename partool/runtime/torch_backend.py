"""PyTorch backend: a run folder (model.safetensors + partool.json) evaluated in inference mode.

On a GPU it runs the way `benchmarks/gpu_model.py` measures a model: half precision and CUDA graphs
(`precision="auto"`), so `partool video` on a desktop card without TensorRT gets the speed the benchmark
reports, not an fp32 eager forward. On the CPU `auto` is fp32, the reference every exported model is
compared with; bf16 is there for CPUs with bf16 units.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from partool.errors import UserError
from partool.runtime.base import Backend

DEFAULT_MAX_BATCH = 64
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(name: str | None, device: torch.device) -> str:
    """`auto` -> fp16 on CUDA, fp32 on the CPU; otherwise the name, checked against what `device` runs."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r}; use auto, fp32, fp16 or bf16")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32"
        )
    return name


class TorchBackend(Backend):
    """The training-time model itself, at the precision asked for, replayed from CUDA graphs on a GPU."""

    name = "torch"

    def __init__(
        self,
        run: str | Path,
        device: str = "auto",
        max_batch: int = DEFAULT_MAX_BATCH,
        precision: str = "auto",
        cuda_graphs: bool = True,
    ) -> None:
        from partool.evaluate import resolve_device
        from partool.models.run_folder import load_run
        from partool.runtime.cuda_graphs import GraphedForward

        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dtype = PRECISIONS[self.precision]
        model, meta = load_run(run, self.device)
        self.model = model.to(self.dtype).eval()
        super().__init__({**meta, "output": "logits"}, max_batch=max_batch)
        self._graphs: GraphedForward | None = None
        if cuda_graphs and self.device.type == "cuda":
            self._graphs = GraphedForward(
                self.model, (3, *self.input_size), self.dtype, self.device, max_batch
            )

    def warmup(self, rows: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        """With CUDA graphs, capture the graphs of the batch sizes a street scene needs most (each capture
        takes a few forwards), so that none is captured in the middle of a live run; else one call."""
        if self._graphs is None:
            super().warmup()
            return
        for n in sorted({min(n, self.max_batch) for n in rows}):
            self.predict(np.zeros((n, 3, *self.input_size), np.float32))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device).to(self.dtype)
            return self._forward(x).float().cpu().numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._graphs is None:
            return self.model(x)
        try:
            return self._graphs(x)
        except RuntimeError as exc:  # a model that cannot be captured still runs, eagerly
            warnings.warn(
                f"CUDA graph capture failed ({exc}); running the model eagerly (pass --no-cuda-graphs "
                "to skip the attempt)",
                stacklevel=2,
            )
            self._graphs = None
            torch.cuda.synchronize(self.device)
            return self.model(x)

    def describe(self) -> dict[str, object]:
        described = {
            **super().describe(),
            "device": str(self.device),
            "precision": self.precision,
            "cuda_graphs": self._graphs is not None,
        }
        if self.device.type == "cuda":  # which CUDA scan kernels the tuner picked (after the first forward)
            from partool.ops.kernel_abi import tuned_scan_variants

            described["scan_variants"] = sorted(set(tuned_scan_variants().values()))
        return described
