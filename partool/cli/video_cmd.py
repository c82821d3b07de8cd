"""`partool video SRC [SRC …] --model M`: per stream detector -> tracker -> PAR (one batch for all streams)
-> smoothing -> windows / videos / events / event store."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from partool.cli.options import CUDA_GRAPHS_OPTION, PRECISION_OPTION, parse_duration
from partool.errors import UserError

if TYPE_CHECKING:
    from partool.video.pipeline import Stream
    from partool.video.sinks import Sink, Summary
    from partool.video.sources import FrameSource


def video(
    sources: list[str] | None = typer.Argument(None, metavar="SRC", help="cam0 / 0 (camera index), a video file, rtsp://… or a folder of images; several run side by side; NAME=SOURCE names a stream."),
    sources_file: Path | None = typer.Option(None, "--sources", help="File with one source a line (NAME=SOURCE allowed, # comment lines)."),
    model: Path = typer.Option(..., "--model", help="Run folder (torch), model.onnx (onnxruntime) or model.engine (TensorRT)."),
    detector: str = typer.Option("motion", "--detector", help="motion (offline default), yolo11n.pt|.onnx|.engine, or mot:FILE."),
    tracker: str = typer.Option("iou", "--tracker", help="iou (built-in default), bytetrack or botsort (need the video extra)."),
    every: int = typer.Option(10, "--every", help="Re-run PAR on a track every N frames (and when its box grows 20%)."),
    show: bool = typer.Option(False, "--show", help="Show a window per stream (ignored without a display)."),
    save: Path | None = typer.Option(None, "--save", help="Annotated video: a .mp4/.avi/.mkv file for one source, or a folder (one <name>.mp4 per stream)."),
    segment: str | None = typer.Option(None, "--segment", metavar="DURATION", help="With --save: cut each stream's video into files of this length (90s, 10m, 1h), named after their start time (cam1-20261204-143000.mp4) and complete as soon as they are closed; for streams that never end."),
    events: Path | None = typer.Option(None, "--events", help="Write JSON Lines events here (each names its stream)."),
    db: Path | None = typer.Option(None, "--db", help="Write tracks, attributes and thumbnails into this SQLite event store (partool search / report)."),
    privacy: bool = typer.Option(False, "--privacy", help="Pixelate people in the shown and saved video and in stored thumbnails."),
    max_frames: int | None = typer.Option(None, "--max-frames", help="Stop each stream after N frames."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (PAR model and YOLO)."),
    precision: str = PRECISION_OPTION,
    cuda_graphs: bool = CUDA_GRAPHS_OPTION,
    plugin: Path | None = typer.Option(None, "--plugin", help="TensorRT plugin library (default: `partool plugins path`)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:  # fmt: skip
    """Recognise pedestrian attributes live: detect, track, classify each track, smooth, and report.

    Several sources run in one process: each keeps its own detector, tracker and smoothing, their crops go to
    the model in one batch per step, and a stream that ends or fails leaves the others running. A stream URL
    that is down reconnects with back-off (0.5 s doubling to 8 s, 6 tries) — also at start when there are
    several sources; a single one that cannot be opened exits 2.

    Examples:

      partool video street.mp4 --model runs/demo/run --save out.mp4 --events events.jsonl

      partool video rtsp://cam.local/stream --model model.onnx --detector yolo11n.pt --tracker bytetrack --show

      partool video door=rtsp://door.local/live hall=rtsp://hall.local/live --model model.onnx --save videos --db events.db

      partool video --sources cameras.txt --model model.onnx --save videos --segment 10m --db events.db   (around the clock)
    """
    from partool.runtime import load_backend
    from partool.video.detectors import make_detector
    from partool.video.pipeline import PipelineOptions, Stream
    from partool.video.sources import name_sources, read_sources_file
    from partool.video.tracking import make_tracker

    if every < 1:
        raise UserError(f"--every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {max_frames}")
    segment_seconds = _segment_seconds(segment, save)
    entries = [(f"argument {i}", s) for i, s in enumerate(sources or (), 1)]
    entries += read_sources_file(sources_file) if sources_file is not None else []
    named = name_sources(entries)
    if not named:
        raise UserError("no video source: give one or more SRC arguments or --sources FILE")
    backend = load_backend(model, device=device, plugin=plugin, precision=precision, cuda_graphs=cuda_graphs)
    detectors = [make_detector(detector, device=device) for _ in named]  # per stream: detectors keep state
    stream_sinks = _stream_sinks([n for n, _ in named], save, show, segment_seconds)  # first: checks --save
    run_sinks = _run_sinks(events, db)
    opened = _open_sources([s for _, s in named], [*run_sinks, *(s for ss in stream_sinks for s in ss)])
    streams = [
        Stream(name, src, det, make_tracker(tracker), sinks)
        for (name, _), src, det, sinks in zip(named, opened, detectors, stream_sinks, strict=True)
    ]
    options = PipelineOptions(every=every, max_frames=max_frames, privacy=privacy, stop=threading.Event())
    with _stop_on_sigterm(options.stop):
        summary = _run(streams, backend, run_sinks, options, _total(opened, max_frames), json_out)
    _report(summary, json_out)


def _run_sinks(events: Path | None, db: Path | None) -> list[Sink]:
    """The sinks that see every stream's events: the JSON Lines file and the event store."""
    from partool.video.sinks import EventSink

    sinks: list[Sink] = []
    if events is not None:
        sinks.append(EventSink(events))
    if db is not None:
        from partool.video.event_store import EventStoreSink

        sinks.append(EventStoreSink(db))
    return sinks


def _segment_seconds(segment: str | None, save: Path | None) -> float | None:
    if segment is None:
        return None
    if save is None:
        raise UserError("--segment cuts the saved video into files: it needs --save FILE or --save DIR")
    return parse_duration(segment, "--segment")


def _stream_sinks(
    names: Sequence[str], save: Path | None, show: bool, segment_seconds: float | None = None
) -> list[list[Sink]]:
    """Each stream's own frame sinks: its video (`--save`, cut every `segment_seconds`) and its window
    (`--show`)."""
    from partool.video.sinks import VideoSink, WindowSink

    paths = _video_paths(save, names) if save is not None else {}
    sinks: list[list[Sink]] = [[VideoSink(paths[n], segment_seconds)] if n in paths else [] for n in names]
    if show:
        first = WindowSink("partool video" if len(names) == 1 else f"partool video: {names[0]}")
        sinks[0].append(first)
        if first.enabled:  # headless: one notice, no dead windows
            for name, own in zip(names[1:], sinks[1:], strict=True):
                own.append(WindowSink(f"partool video: {name}"))
    return sinks


def _video_paths(save: Path, names: Sequence[str]) -> dict[str, Path]:
    """`--save FILE.mp4` for one stream, `--save DIR` for any number (DIR/<name>.mp4)."""
    from partool.video.sinks import VIDEO_CODECS

    suffix = save.suffix.lower()
    if suffix in VIDEO_CODECS:
        if len(names) > 1:
            raise UserError(
                f"--save {save}: {len(names)} streams need a folder (each writes FOLDER/<name>.mp4)"
            )
        return {names[0]: save}
    if suffix and not save.is_dir():
        raise UserError(f"--save {save}: use a .mp4, .avi or .mkv file name, or a folder")
    if save.is_file():
        raise UserError(f"--save {save} is a file; give a folder (one <name>.mp4 per stream)")
    return {name: save / f"{name}.mp4" for name in names}


def _open_sources(specs: Sequence[str], sinks: Sequence[Sink]) -> list[FrameSource]:
    """Every source opened (each checked up front); on a bad one, those opened and the sinks are closed.

    Among several sources, a stream URL that is down is not an error: it is retried with back-off while the
    others run, as it would be if it went down later. Alone, it fails at once (most likely a wrong URL).
    """
    from partool.video.sources import open_source

    opened: list[FrameSource] = []
    try:
        for spec in specs:
            opened.append(open_source(spec, wait_at_start=len(specs) > 1))
    except BaseException:
        for source in opened:
            source.close()
        for sink in sinks:
            sink.close()
        raise
    return opened


def _total(sources: Sequence[FrameSource], max_frames: int | None) -> int | None:
    """Frames the run will process, when every stream's count is known (for the progress bar)."""
    total = 0
    for source in sources:
        known = [x for x in (source.frame_count, max_frames) if x]
        if not known:
            return None
        total += min(known)
    return total


@contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (a service manager stopping partool) ends the run cleanly: videos renamed, events complete."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(
    streams: list[Stream], backend: Any, sinks: list[Sink], options: Any, total: int | None, quiet: bool
) -> Summary:
    """run_streams, under a progress bar unless the output is JSON."""
    from partool.video.pipeline import run_streams

    if quiet:
        return run_streams(streams, backend, sinks, options)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from partool.cli.output import console

    with Progress(
        TextColumn("[bold]video"), BarColumn(), TextColumn("{task.completed} frames"), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("video", total=total)
        options.progress = lambda _index: bar.advance(task)
        return run_streams(streams, backend, sinks, options)


def _report(summary: Summary, json_out: bool) -> None:
    """The summary: JSON for scripts; for people the stage table, a row per stream, PAR batch sizes."""
    from partool.cli.output import console, print_json, print_table

    if json_out:
        print_json(summary.to_dict())
        return
    print_table(
        f"partool video: {summary.headline()}",
        ["stage", "calls", "mean ms", "p50 ms", "p95 ms"],
        summary.rows(),
    )
    print_table(
        "streams",
        ["stream", "kind", "frames", "FPS", "dropped", "reconnects", "tracks", "crops", "ended"],
        [[s["stream"], s["kind"], s["frames"], f"{s['fps']:.1f}", s["dropped_frames"], s["reconnects"],
          s["tracks"], s["crops"], s["end_reason"] if s["stopped_by"] == "source ended" else s["stopped_by"]]
         for s in summary.streams],
    )  # fmt: skip
    batches = summary.par_batches
    if batches.get("max"):
        console.print(
            f"PAR batches: {summary.par_calls} calls, mean {batches['mean']:.2f} crops, max {batches['max']}"
        )
    outputs = [summary.outputs, *(s["outputs"] for s in summary.streams if len(summary.streams) > 1)]
    for facts in outputs:
        for key in ("video", "events", "db"):
            if facts.get(key):
                console.print(f"wrote {facts[key]}")


def register(app: typer.Typer) -> None:
    app.command("video")(video)
