"""`run_streams` / `run_pipeline`: frames -> detector -> tracker -> scheduled crops -> PAR backend -> smoothing -> sinks.

One process serves one stream or many. Every stream (a source with its own detector, tracker, scheduler
and smoother) decodes on its own reader thread into a bounded queue. The calling thread runs in steps:
a step takes the next frame of every stream that has one — it waits for files and folders, which never
drop frames, but not for live sources, which drop their oldest frame instead so they stay real-time —
runs detection and tracking per stream (on a thread pool when there are several: OpenCV releases the
GIL), sends the due crops of all streams to the PAR backend in one batch (at most its max batch; the rest
stay due for the next step), then smooths, emits events and renders per stream. Every stage is timed.

A stream that ends — its file finished, its reconnects ran out, its detector raised — ends alone; the
run ends when every stream has (or on `stop`, a closed window, Ctrl-C). A track is remembered for
`linger` frames of its stream after it was last seen, so a person briefly hidden comes back with the
same smoothed attributes; then it is reported as left and its state dropped. Queues are bounded and no
per-frame history is kept, so memory stays flat on endless streams. However the run ends, the sinks are
closed (videos renamed into place, event files complete) and the summary is returned.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from partool.runtime.base import Backend
from partool.video.detectors import Detector
from partool.video.render import clip_box, draw_tracks, pixelate
from partool.video.scheduling import Scheduler
from partool.video.sinks import Sink, StageTimes, Summary
from partool.video.smoothing import Smoother
from partool.video.sources import Frame, FrameSource, default_stream_name, open_source
from partool.video.tracking import Track, Tracker


@dataclass(frozen=True)
class TrackView:
    """One track in one frame, as the sinks and `on_frame` see it."""

    id: int
    box: np.ndarray
    raw: np.ndarray | None  # probabilities of the track's latest inference (None before the first)
    smoothed: np.ndarray | None  # EMA probabilities
    on: np.ndarray | None  # smoothed decisions (hysteresis)
    inferred: bool  # PAR ran on this track in this frame


@dataclass(frozen=True)
class FrameResult:
    index: int
    time: float
    boxes: np.ndarray  # detections (N, 4)
    scores: np.ndarray
    tracks: list[TrackView]
    stream: str = ""  # the stream's name


@dataclass
class PipelineOptions:
    every: int = 10  # re-run PAR on a track every N frames
    grow: float = 0.2  # ... or when its box area grew by this fraction
    alpha: float = 0.3  # EMA weight of a new inference
    margin: float = 0.1  # hysteresis half-width around the threshold
    linger: int = 30  # frames a vanished track keeps its state before "track left"
    max_frames: int | None = None  # per stream
    privacy: bool = False
    min_crop: int = 8  # pixels; smaller boxes are tracked but not classified
    on_frame: Callable[[FrameResult], None] | None = None
    progress: Callable[[int], None] | None = None  # called with each finished frame's index
    stop: threading.Event | None = None  # set from another thread (a service's SIGTERM) to end the run


@dataclass
class Stream:
    """One camera, file or URL of a run, with its own detector and tracker (they keep per-stream state).

    `sinks` are the stream's own: they get its annotated frames (its video, its window) and its events;
    the run's sinks get the events of every stream.
    """

    name: str
    source: FrameSource | str
    detector: Detector
    tracker: Tracker
    sinks: Sequence[Sink] = ()


@dataclass
class _Live:
    first_frame: int
    last_frame: int
    last_time: float
    box: np.ndarray
    raw: np.ndarray | None = None
    seen: int = 0


@dataclass
class _StreamRun:
    """Mutable state of one stream within a run."""

    stream: Stream
    source: FrameSource
    scheduler: Scheduler
    smoother: Smoother
    live: dict[int, _Live] = field(default_factory=dict)
    frames: int = 0
    tracks: int = 0
    crops: int = 0
    seconds: float = 0.0
    stopped_by: str = ""  # empty while the stream runs
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.stream.name


@dataclass
class _Step:
    """One stream's frame between detection and output: what the front half found."""

    run: _StreamRun
    frame: Frame
    boxes: np.ndarray
    scores: np.ndarray
    tracks: list[Track]
    appeared: list[Track]
    waiting: list[tuple[float, Track]]  # PAR candidates, most urgent first
    detect_s: float
    track_s: float
    error: str = ""


@dataclass
class _Run:
    """Mutable state of one run."""

    options: PipelineOptions
    backend: Backend
    sinks: Sequence[Sink]
    streams: list[_StreamRun]
    times: StageTimes = field(default_factory=StageTimes)
    summary: Summary = field(default_factory=Summary)
    batch_sizes: Counter[int] = field(default_factory=Counter)
    wake: threading.Event = field(default_factory=threading.Event)
    start: float = 0.0

    def probs_dict(self, probs: np.ndarray | None) -> dict[str, float] | None:
        if probs is None:
            return None
        return {n: round(float(p), 4) for n, p in zip(self.backend.attributes, probs, strict=True)}

    def on_names(self, stream: _StreamRun, track_id: int) -> list[str]:
        state = stream.smoother.get(track_id)
        if state is None:
            return []
        return [n for n, on in zip(self.backend.attributes, state.on, strict=True) if on]

    def sinks_of(self, stream: _StreamRun) -> list[Sink]:
        """The run's sinks and the stream's own, each once."""
        return _unique([*self.sinks, *stream.stream.sinks])

    def emit(self, stream: _StreamRun, record: dict[str, Any]) -> None:
        record["stream"] = stream.name
        for sink in self.sinks_of(stream):
            sink.event(record)

    def leave(self, stream: _StreamRun, track_id: int, reason: str) -> None:
        info = stream.live.pop(track_id)
        state = stream.smoother.get(track_id)
        self.emit(stream, {
            "event": "track_left", "time": round(info.last_time, 3), "frame": info.last_frame,
            "track": track_id, "box": _box(info.box), "first_frame": info.first_frame, "frames_seen": info.seen,
            "attributes": self.on_names(stream, track_id), "probs": self.probs_dict(state.probs if state else None),
            "reason": reason,
        })  # fmt: skip
        stream.scheduler.forget(track_id)
        stream.smoother.forget(track_id)


def _box(box: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in box]


def _unique(sinks: Sequence[Sink]) -> list[Sink]:
    return list({id(s): s for s in sinks}.values())


def run_pipeline(
    source: FrameSource | str,
    backend: Backend,
    detector: Detector,
    tracker: Tracker,
    sinks: Sequence[Sink] = (),
    options: PipelineOptions | None = None,
    name: str | None = None,
) -> Summary:
    """Run the whole video pipeline on one source until it ends (or max_frames / a sink stops it).

    `name` (the events' "stream") defaults to the name `partool video SOURCE` gives it.
    """
    if name is None:
        name = default_stream_name(source if isinstance(source, str) else str(source.target), 0)
    return run_streams([Stream(name, source, detector, tracker, sinks)], backend, (), options)


def run_streams(
    streams: Sequence[Stream],
    backend: Backend,
    sinks: Sequence[Sink] = (),
    options: PipelineOptions | None = None,
) -> Summary:
    """Run many streams through one PAR backend until every stream has ended (or a sink / `stop` ends the run)."""
    if not streams:
        raise ValueError("run_streams needs at least one stream")
    opts = options or PipelineOptions()
    warm = time.perf_counter()
    try:
        backend.warmup()  # before a camera opens: its first frames are not left waiting
    except BaseException:
        _close_sources([s.source for s in streams])  # opened by the caller: still released on the way out
        raise
    warmup_seconds = time.perf_counter() - warm
    run = _Run(opts, backend, sinks, _open_streams(streams, opts, backend))
    summary = run.summary
    summary.detector, summary.tracker = streams[0].detector.name, streams[0].tracker.name
    summary.backend, summary.warmup_seconds = backend.describe(), warmup_seconds
    workers = min(len(streams), os.cpu_count() or 1)
    run.start = time.perf_counter()
    stopped_by = "error"  # replaced unless the loop raised
    try:
        with ThreadPoolExecutor(workers, "partool-stream") if len(streams) > 1 else _Inline() as pool:
            stopped_by = _loop(run, pool)
    except KeyboardInterrupt:
        stopped_by = "interrupted"
    finally:
        summary.seconds = time.perf_counter() - run.start
        for stream in run.streams:
            if not stream.stopped_by:
                _end_stream(run, stream, stopped_by)
        _close_sources([s.source for s in run.streams])
        _summarise(run, stopped_by)
        _close_sinks(run)
    return summary


def _open_streams(streams: Sequence[Stream], opts: PipelineOptions, backend: Backend) -> list[_StreamRun]:
    """A started source per stream (names given as text are opened here); all closed again if one fails."""
    runs: list[_StreamRun] = []
    try:
        for stream in streams:
            source = open_source(stream.source) if isinstance(stream.source, str) else stream.source
            runs.append(_StreamRun(stream, source, Scheduler(opts.every, opts.grow),
                                   Smoother(backend.threshold, opts.alpha, opts.margin)))  # fmt: skip
    except BaseException:
        _close_sources([r.source for r in runs] + [s.source for s in streams])
        raise
    return runs


def _close_sources(sources: Sequence[FrameSource | str]) -> None:
    for source in sources:
        if isinstance(source, FrameSource):
            source.close()


class _Inline:
    """A stand-in for the thread pool when one stream runs: map on the calling thread."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Callable[..., Any], *items: Sequence[Any]) -> Any:
        return map(fn, *items)


def _loop(run: _Run, pool: ThreadPoolExecutor | _Inline) -> str:
    """Steps until every stream has ended; returns what ended the run when it was not the streams."""
    for stream in run.streams:
        stream.source.wake_on(run.wake)
    while True:
        if _stopping(run):
            return "stopped"
        t0 = time.perf_counter()
        ready = _next_frames(run)
        if not ready:
            return "stopped" if _stopping(run) else ""
        run.times.add("read", time.perf_counter() - t0)
        steps = list(pool.map(_detect_and_track, ready, [run.options.min_crop] * len(ready)))
        for step in steps:
            run.times.add("detect", step.detect_s)
            run.times.add("track", step.track_s)
        inferred = _infer(run, [s for s in steps if not s.error])
        keep_going = True
        for step in steps:
            keep_going = _finish_frame(run, step, inferred) and keep_going
        if not keep_going:
            return "window closed"


def _next_frames(run: _Run) -> list[tuple[_StreamRun, Frame]]:
    """The next frame of every running stream that has one, in stream order; empty when none is left.

    Files and folders never drop frames, so when no live frame is waiting the step waits for them: a run
    of files moves in lockstep (the same batches every time). A live frame is never held up by a file.
    Streams whose source has finished are ended here.
    """
    while True:
        run.wake.clear()  # before polling: a frame arriving after the poll sets it again
        ready: dict[int, Frame] = {}
        behind = []
        for stream in run.streams:
            if stream.stopped_by:
                continue
            frame = stream.source.poll(wait=False)
            if frame is not None:
                ready[id(stream)] = frame
            elif not stream.source.finished and not stream.source.live:
                behind.append(stream)
        if not any(s.source.live for s in run.streams if id(s) in ready):
            for stream in behind:
                frame = stream.source.poll(wait=True)
                if frame is not None:
                    ready[id(stream)] = frame
        for stream in run.streams:
            if not stream.stopped_by and stream.source.finished:
                _end_stream(run, stream, "source ended")
        if ready or all(s.stopped_by for s in run.streams):
            return [(s, ready[id(s)]) for s in run.streams if id(s) in ready]
        if _stopping(run):
            return []
        run.wake.wait(0.1)


def _stopping(run: _Run) -> bool:
    return run.options.stop is not None and run.options.stop.is_set()


def _detect_and_track(item: tuple[_StreamRun, Frame], min_crop: int) -> _Step:
    """Detection, tracking and the PAR candidates of one stream's frame (runs on the pool's threads).

    An exception ends this stream only (`error`): a broken frame or detector must not stop the others.
    """
    stream, frame = item
    image = frame.image
    t0 = time.perf_counter()
    try:
        boxes, scores = stream.stream.detector.detect(image, frame.index)
        t1 = time.perf_counter()
        tracks = stream.stream.tracker.update(boxes, scores, image)
    except Exception as e:
        empty = np.zeros((0, 4), np.float32)
        return _Step(
            stream, frame, empty, empty[:, 0], [], [], [], 0.0, 0.0, f"error: {type(e).__name__}: {e}"
        )
    t2 = time.perf_counter()
    appeared = _remember(stream, tracks, frame)
    height, width = image.shape[:2]
    candidates = []
    for track in tracks:
        x1, y1, x2, y2 = clip_box(track.box, width, height)
        if x2 - x1 >= min_crop and y2 - y1 >= min_crop:
            candidates.append(track)
    waiting = stream.scheduler.waiting(candidates, frame.index)
    return _Step(stream, frame, boxes, scores, tracks, appeared, waiting, t1 - t0, t2 - t1)


def _remember(stream: _StreamRun, tracks: list[Track], frame: Frame) -> list[Track]:
    """Update the stream's live tracks with this frame's; returns the tracks seen for the first time."""
    appeared = [t for t in tracks if t.id not in stream.live]
    for track in tracks:
        info = stream.live.get(track.id)
        if info is None:
            info = stream.live[track.id] = _Live(frame.index, frame.index, frame.time, track.box)
            stream.tracks += 1
        info.last_frame, info.last_time, info.box = frame.index, frame.time, track.box
        info.seen += 1
    return appeared


def _infer(run: _Run, steps: list[_Step]) -> dict[tuple[int, int], np.ndarray]:
    """PAR on the due crops of all streams in one batch of at most the backend's max batch.

    The most urgent go first (new tracks, then the longest waiting), streams taking turns on ties; the
    rest stay due for the next step. Returns {(id of the stream, track id): probabilities}.
    """
    queue = [(-urgency, rank, step, track)
             for step in steps for rank, (urgency, track) in enumerate(step.waiting)]  # fmt: skip
    queue.sort(key=lambda item: item[:2])
    chosen = [(step, track) for _, _, step, track in queue[: run.backend.max_batch]]
    if not chosen:
        return {}
    t0 = time.perf_counter()
    crops = [_cut(run, step, track) for step, track in chosen]
    t1 = time.perf_counter()
    batch = run.backend.preprocess(crops)
    t2 = time.perf_counter()
    probs = run.backend.predict(batch)
    run.times.add("crop", t1 - t0)  # cutting, and the sinks' `crop` (the event store's thumbnails)
    run.times.add("preprocess", t2 - t1)
    run.times.add("par", time.perf_counter() - t2)
    for step in steps:
        due = [track for s, track in chosen if s is step]
        step.run.scheduler.mark(due, step.frame.index)
        step.run.crops += len(due)
    run.batch_sizes[len(chosen)] += 1
    return {(id(step.run), track.id): p for (step, track), p in zip(chosen, probs, strict=True)}


def _cut(run: _Run, step: _Step, track: Track) -> np.ndarray:
    """The track's crop for PAR, also handed to every sink's `crop` (pixelated for them under --privacy)."""
    image = step.frame.image
    x1, y1, x2, y2 = clip_box(track.box, image.shape[1], image.shape[0])
    crop = image[y1:y2, x1:x2]
    shown = crop
    if run.options.privacy:
        shown = crop.copy()
        pixelate(shown, (0, 0, x2 - x1, y2 - y1), block=max(4, round(image.shape[0] / 60)))
    for sink in run.sinks_of(step.run):
        sink.crop(step.run.name, track.id, shown, track.box)
    return crop


def _finish_frame(run: _Run, step: _Step, inferred: dict[tuple[int, int], np.ndarray]) -> bool:
    """Smoothing, events and output of one stream's frame; False when a sink asks to stop the run."""
    stream = step.run
    if step.error:
        _end_stream(run, stream, step.error)
        return True
    t0 = time.perf_counter()
    mine = {tid: p for (sid, tid), p in inferred.items() if sid == id(stream)}
    _smooth_and_emit(run, step, mine)
    views = _views(stream, step.tracks, mine)
    run.times.add("smooth+events", time.perf_counter() - t0)
    frame = step.frame
    if run.options.on_frame is not None:
        run.options.on_frame(
            FrameResult(frame.index, frame.time, step.boxes, step.scores, views, stream.name)
        )
    keep_going = _render(run, stream, frame, views)
    stream.frames += 1
    if run.options.progress is not None:
        run.options.progress(frame.index)
    if run.options.max_frames is not None and stream.frames >= run.options.max_frames:
        _end_stream(run, stream, "max frames")
    return keep_going


def _smooth_and_emit(run: _Run, step: _Step, inferred: dict[int, np.ndarray]) -> None:
    """Fold new inferences into the smoothed state; emit appeared / changed / left events."""
    stream, frame = step.run, step.frame
    changes = {}
    for track_id, probs in inferred.items():
        stream.live[track_id].raw = probs
        changes[track_id] = stream.smoother.update(track_id, probs)
    for track in step.appeared:
        state = stream.smoother.get(track.id)
        run.emit(stream, {
            "event": "track_appeared", "time": round(frame.time, 3), "frame": frame.index,
            "track": track.id, "box": _box(track.box), "attributes": run.on_names(stream, track.id),
            "probs": run.probs_dict(state.probs if state else None),
        })  # fmt: skip
    appeared_ids = {t.id for t in step.appeared}
    for track_id, (state, changed) in changes.items():
        if track_id in appeared_ids:
            continue
        for a in changed:
            run.summary.attribute_changes += 1
            run.emit(stream, {
                "event": "attribute_changed", "time": round(frame.time, 3), "frame": frame.index,
                "track": track_id, "box": _box(stream.live[track_id].box),
                "attribute": run.backend.attributes[a], "value": bool(state.on[a]),
                "prob": round(float(state.probs[a]), 4), "probs": run.probs_dict(state.probs),
            })  # fmt: skip
    for track_id in [k for k, v in stream.live.items() if frame.index - v.last_frame > run.options.linger]:
        run.leave(stream, track_id, "lost")


def _views(stream: _StreamRun, tracks: list[Track], inferred: dict[int, np.ndarray]) -> list[TrackView]:
    views = []
    for track in tracks:
        state = stream.smoother.get(track.id)
        views.append(TrackView(
            track.id, track.box, stream.live[track.id].raw, state.probs if state else None,
            state.on if state else None, track.id in inferred,
        ))  # fmt: skip
    return views


def _render(run: _Run, stream: _StreamRun, frame: Frame, views: list[TrackView]) -> bool:
    """Draw the frame for the stream's frame sinks (video, window); False when one asks to stop."""
    outputs = [s for s in stream.stream.sinks if s.wants_frames]
    if not outputs:
        return True
    t0 = time.perf_counter()
    labels = [(v.id, v.box, run.on_names(stream, v.id)) for v in views]
    annotated = draw_tracks(frame.image, labels, run.options.privacy)
    t1 = time.perf_counter()
    run.times.add("render", t1 - t0)
    keep_going = True
    for sink in outputs:
        keep_going = sink.frame(annotated, stream.source.fps) and keep_going
    run.times.add("write", time.perf_counter() - t1)
    return keep_going


def _end_stream(run: _Run, stream: _StreamRun, reason: str) -> None:
    """One stream is over: its reader is told to stop (not waited for) and its tracks leave."""
    stream.stopped_by = reason
    stream.seconds = time.perf_counter() - run.start
    stream.source.stop()
    for track_id in list(stream.live):
        run.leave(stream, track_id, "end of run")


def _summarise(run: _Run, stopped_by: str) -> None:
    """Fill the summary: totals, stage times, PAR batch sizes, and each stream's facts."""
    summary, streams = run.summary, run.streams
    summary.frames = sum(s.frames for s in streams)
    summary.tracks = sum(s.tracks for s in streams)
    summary.crops = sum(s.crops for s in streams)
    summary.par_calls = sum(run.batch_sizes.values())
    summary.fps = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    summary.stages = run.times.report()
    summary.par_batches = _batch_report(run.batch_sizes)
    summary.streams = [_stream_report(s) for s in streams]
    reasons = list(dict.fromkeys(s.stopped_by for s in streams))
    summary.stopped_by = stopped_by or ", ".join(reasons)
    if len(streams) == 1:
        summary.source = streams[0].source.describe()
    else:
        summary.source = {"streams": len(streams),
                          "end_reason": "; ".join(f"{s.name}: {s.source.end_reason}" for s in streams)}  # fmt: skip


def _batch_report(sizes: Counter[int]) -> dict[str, Any]:
    """PAR batch sizes: {histogram: {size: calls}, mean, max} (bounded: at most max_batch keys)."""
    calls = sum(sizes.values())
    if not calls:
        return {"histogram": {}, "mean": 0.0, "max": 0}
    return {
        "histogram": {str(k): sizes[k] for k in sorted(sizes)},
        "mean": round(sum(k * v for k, v in sizes.items()) / calls, 3),
        "max": max(sizes),
    }


def _stream_report(stream: _StreamRun) -> dict[str, Any]:
    facts = stream.source.describe()
    return {
        "stream": stream.name, "source": facts["source"], "kind": facts["kind"], "live": facts["live"],
        "frames": stream.frames, "seconds": round(stream.seconds, 3),
        "fps": round(stream.frames / stream.seconds, 3) if stream.seconds > 0 else 0.0,
        "source_fps": facts["fps"], "dropped_frames": facts["dropped_frames"], "reconnects": facts["reconnects"],
        "tracks": stream.tracks, "crops": stream.crops, "stopped_by": stream.stopped_by,
        "end_reason": facts["end_reason"], "outputs": stream.outputs,
    }  # fmt: skip


def _close_sinks(run: _Run) -> None:
    """The end record to every sink, then close them: the run's outputs, and each stream's own."""
    end = {"event": "end", **run.summary.to_dict()}
    for sink in _unique([*run.sinks, *(s for st in run.streams for s in st.stream.sinks)]):
        sink.event(end)
    closed = {id(s) for s in run.sinks}
    for sink in run.sinks:
        run.summary.outputs.update(sink.close())
    for stream in run.streams:
        for sink in stream.stream.sinks:
            if id(sink) not in closed:
                closed.add(id(sink))
                stream.outputs.update(sink.close())
        if len(run.streams) == 1:
            run.summary.outputs.update(stream.outputs)
