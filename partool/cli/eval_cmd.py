"""`partool eval`: the papers' PAR metrics of a trained run on a dataset split."""

from __future__ import annotations

from pathlib import Path

import typer

from partool.cli.options import CUDA_GRAPHS_OPTION, PRECISION_OPTION
from partool.cli.output import console, print_json, print_table
from partool.errors import UserError
from partool.runtime.backend_eval import evaluate_run


def eval_cmd(
    run: Path = typer.Argument(..., help="Run folder written by `partool train`, or an exported model.onnx / model.engine."),
    data: str | None = typer.Option(None, "--data", help="Dataset spec (default: the one the run was trained on)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, val, trainval or test."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    threshold: float | None = typer.Option(None, "--threshold", help="Decision threshold (default: the run's own: 0.5, or 0.45 for a --protocol paper run)."),
    precision: str = PRECISION_OPTION,
    cuda_graphs: bool = CUDA_GRAPHS_OPTION,
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
        run, data, split, batch_size, device, threshold, workers, out, progress=not json_out,
        precision=precision, cuda_graphs=cuda_graphs,
    )  # fmt: skip
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
