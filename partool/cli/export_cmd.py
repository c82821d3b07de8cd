"""`partool export RUN`: a trained run folder -> model.onnx + partool.json."""

from __future__ import annotations

from pathlib import Path

import typer

from partool.errors import UserError


def parse_img_size(text: str | None) -> tuple[int, int] | None:
    """'HxW' -> (H, W); UserError for anything else."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--img-size {text!r} is not HxW with positive integers (e.g. 256x128)")
    return int(parts[0]), int(parts[1])


def export(
    run: Path = typer.Argument(..., help="Run folder written by `partool train` (holds partool.json)."),
    scan: str = typer.Option(
        "plugin",
        "--scan",
        help="plugin: one partool::SelectiveScan node per scan (TensorRT, ORT custom op); "
        "portable: standard ONNX ops only (any runtime).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: RUN/onnx-SCAN)."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (18 or newer)."),
    img_size: str | None = typer.Option(None, "--img-size", help="HxW; must match the run's input size."),
) -> None:
    """Export a trained run to ONNX (dynamic batch, input `images`, output `logits`)."""
    from partool.export import export_run

    path = export_run(run, out, scan=scan, opset=opset, img_size=parse_img_size(img_size))
    typer.echo(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, scan={scan}) and {path.parent / 'partool.json'}"
    )


def register(app: typer.Typer) -> None:
    app.command("export")(export)
