"""`partool demo`: the README's main job, fully offline on a CPU."""

from __future__ import annotations

from pathlib import Path

import typer

from partool.cli.output import console, print_json


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the run, the ONNX model, the video and the report."),
    train_size: int = typer.Option(4000, "--train-size", min=100, help="SynthPAR training images (val/test get a quarter each)."),
    epochs: int = typer.Option(16, "--epochs", min=1, help="Training epochs (about 20 s each on 2 cores at the defaults)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the data, the model and the clip."),
    retrain: bool = typer.Option(False, "--retrain", help="Train again even if --out holds a finished run."),
    search: str | None = typer.Option(None, "--search", metavar="QUERY", help="The `partool search` query the report checks against the clip's ground truth, e.g. 'Female & !Hat' (default: of the attribute pairs that hold for some but at most half of the clip's people, the one whose weaker attribute has the best test mA)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report data as JSON."),
) -> None:  # fmt: skip
    """Run the whole path offline: synthetic pedestrians → train a small Vim on the CPU → evaluate →
    export portable ONNX → evaluate it with ONNX Runtime → detect, track and recognise people in a
    synthetic street clip, scored against its ground truth → store what was seen in an event store, search
    it, and check the answer against the ground truth.

    Writes OUT/report.md (tables and pictures), OUT/annotated.mp4, OUT/events.jsonl, OUT/events.db (for
    `partool search` and `partool report`), OUT/gallery.html, OUT/onnx/model.onnx and the trained run
    OUT/run. Takes about 6 minutes on 2 CPU cores; a second run reuses the trained model.

    Examples:

      partool demo

      partool demo --out /tmp/demo --epochs 3 --train-size 500      (a quicker look)

      partool demo --search 'Female & !Hat'                         (check another search; reuses the trained model)
    """
    from partool.demo import DemoConfig, run_demo, search_headline

    log = (lambda _msg: None) if json_out else (lambda msg: console.print(msg))
    config = DemoConfig(
        out=out, train_size=train_size, epochs=epochs, seed=seed, retrain=retrain, search=search, log=log
    )
    report = run_demo(config)
    if json_out:
        print_json(report)
        return
    torch_m, onnx_m = report["eval_torch"]["metrics"], report["eval_onnx"]["metrics"]
    score, summary = report["video"]["score"], report["video"]["summary"]
    console.print(
        f"\n[bold]test mA[/] {100 * torch_m['ma']:.2f} (PyTorch) / {100 * onnx_m['ma']:.2f} (ONNX Runtime) "
        f"vs 50.00 for the majority answer"
    )
    console.print(
        f"[bold]video[/] {summary['frames']} frames at {summary['fps']:.1f} FPS; detection recall "
        f"{100 * score['detection_recall']:.1f} %; attribute accuracy {100 * score['attribute_accuracy_raw']:.1f} % raw, "
        f"{100 * score['attribute_accuracy_smoothed']:.1f} % smoothed; flips {score['flips_raw']} → {score['flips_smoothed']}"
    )
    found = report["video"]["search"]
    console.print(
        f"[bold]search[/] {found['query']!r}: {len(found['returned'])} tracks; "
        f"{search_headline(found).lower()} against the clip's people"
    )
    console.print(f"report: {out / 'report.md'}; gallery: {out / 'gallery.html'}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
