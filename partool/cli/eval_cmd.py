"""`partool eval`: the papers' PAR metrics of a trained run on a dataset split."""

from __future__ import annotations

from pathlib import Path

import typer

from partool.cli.output import console, print_json, print_table
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
    backend = load_backend(run, device)
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


def eval_cmd(
    run: Path = typer.Argument(..., help="Run folder written by `partool train`, or an exported model.onnx / model.engine."),
    data: str | None = typer.Option(None, "--data", help="Dataset spec (default: the one the run was trained on)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, val, trainval or test."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    threshold: float | None = typer.Option(None, "--threshold", help="Decision threshold (default: the run's, 0.5)."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes (0 = main process)."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the per-attribute chart (default: the run folder)."),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:  # fmt: skip
    """Evaluate a trained run or an exported model: mA, Acc, Prec, Recall, F1 (and the per-sample F1 of VTB/MambaPAR).

    mA is the mean over attributes of (TP/P + TN/N)/2, so always answering the majority class scores 50. Prints a per-attribute table sorted by mA and writes a bar chart, per_attribute_SPLIT.png, into the run folder (or --out).

    Examples:

      partool eval runs/vim-s-pa100k --split test

      partool eval runs/vim-s-pa100k/model.onnx --data pa100k:/data/PA100k      (same numbers through ONNX Runtime)

      partool eval runs/vim-t-synth --data synth --split val --json
    """
    if workers < 0:
        raise UserError(f"--workers must be 0 or more, got {workers}")
    report = evaluate_run(
        run, data, split, batch_size, device, threshold, workers, out, progress=not json_out
    )
    if json_out:
        print_json(report)
        return
    m = report["metrics"]
    print_table(
        f"{report['run']} on {report['data']} {report['split']} ({report['num_images']} images, threshold {report['threshold']:g})",
        ["mA", "Acc", "Prec", "Recall", "F1", "F1 (instance)"],
        [[f"{100 * m[k]:.2f}" for k in ("ma", "acc", "prec", "recall", "f1", "f1_instance")]],
    )
    print_table(
        "per attribute (sorted by mA, %)",
        ["attribute", "mA", "pos recall", "neg recall", "prec", "F1", "positives"],
        [
            [
                r["attribute"],
                *(f"{100 * r[k]:.2f}" for k in ("ma", "pos_recall", "neg_recall", "prec", "f1")),
                r["positives"],
            ]
            for r in report["per_attribute"]
        ],
    )
    console.print(f"chart: {report['chart']}")
    if report["skipped_images"]:
        console.print(f"[yellow]skipped {len(report['skipped_images'])} unreadable image(s)[/yellow]")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
