"""`partool bench MODEL…`: latency and throughput per backend over batch sizes (table, JSON, plot)."""

from __future__ import annotations

from pathlib import Path

import typer

from partool.cli.options import CUDA_GRAPHS_OPTION, PRECISION_OPTION
from partool.errors import UserError


def parse_batches(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; UserError for anything else."""
    try:
        sizes = [int(p) for p in text.replace(" ", ",").split(",") if p]
    except ValueError:
        raise UserError(
            f"--batch {text!r} is not a comma-separated list of batch sizes (e.g. 1,8,32)"
        ) from None
    if not sizes or any(s < 1 for s in sizes):
        raise UserError(f"--batch {text!r}: batch sizes must be positive")
    return sizes


def bench(
    models: list[Path] = typer.Argument(..., help="Run folders, .onnx and .engine files to time."),
    batch: str = typer.Option("1,8,32", "--batch", help="Batch sizes, comma-separated."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed calls per batch size."),
    runs: int = typer.Option(10, "--runs", help="Timed calls per batch size (the median is reported)."),
    threads: int = typer.Option(
        0, "--threads", help="Intra-op threads for PyTorch/ONNX Runtime (0 = default)."
    ),
    device: str = typer.Option(
        "cpu", "--device", help="cpu, cuda or cuda:N (engines always run on the GPU)."
    ),
    precision: str = PRECISION_OPTION,
    cuda_graphs: bool = CUDA_GRAPHS_OPTION,
    out: Path | None = typer.Option(
        None, "--out", help="JSON file to write; the plot goes beside it (.png)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON instead of the table."),
) -> None:
    """Time each model through its partool runtime backend (torch, onnxruntime, tensorrt) over batch sizes.

    Examples:

      partool bench runs/x runs/x/onnx-portable/model.onnx runs/x/onnx-portable-int8/model.onnx --batch 1,8,32

      partool bench runs/x/onnx-plugin/model.onnx --threads 2 --runs 20 --out bench/vim.json
    """
    from partool.artifacts import atomic_write_json
    from partool.bench import plot_bench, run_bench
    from partool.cli.output import console, print_json, print_table

    report = run_bench(
        models, parse_batches(batch), warmup, runs, threads, device, precision, cuda_graphs,
        progress=None if json_out else lambda text: console.print(f"timing {text}"),
    )  # fmt: skip
    if out is not None:
        report["plot"] = str(plot_bench(report, out.with_suffix(".png")))
        atomic_write_json(out, report)
    if json_out:
        print_json(report)
        return
    rows = [
        [
            result["label"],
            row["batch"],
            f"{row['latency_ms']:.2f}",
            f"{row['p90_ms']:.2f}",
            f"{row['throughput']:.1f}",
        ]
        for result in report["results"]
        for row in result["rows"]
    ]
    print_table(
        f"partool bench ({device}, {runs} runs after {warmup} warm-up, threads {threads or 'default'})",
        ["model", "batch", "latency ms (median)", "p90 ms", "images/s"],
        rows,
    )
    if out is not None:
        console.print(f"wrote {out} and {report['plot']}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
