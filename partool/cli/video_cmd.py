"""`partool video SOURCE --model M`: detector -> tracker -> PAR -> smoothing -> window / video / events."""

from __future__ import annotations

from pathlib import Path

import typer

from partool.cli.options import CUDA_GRAPHS_OPTION, PRECISION_OPTION
from partool.errors import UserError


def video(
    source: str = typer.Argument(..., help="cam0 / 0 (camera index), a video file, rtsp://… or a folder of images."),
    model: Path = typer.Option(..., "--model", help="Run folder (torch), model.onnx (onnxruntime) or model.engine (TensorRT)."),
    detector: str = typer.Option("motion", "--detector", help="motion (offline default), yolo11n.pt|.onnx|.engine, or mot:FILE."),
    tracker: str = typer.Option("iou", "--tracker", help="iou (built-in default), bytetrack or botsort (need the video extra)."),
    every: int = typer.Option(10, "--every", help="Re-run PAR on a track every N frames (and when its box grows 20%)."),
    show: bool = typer.Option(False, "--show", help="Show a window (ignored without a display)."),
    save: Path | None = typer.Option(None, "--save", help="Write the annotated video here (.mp4 or .avi)."),
    events: Path | None = typer.Option(None, "--events", help="Write JSON Lines events here."),
    privacy: bool = typer.Option(False, "--privacy", help="Pixelate people in the shown and saved video."),
    max_frames: int | None = typer.Option(None, "--max-frames", help="Stop after N frames."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (PAR model and YOLO)."),
    precision: str = PRECISION_OPTION,
    cuda_graphs: bool = CUDA_GRAPHS_OPTION,
    plugin: Path | None = typer.Option(None, "--plugin", help="TensorRT plugin library (default: `partool plugins path`)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:  # fmt: skip
    """Recognise pedestrian attributes live: detect, track, classify each track, smooth, and report.

    Examples:

      partool video street.mp4 --model runs/demo/run --save out.mp4 --events events.jsonl

      partool video rtsp://cam.local/stream --model model.onnx --detector yolo11n.pt --tracker bytetrack --show
    """
    from partool.cli.output import console, print_json, print_table
    from partool.runtime import load_backend
    from partool.video.detectors import make_detector
    from partool.video.pipeline import PipelineOptions, run_pipeline
    from partool.video.sinks import EventSink, VideoSink, WindowSink
    from partool.video.sources import open_source
    from partool.video.tracking import make_tracker

    if every < 1:
        raise UserError(f"--every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {max_frames}")
    backend = load_backend(model, device=device, plugin=plugin, precision=precision, cuda_graphs=cuda_graphs)
    det = make_detector(detector, device=device)
    trk = make_tracker(tracker)
    sinks = []
    if save is not None:
        sinks.append(VideoSink(save))
    if events is not None:
        sinks.append(EventSink(events))
    if show:
        sinks.append(WindowSink())
    src = open_source(source)
    options = PipelineOptions(every=every, max_frames=max_frames, privacy=privacy)
    total = min(x for x in (src.frame_count, max_frames) if x) if (src.frame_count or max_frames) else None
    if json_out:
        summary = run_pipeline(src, backend, det, trk, sinks, options)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]video"), BarColumn(), TextColumn("{task.completed} frames"), TimeElapsedColumn(),
            console=console, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("video", total=total)
            options.progress = lambda _index: bar.advance(task)
            summary = run_pipeline(src, backend, det, trk, sinks, options)
    if json_out:
        print_json(summary.to_dict())
        return
    print_table(
        f"partool video: {summary.headline()}",
        ["stage", "calls", "mean ms", "p50 ms", "p95 ms"],
        summary.rows(),
    )
    for key, value in summary.outputs.items():
        if key in ("video", "events") and value:
            console.print(f"wrote {value}")


def register(app: typer.Typer) -> None:
    app.command("video")(video)
