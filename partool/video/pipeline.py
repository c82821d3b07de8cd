"""`run_pipeline`: frames -> detector -> tracker -> scheduled crops -> PAR backend -> smoothing -> sinks.

One loop on the calling thread (the source decodes on its own thread). Every stage is timed. A track is
remembered for `linger` frames after it was last seen, so a person who is briefly hidden comes back with
the same smoothed attributes; after that it is reported as left and all its state is dropped, which keeps
memory flat on endless streams. Whatever ends the run — the source finishing or dying, `max_frames`, a
closed window, Ctrl-C — the sinks are closed (the video renamed into place, the events file complete)
and the summary is returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from partool.runtime.base import Backend
from partool.video.detectors import Detector
from partool.video.render import clip_box, draw_tracks
from partool.video.scheduling import Scheduler
from partool.video.sinks import Sink, StageTimes, Summary
from partool.video.smoothing import Smoother
from partool.video.sources import FrameSource, open_source
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


@dataclass
class PipelineOptions:
    every: int = 10  # re-run PAR on a track every N frames
    grow: float = 0.2  # ... or when its box area grew by this fraction
    alpha: float = 0.3  # EMA weight of a new inference
    margin: float = 0.1  # hysteresis half-width around the threshold
    linger: int = 30  # frames a vanished track keeps its state before "track left"
    max_frames: int | None = None
    privacy: bool = False
    min_crop: int = 8  # pixels; smaller boxes are tracked but not classified
    on_frame: Callable[[FrameResult], None] | None = None
    progress: Callable[[int], None] | None = None  # called with each finished frame's index


@dataclass
class _Live:
    first_frame: int
    last_frame: int
    last_time: float
    box: np.ndarray
    raw: np.ndarray | None = None
    seen: int = 0


@dataclass
class _Run:
    """Mutable state of one run."""

    options: PipelineOptions
    backend: Backend
    sinks: Sequence[Sink]
    scheduler: Scheduler
    smoother: Smoother
    times: StageTimes = field(default_factory=StageTimes)
    live: dict[int, _Live] = field(default_factory=dict)
    summary: Summary = field(default_factory=Summary)

    def probs_dict(self, probs: np.ndarray | None) -> dict[str, float] | None:
        if probs is None:
            return None
        return {n: round(float(p), 4) for n, p in zip(self.backend.attributes, probs, strict=True)}

    def on_names(self, track_id: int) -> list[str]:
        state = self.smoother.get(track_id)
        if state is None:
            return []
        return [n for n, on in zip(self.backend.attributes, state.on, strict=True) if on]

    def emit(self, record: dict) -> None:
        for sink in self.sinks:
            sink.event(record)

    def leave(self, track_id: int, reason: str) -> None:
        info = self.live.pop(track_id)
        state = self.smoother.get(track_id)
        self.emit({
            "event": "track_left", "time": round(info.last_time, 3), "frame": info.last_frame,
            "track": track_id, "box": _box(info.box), "first_frame": info.first_frame, "frames_seen": info.seen,
            "attributes": self.on_names(track_id), "probs": self.probs_dict(state.probs if state else None),
            "reason": reason,
        })  # fmt: skip
        self.scheduler.forget(track_id)
        self.smoother.forget(track_id)


def _box(box: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in box]


def run_pipeline(
    source: FrameSource | str,
    backend: Backend,
    detector: Detector,
    tracker: Tracker,
    sinks: Sequence[Sink] = (),
    options: PipelineOptions | None = None,
) -> Summary:
    """Run the whole video pipeline until the source ends (or max_frames / a sink stops it)."""
    opts = options or PipelineOptions()
    warm = time.perf_counter()
    try:
        backend.warmup()  # before a camera opens: its first frames are not left waiting
    except BaseException:
        if not isinstance(source, str):  # opened by the caller: still released on the way out
            source.close()
        raise
    warmup_seconds = time.perf_counter() - warm
    src = open_source(source) if isinstance(source, str) else source
    run = _Run(opts, backend, sinks, Scheduler(opts.every, opts.grow),
               Smoother(backend.threshold, opts.alpha, opts.margin))  # fmt: skip
    summary = run.summary
    summary.detector, summary.tracker, summary.backend = detector.name, tracker.name, backend.describe()
    summary.warmup_seconds = warmup_seconds
    draw = any(s.wants_frames for s in sinks)
    start = time.perf_counter()
    try:
        summary.stopped_by = _loop(run, src, detector, tracker, draw)
    except KeyboardInterrupt:
        summary.stopped_by = "interrupted"
    finally:
        summary.seconds = time.perf_counter() - start
        src.close()
        for track_id in list(run.live):
            run.leave(track_id, "end of run")
        summary.fps = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
        summary.stages = run.times.report()
        summary.source = src.describe()
        end = {"event": "end", **summary.to_dict()}
        for sink in sinks:
            sink.event(end)
        for sink in sinks:
            summary.outputs.update(sink.close())
    return summary


def _loop(run: _Run, src: FrameSource, detector: Detector, tracker: Tracker, draw: bool) -> str:
    opts, times, backend, summary = run.options, run.times, run.backend, run.summary
    frames = iter(src)
    while True:
        if opts.max_frames is not None and summary.frames >= opts.max_frames:
            return "max frames"
        t0 = time.perf_counter()
        frame = next(frames, None)
        t1 = time.perf_counter()
        if frame is None:
            return "source ended"
        times.add("read", t1 - t0)
        image = frame.image
        boxes, scores = detector.detect(image, frame.index)
        t2 = time.perf_counter()
        times.add("detect", t2 - t1)
        tracks = tracker.update(boxes, scores, image)
        t3 = time.perf_counter()
        times.add("track", t3 - t2)

        appeared = [t for t in tracks if t.id not in run.live]
        for track in tracks:
            info = run.live.get(track.id)
            if info is None:
                info = run.live[track.id] = _Live(frame.index, frame.index, frame.time, track.box)
                summary.tracks += 1
            info.last_frame, info.last_time, info.box = frame.index, frame.time, track.box
            info.seen += 1

        inferred = _infer(run, image, tracks, frame.index)
        t4 = time.perf_counter()

        changes = {}
        for track_id, probs in inferred.items():
            run.live[track_id].raw = probs
            state, changed = run.smoother.update(track_id, probs)
            changes[track_id] = (state, changed)
        for track in appeared:
            state = run.smoother.get(track.id)
            run.emit({
                "event": "track_appeared", "time": round(frame.time, 3), "frame": frame.index,
                "track": track.id, "box": _box(track.box), "attributes": run.on_names(track.id),
                "probs": run.probs_dict(state.probs if state else None),
            })  # fmt: skip
        appeared_ids = {t.id for t in appeared}
        for track_id, (state, changed) in changes.items():
            if track_id in appeared_ids:
                continue
            for a in changed:
                summary.attribute_changes += 1
                run.emit({
                    "event": "attribute_changed", "time": round(frame.time, 3), "frame": frame.index,
                    "track": track_id, "box": _box(run.live[track_id].box),
                    "attribute": backend.attributes[a], "value": bool(state.on[a]),
                    "prob": round(float(state.probs[a]), 4), "probs": run.probs_dict(state.probs),
                })  # fmt: skip
        for track_id in [k for k, v in run.live.items() if frame.index - v.last_frame > opts.linger]:
            run.leave(track_id, "lost")
        t5 = time.perf_counter()
        times.add("smooth+events", t5 - t4)

        views = []
        for track in tracks:
            state = run.smoother.get(track.id)
            views.append(TrackView(
                track.id, track.box, run.live[track.id].raw, state.probs if state else None,
                state.on if state else None, track.id in inferred,
            ))  # fmt: skip
        if opts.on_frame is not None:
            opts.on_frame(FrameResult(frame.index, frame.time, boxes, scores, views))
        keep_going = True
        if draw:
            annotated = draw_tracks(image, [(v.id, v.box, run.on_names(v.id)) for v in views], opts.privacy)
            t6 = time.perf_counter()
            times.add("render", t6 - t5)
            for sink in run.sinks:
                if sink.wants_frames:
                    keep_going = sink.frame(annotated, src.fps) and keep_going
            times.add("write", time.perf_counter() - t6)
        summary.frames += 1
        if opts.progress is not None:
            opts.progress(frame.index)
        if not keep_going:
            return "window closed"


def _infer(run: _Run, image: np.ndarray, tracks: list[Track], frame_index: int) -> dict[int, np.ndarray]:
    """PAR on the due tracks' crops in one batch; returns {track id: probabilities}."""
    height, width = image.shape[:2]
    candidates = []
    for track in tracks:
        x1, y1, x2, y2 = clip_box(track.box, width, height)
        if x2 - x1 >= run.options.min_crop and y2 - y1 >= run.options.min_crop:
            candidates.append(track)
    due = run.scheduler.due(candidates, frame_index, run.backend.max_batch)
    if not due:
        return {}
    t0 = time.perf_counter()
    crops = []
    for track in due:
        x1, y1, x2, y2 = clip_box(track.box, width, height)
        crops.append(image[y1:y2, x1:x2])
    batch = run.backend.preprocess(crops)
    t1 = time.perf_counter()
    probs = run.backend.predict(batch)
    t2 = time.perf_counter()
    run.times.add("preprocess", t1 - t0)
    run.times.add("par", t2 - t1)
    run.scheduler.mark(due, frame_index)
    run.summary.par_calls += 1
    run.summary.crops += len(due)
    return {track.id: p for track, p in zip(due, probs, strict=True)}
