"""Evaluate any artifact (run folder, .onnx, .engine) on a dataset split through its runtime backend.

Shared by `partool eval` and `partool demo`: every backend gets the same preprocessing (the training-time
eval transform) and the same metrics code.
"""

from __future__ import annotations

from pathlib import Path

from partool.errors import UserError


def evaluate_run(
    run: Path,
    data: str | None = None,
    split: str = "test",
    batch_size: int = 64,
    device: str = "auto",
    threshold: float | None = None,
    workers: int = 2,
    out: Path | None = None,
    progress: bool = True,
    precision: str = "auto",
    cuda_graphs: bool = True,
) -> dict[str, object]:
    """Evaluate a run folder, .onnx or .engine on `split` of `data` (default: the data it was trained on).

    Every backend gets the same preprocessing (the training-time eval transform) and the same metrics code;
    writes the per-attribute chart PNG.
    """
    from rich.console import Console
    from rich.progress import Progress

    from partool.data import open_dataset
    from partool.data.transforms import build_transforms
    from partool.evaluate import evaluate, per_attribute_rows, plot_per_attribute
    from partool.runtime import load_backend

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    backend = load_backend(run, device, precision=precision, cuda_graphs=cuda_graphs)
    meta = backend.meta
    spec = data or meta["data"]
    dataset = open_dataset(
        spec, split, build_transforms(meta["input_size"], meta["mean"], meta["std"], train=False)
    )
    if list(dataset.attributes) != list(meta["attributes"]):
        raise UserError(
            f"{spec} ({len(dataset.attributes)} attributes) does not have the attributes {run} was trained on "
            f"({len(meta['attributes'])}, from {meta['data']}); evaluate on a dataset with the same attribute list"
        )
    thr = float(meta["threshold"] if threshold is None else threshold)
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task(f"eval {split} ({backend.name})", total=len(dataset))
        metrics = evaluate(backend.predict, dataset, batch_size, thr, workers, lambda n: bar.advance(task, n))
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    chart = plot_per_attribute(
        metrics,
        meta["attributes"],
        Path(out or run_dir) / f"per_attribute_{split}.png",
        title=f"{Path(run).name} on {spec} {split} ({metrics.num_samples} images)",
    )
    return {
        "run": str(run),
        "backend": backend.describe(),
        "data": spec,
        "split": split,
        "threshold": thr,
        "num_images": metrics.num_samples,
        "metrics": {k: getattr(metrics, k) for k in ("ma", "acc", "prec", "recall", "f1", "f1_instance")},
        "per_attribute": per_attribute_rows(metrics, meta["attributes"]),
        "chart": str(chart),
        "skipped_images": list(dataset.skipped),
    }
