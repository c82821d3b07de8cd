"""Evaluation that any backend can reuse: a predict function in, the papers' PAR metrics out.

`evaluate` does not know about torch models, ONNX sessions or TensorRT engines: it feeds normalised
float32 batches (N, 3, H, W) as numpy arrays to `predict_fn` and expects (N, A) probabilities back.
So a number printed for a run folder, an .onnx file and an .engine is computed the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from partool.devices import parse_device
from partool.errors import UserError
from partool.metrics import PedestrianMetrics, pedestrian_metrics

PredictFn = Callable[[np.ndarray], Any]  # (N, 3, H, W) float32 -> (N, A) probabilities


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:i`; UserError when it is not available."""
    device = parse_device(spec)
    if device.kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible to PyTorch here; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible (cuda:0..)")
    return torch.device("cuda", device.index)


def torch_predict_fn(model: nn.Module, device: str | torch.device = "cpu") -> PredictFn:
    """A predict function for a PyTorch PARModel: sigmoid of the logits, float32 numpy out."""
    model.eval()

    @torch.inference_mode()
    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(batch, dtype=torch.float32).to(device)
        return torch.sigmoid(model(x).float()).cpu().numpy()

    return predict


def predict_dataset(
    predict_fn: PredictFn,
    dataset: Dataset,
    batch_size: int = 64,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(probs, labels) over the whole dataset in order; labels keep 2 for unknown entries."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    probs, labels = [], []
    for images, targets in loader:
        out = np.asarray(predict_fn(images.numpy().astype(np.float32, copy=False)), dtype=np.float32)
        if out.shape != tuple(targets.shape):
            raise ValueError(
                f"predict_fn returned shape {out.shape} for a batch with labels {tuple(targets.shape)}"
            )
        probs.append(out)
        labels.append(targets.numpy().astype(np.uint8))
        if progress is not None:
            progress(len(out))
    if not probs:
        num_attrs = len(getattr(dataset, "attributes", []))
        return np.zeros((0, num_attrs), np.float32), np.zeros((0, num_attrs), np.uint8)
    return np.concatenate(probs), np.concatenate(labels)


def evaluate(
    predict_fn: PredictFn,
    dataset: Dataset,
    batch_size: int = 64,
    threshold: float = 0.5,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> PedestrianMetrics:
    """mA, instance Acc/Prec/Recall/F1, f1_instance and per-attribute numbers of `predict_fn` on `dataset`."""
    probs, labels = predict_dataset(predict_fn, dataset, batch_size, workers, progress)
    return pedestrian_metrics(probs, labels, threshold)


def per_attribute_rows(metrics: PedestrianMetrics, attributes: list[str]) -> list[dict[str, Any]]:
    """One row per attribute (mA, positive/negative recall, precision, F1, positives), sorted by mA descending."""
    rows = [
        {
            "attribute": name,
            "ma": float(metrics.label_ma[j]),
            "pos_recall": float(metrics.label_pos_recall[j]),
            "neg_recall": float(metrics.label_neg_recall[j]),
            "prec": float(metrics.label_prec[j]),
            "f1": float(metrics.label_f1[j]),
            "positives": int(metrics.label_tp[j] + metrics.label_fn[j]),
        }
        for j, name in enumerate(attributes)
    ]
    return sorted(rows, key=lambda r: (-r["ma"], r["attribute"]))


def plot_per_attribute(
    metrics: PedestrianMetrics, attributes: list[str], path: str | Path, title: str = ""
) -> Path:
    """A horizontal bar chart of per-attribute mA (sorted), with the mean marked; written atomically as PNG."""
    import io

    from matplotlib.figure import Figure

    from partool.artifacts import atomic_write_bytes

    rows = per_attribute_rows(metrics, attributes)[::-1]  # best at the top
    fig = Figure(figsize=(7, max(2.5, 0.28 * len(rows) + 1.2)))
    ax = fig.add_subplot()
    ax.barh([r["attribute"] for r in rows], [100 * r["ma"] for r in rows], color="#4C72B0")
    ax.axvline(100 * metrics.ma, color="#C44E52", linestyle="--", label=f"mean mA {100 * metrics.ma:.2f}")
    ax.axvline(50, color="grey", linestyle=":", label="chance / majority (50)")
    ax.set_xlim(0, 100)
    ax.set_xlabel("mA (%)")
    ax.set_title(title or f"per-attribute mA ({metrics.num_samples} images)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
