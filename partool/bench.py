"""Latency and throughput of PAR backends over batch sizes: the numbers behind `partool bench`.

Every model goes through `partool.runtime`'s backends, so a run folder (PyTorch), each exported ONNX
variant (plugin or portable scan, FP32/FP16/INT8, on ONNX Runtime) and an engine (TensorRT) are timed
through the same `predict` a deployment calls, on the same preprocessed random batch. The time is the
wall clock of `predict` on an already normalised float32 batch (no image decoding or resizing), after
`warmup` untimed calls; latency is the median of `runs` calls and throughput is batch / median.
Measurements, never pass/fail: a shared machine makes every number noisy, so p90 is reported beside it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partool.errors import UserError
from partool.runtime.base import Backend, refuse_export_precision


def open_backend(
    path: Path, device: str = "cpu", threads: int = 0, precision: str = "auto", cuda_graphs: bool = True
) -> Backend:
    """The backend for `path`; ONNX Runtime and PyTorch get `threads` intra-op threads (0 = their default),
    PyTorch `precision` and `cuda_graphs` as `load_backend` takes them."""
    from partool.runtime import load_backend

    if path.suffix.lower() == ".onnx":
        from partool.runtime.onnx_backend import OnnxBackend

        if not path.exists():
            raise UserError(f"model {path} does not exist")
        refuse_export_precision(path, precision)
        return OnnxBackend(path, device=device, threads=threads)
    if threads > 0 and (path.is_dir() or path.name == "partool.json"):
        import torch

        torch.set_num_threads(threads)
    return load_backend(path, device=device, precision=precision, cuda_graphs=cuda_graphs)


def label(path: Path, backend: Backend) -> str:
    """'vim-s onnxruntime portable int8', 'vit-s torch fp16 graphs'…: model, backend, scan lowering, precision."""
    export = backend.meta.get("export") or {}
    engine = backend.meta.get("engine") or {}
    parts = [str(backend.meta.get("model", path.name)), backend.name]
    if export.get("scan"):
        parts.append(export["scan"])
    if backend.name == "torch":
        described = backend.describe()
        parts.append(str(described.get("precision", "fp32")))
        if described.get("cuda_graphs"):
            parts.append("graphs")
    else:
        parts.append(engine.get("precision") or export.get("precision") or "fp32")
    return " ".join(parts)


def time_backend(
    backend: Backend, batch_sizes: Sequence[int], warmup: int, runs: int, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per batch size: median/p90 latency (ms) and throughput (images/s) of `backend.predict`."""
    rng = np.random.default_rng(seed)
    height, width = backend.input_size
    rows = []
    for batch in batch_sizes:
        images = rng.standard_normal((batch, 3, height, width)).astype(np.float32)
        for _ in range(warmup):
            backend.predict(images)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            backend.predict(images)
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        rows.append({
            "batch": int(batch),
            "latency_ms": 1e3 * median,
            "p90_ms": 1e3 * float(np.percentile(times, 90)),
            "throughput": batch / median,
            "runs": runs,
        })  # fmt: skip
    return rows


def run_bench(
    models: Sequence[Path],
    batch_sizes: Sequence[int],
    warmup: int = 3,
    runs: int = 10,
    threads: int = 0,
    device: str = "cpu",
    precision: str = "auto",
    cuda_graphs: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every model; returns the JSON document `partool bench --out` writes."""
    if not models:
        raise UserError("pass at least one model: a run folder, a .onnx or a .engine")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise UserError(f"--batch needs positive batch sizes, got {list(batch_sizes)}")
    if warmup < 0 or runs < 1:
        raise UserError(f"--warmup must be >= 0 and --runs >= 1, got {warmup} and {runs}")
    results = []
    for path in models:
        backend = open_backend(Path(path), device, threads, precision, cuda_graphs)
        name = label(Path(path), backend)
        if progress is not None:
            progress(f"{name}: {path}")
        rows = time_backend(backend, batch_sizes, warmup, runs)
        results.append({
            "model": str(path),
            "label": name,
            "backend": backend.describe(),  # after the runs: it reports what they chose (CUDA scan variants)
            "rows": rows,
        })  # fmt: skip
    return {
        "batch_sizes": [int(b) for b in batch_sizes],
        "warmup": warmup,
        "runs": runs,
        "threads": threads,
        "device": device,
        "precision": precision,
        "results": results,
    }


def plot_bench(report: dict[str, Any], path: str | Path) -> Path:
    """Latency and throughput against batch size, one line per model; PNG, written atomically."""
    from matplotlib.figure import Figure

    from partool.artifacts import atomic_write_bytes

    fig = Figure(figsize=(10, 4))
    lat, thr = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for result in report["results"]:
        batches = [r["batch"] for r in result["rows"]]
        lat.plot(batches, [r["latency_ms"] for r in result["rows"]], marker="o", label=result["label"])
        thr.plot(batches, [r["throughput"] for r in result["rows"]], marker="o", label=result["label"])
    for ax, title, unit in ((lat, "latency (median)", "ms per batch"), (thr, "throughput", "images / s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    lat.legend(fontsize=7)
    fig.suptitle(f"partool bench ({report['device']}, threads {report['threads'] or 'default'})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
