"""Where the pipeline's results go: a window, an annotated video, a JSON Lines event log, the end summary.

- `WindowSink` (`--show`) opens a window only where one can appear (a display and an OpenCV with GUI
  support); otherwise it says so once and the run continues headless.
- `VideoSink` (`--save`) writes to a temporary name beside the target and renames it at the end — also
  when the run ends early or fails, so what was written is kept; a reader never sees a half-named file.
  `--segment` cuts it into files of a fixed duration, each renamed into place when complete.
- `EventSink` (`--events`) writes one JSON object per line and flushes each, so `tail -f` follows the run
  and a crash loses at most the line being written.
- `Summary` is what `run_pipeline` returns: frames, FPS, per-stage latency, tracks, source facts.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from partool.errors import UserError

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class Sink:
    """Base: a sink takes annotated frames (`wants_frames`), events, or both; all methods default to no-ops."""

    wants_frames = False

    def frame(self, image: np.ndarray, fps: float) -> bool:
        """Consume one annotated frame; False asks the pipeline to stop (a closed window)."""
        return True

    def event(self, record: dict[str, Any]) -> None:
        """Consume one event (track appeared / attribute changed / track left / end)."""

    def crop(self, stream: str, track_id: int, image: np.ndarray, box: Any) -> None:
        """Consume one candidate picture of a track: the BGR crop the PAR model is given (H, W, 3 uint8) and
        the box it was cut from, (x1, y1, x2, y2) frame pixels. Called where the pipeline cuts PAR crops, so
        a track's first crop may come before its "track_appeared" event; the event store keeps the best."""

    def close(self) -> dict[str, Any]:
        """Finish; returns facts for the summary (e.g. the path written)."""
        return {}


def display_available() -> bool:
    """A window can appear: a display server is named (Linux/BSD) and OpenCV was built with a GUI."""
    if sys.platform.startswith(("linux", "freebsd")) and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        cv2.namedWindow("partool-probe", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("partool-probe")
    except cv2.error:  # opencv-python-headless: "The function is not implemented"
        return False
    return True


class WindowSink(Sink):
    """Live window; `q` or Esc stops the run. Headless machines get a one-line notice instead."""

    wants_frames = True

    def __init__(self, title: str = "partool video") -> None:
        self.title = title
        self.enabled = display_available()
        if not self.enabled:
            print(
                "partool: --show ignored: no display here (or OpenCV without GUI); running headless",
                file=sys.stderr,
            )

    def frame(self, image: np.ndarray, fps: float) -> bool:
        if not self.enabled:
            return True
        cv2.imshow(self.title, image)
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> dict[str, Any]:
        if self.enabled:
            cv2.destroyWindow(self.title)
        return {"show": self.enabled}


class VideoSink(Sink):
    """Annotated video at the source's frame rate; opened on the first frame (its size), renamed at close.

    With `segment_seconds`, the video is cut into files of that many seconds of frames, each named after
    the wall-clock time its first frame arrived (`cam1-20261204-143000.mp4`) and renamed into place as soon
    as it is complete: an endless stream gives files that can be copied, played and deleted while it runs
    (one MP4 only becomes playable once closed).
    """

    wants_frames = True

    def __init__(
        self, path: str | Path, segment_seconds: float | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise UserError(f"--save {path}: use a .mp4, .avi or .mkv file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--save {path}: cannot create its folder ({e.strerror})") from None
        if not os.access(self.path.parent, os.W_OK):
            raise UserError(f"--save {path}: folder {self.path.parent} is not writable")
        self.segment_seconds, self.clock = segment_seconds, clock
        self.codec = VIDEO_CODECS[suffix]
        self.writer: cv2.VideoWriter | None = None
        self.target = self.path  # the file being written
        self.tmp = self._partial(self.path)
        self.written: list[Path] = []  # finished files
        self.frames = 0
        self.segment_frames = 0  # frames in the file being written

    def frame(self, image: np.ndarray, fps: float) -> bool:
        if (
            self.writer is not None
            and self.segment_seconds
            and self.segment_frames >= self.segment_seconds * fps
        ):
            self._finish()
        if self.writer is None:
            self._open((image.shape[1], image.shape[0]), fps)
        self.writer.write(image)
        self.frames += 1
        self.segment_frames += 1
        return True

    def close(self) -> dict[str, Any]:
        if self.writer is not None:
            self._finish()
        if not self.written:
            return {"video": None}
        report: dict[str, Any] = {"video": str(self.written[-1]), "video_frames": self.frames}
        if self.segment_seconds:
            report["videos"] = [str(p) for p in self.written]
        return report

    def _open(self, size: tuple[int, int], fps: float) -> None:
        if self.segment_seconds:
            self.target = self._segment_name()
            self.tmp = self._partial(self.target)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.codec), fps, size)
        if not self.writer.isOpened():
            self.writer = None
            raise UserError(
                f"--save {self.path}: this OpenCV cannot write {self.codec} video; try a .avi name"
            )
        self.segment_frames = 0

    def _finish(self) -> None:
        assert self.writer is not None
        self.writer.release()
        self.writer = None
        os.replace(self.tmp, self.target)
        self.written.append(self.target)

    def _segment_name(self) -> Path:
        """`<stem>-YYYYmmdd-HHMMSS<suffix>` in local time; `-2`, `-3`… when that name is taken."""
        stamp = datetime.fromtimestamp(self.clock()).strftime("%Y%m%d-%H%M%S")
        base = f"{self.path.stem}-{stamp}"
        name, n = self.path.with_name(base + self.path.suffix), 1
        while name.exists() or name in self.written:
            n += 1
            name = self.path.with_name(f"{base}-{n}{self.path.suffix}")
        return name

    @staticmethod
    def _partial(path: Path) -> Path:
        return path.with_name(f".{path.stem}.partial{path.suffix}")


class EventSink(Sink):
    """JSON Lines: one event per line, flushed at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = self.path.open("w", encoding="utf-8")
        except OSError as e:
            raise UserError(f"--events {path}: cannot write it ({e.strerror})") from None
        self.count = 0

    def event(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record, separators=(",", ":"), default=_plain) + "\n")
        self.handle.flush()
        self.count += 1

    def close(self) -> dict[str, Any]:
        self.handle.close()
        return {"events": str(self.path), "event_count": self.count}


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class StageTimes:
    """Per-stage latency with bounded memory: exact count and mean, percentiles over the last `window` calls."""

    def __init__(self, window: int = 2048) -> None:
        self.window = window
        self.count: dict[str, int] = {}
        self.total: dict[str, float] = {}
        self.recent: dict[str, deque[float]] = {}

    def add(self, stage: str, seconds: float) -> None:
        if stage not in self.count:
            self.count[stage], self.total[stage] = 0, 0.0
            self.recent[stage] = deque(maxlen=self.window)
        self.count[stage] += 1
        self.total[stage] += seconds
        self.recent[stage].append(seconds)

    def report(self) -> dict[str, dict[str, float]]:
        """{stage: {calls, mean_ms, p50_ms, p95_ms}} in insertion order."""
        out = {}
        for stage, count in self.count.items():
            recent = np.fromiter(self.recent[stage], np.float64) * 1e3
            out[stage] = {
                "calls": count,
                "mean_ms": round(self.total[stage] / count * 1e3, 3),
                "p50_ms": round(float(np.percentile(recent, 50)), 3),
                "p95_ms": round(float(np.percentile(recent, 95)), 3),
            }
        return out


@dataclass
class Summary:
    """The end-of-run report of `run_pipeline` (also the last line of the events file)."""

    frames: int = 0
    seconds: float = 0.0  # the run itself, after the backend's warm-up (warmup_seconds)
    warmup_seconds: float = 0.0
    fps: float = 0.0
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    tracks: int = 0
    par_calls: int = 0
    crops: int = 0
    attribute_changes: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    backend: dict[str, Any] = field(default_factory=dict)
    detector: str = ""
    tracker: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    stopped_by: str = ""
    streams: list[dict[str, Any]] = field(default_factory=list)  # per stream: frames, FPS, drops …
    par_batches: dict[str, Any] = field(default_factory=dict)  # PAR batch sizes: histogram, mean, max

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[list[Any]]:
        """Stage table rows for people: stage, calls, mean, p50, p95 (ms)."""
        return [
            [stage, s["calls"], f"{s['mean_ms']:.2f}", f"{s['p50_ms']:.2f}", f"{s['p95_ms']:.2f}"]
            for stage, s in self.stages.items()
        ]

    def headline(self) -> str:
        fps = f"{self.fps:.1f}" if math.isfinite(self.fps) else "-"
        return (
            f"{self.frames} frames in {self.seconds:.1f} s ({fps} FPS), {self.tracks} tracks, "
            f"{self.crops} crops in {self.par_calls} PAR calls; source: {self.source.get('end_reason', '')}"
        )
