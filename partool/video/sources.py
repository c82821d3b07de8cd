"""Frame sources: camera index (`cam0`, `0`), video file, `rtsp://…` stream, folder of images.

A reader thread decodes ahead into a bounded queue, so decoding overlaps detection and inference. Files
and folders are read completely and in order (the reader waits when the queue is full). Live sources
(cameras, streams) keep only the newest frames: when the consumer falls behind, the oldest waiting frame
is dropped, so the delay between the scene and the overlay stays bounded. A stream that stops delivering
is reopened with exponential back-off; when the retries run out, or a camera or file fails mid-run, the
source ends like a finished file (`end_reason` says why) and the pipeline writes its summary as usual.
Opening is checked up front: a missing file, an unopenable camera or a dead URL is a UserError — except
for a stream opened with `wait_at_start` (a run of several sources: one camera being down must not keep
the others from starting), which is retried with the same back-off as a lost one and ends like one.

Several sources run side by side, each with its own reader thread and queue: `poll` takes a frame without
blocking and `wake_on` lets one consumer sleep until any of them has something, so a pipeline serving
many cameras waits on one event instead of spinning. `name_sources` / `read_sources_file` turn the
command line's `SRC …` and `--sources FILE` into unique stream names.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from partool.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
FOLDER_FPS = 25.0  # a folder of images has no frame rate; time stamps and --save assume this one
STREAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # also a file name: DIR/<name>.mp4


class Capture(Protocol):
    """The part of cv2.VideoCapture a source uses (tests pass fakes)."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


Opener = Callable[[Any], Capture]


@dataclass(frozen=True)
class Frame:
    """A decoded BGR frame, its index in the source, and its time in seconds (media time for files)."""

    index: int
    time: float
    image: np.ndarray


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: first, first*factor, ... capped at `cap`, at most `retries` attempts."""

    first: float = 0.5
    factor: float = 2.0
    cap: float = 8.0
    retries: int = 6

    def delays(self) -> list[float]:
        return [min(self.cap, self.first * self.factor**i) for i in range(self.retries)]


def open_capture(target: Any) -> Capture:
    """cv2.VideoCapture with bounded open/read timeouts for network streams (FFmpeg backend)."""
    if isinstance(target, str) and target.startswith(STREAM_SCHEMES):
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(target)


def _redact(url: str) -> str:
    """A stream URL without its password, for messages and summaries."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


class FrameSource:
    """Iterate over `Frame`s from a reader thread; use as a context manager (or call close())."""

    def __init__(
        self,
        kind: str,
        target: Any,
        name: str,
        live: bool,
        queue_size: int,
        opener: Opener = open_capture,
        backoff: Backoff | None = None,
        sleep: Callable[[float], object] | None = None,
        files: list[Path] | None = None,
        wait_at_start: bool = False,
    ) -> None:
        self.kind, self.target, self.name, self.live = kind, target, name, live
        self._stop = threading.Event()
        # back-off waits end at once on close(), so stopping one stream of many never stalls the others
        self._opener, self._backoff, self._sleep = opener, backoff or Backoff(), sleep or self._stop.wait
        self._files = files
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=max(1, queue_size))
        self._waker: threading.Event | None = None
        self.finished = False  # the consumer has taken the end marker
        self.dropped = 0
        self.reconnects = 0
        self.end_reason = "running"
        self.fps = FOLDER_FPS
        self.size: tuple[int, int] | None = None  # (width, height)
        self.frame_count: int | None = None
        self._capture: Capture | None = None
        if files is None:
            self._capture = self._open_first(wait_at_start and kind == "stream")
        else:
            self.frame_count = len(files)
        self._thread = threading.Thread(target=self._run, name=f"partool-source-{kind}", daemon=True)
        self._thread.start()

    # -- opening ---------------------------------------------------------------------------------------

    def _open_first(self, wait: bool) -> Capture | None:
        """The opened capture; None when it is down but `wait` lets the reader thread keep trying."""
        capture = self._opener(self.target)
        if not capture.isOpened():
            capture.release()
            if wait:
                return None
            what = {
                "camera": f"camera {self.name} cannot be opened (is it connected and not used by another program?)",
                "stream": f"stream {self.name} cannot be opened (wrong URL, host unreachable or credentials refused)",
            }.get(self.kind, f"video {self.name} cannot be opened (not a video file OpenCV can decode)")
            raise UserError(what)
        self._take_rate(capture)
        return capture

    def _take_rate(self, capture: Capture) -> None:
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else FOLDER_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if self.kind == "file" and count > 0 else None

    def _reconnect(self) -> Capture | None:
        """Reopen a stream (lost, or down at start), waiting first*factor**k between tries; None when it stays
        dead."""
        for delay in self._backoff.delays():
            self._sleep(delay)
            if self._stop.is_set():
                return None
            capture = self._opener(self.target)
            if capture.isOpened():
                return capture
            capture.release()
        return None

    # -- the reader thread -------------------------------------------------------------------------------

    def _put(self, frame: Frame) -> bool:
        """Queue a frame; live sources drop the oldest waiting frame instead of waiting. False when stopped."""
        while not self._stop.is_set():
            try:
                if self.live:
                    self._queue.put_nowait(frame)
                else:
                    self._queue.put(frame, timeout=0.1)
                self._wake()
                return True
            except queue.Full:
                if self.live:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        return False

    def _run(self) -> None:
        try:
            self.end_reason = self._read_folder() if self._files is not None else self._read_capture()
        except Exception as e:  # a decoder crash ends the source like a lost stream
            self.end_reason = f"error: {type(e).__name__}: {e}"
        finally:
            if self._capture is not None:
                self._capture.release()
            while True:  # the end marker must arrive even when the queue is full
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        break
            self._wake()

    def _read_capture(self) -> str:
        if self._capture is None:  # down at start, and allowed to wait
            self._capture = self._reconnect()
            if self._capture is None:
                if self._stop.is_set():
                    return "stopped"
                return f"stream unavailable at start; {len(self._backoff.delays())} more tries failed"
            self._take_rate(self._capture)
        start = time.monotonic()
        index = 0
        while not self._stop.is_set():
            ok, image = self._capture.read()
            if not ok or image is None:
                if self.kind == "file":
                    return (
                        "end of file"
                        if self.frame_count is None or index >= self.frame_count
                        else (f"file ended early at frame {index} of {self.frame_count}")
                    )
                if self.kind == "camera":
                    return f"camera stopped delivering frames after {index}"
                self._capture.release()
                self._capture = self._reconnect()
                if self._capture is None:
                    return (
                        f"stream lost after {index} frames; {len(self._backoff.delays())} reconnects failed"
                    )
                self.reconnects += 1
                continue
            if self.size is None:
                self.size = (image.shape[1], image.shape[0])
            t = index / self.fps if self.kind == "file" else time.monotonic() - start
            if not self._put(Frame(index, t, image)):
                break
            index += 1
        return "stopped"

    def _read_folder(self) -> str:
        skipped = 0
        index = 0
        for path in self._files:
            if self._stop.is_set():
                return "stopped"
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                skipped += 1
                continue
            if self.size is None:
                self.size = (image.shape[1], image.shape[0])
            if not self._put(Frame(index, index / self.fps, image)):
                return "stopped"
            index += 1
        return "end of folder" + (f" ({skipped} unreadable image(s) skipped)" if skipped else "")

    # -- the consumer side --------------------------------------------------------------------------------

    def wake_on(self, event: threading.Event) -> None:
        """Set `event` whenever a frame or the end arrives (one consumer waits for any of many sources)."""
        self._waker = event

    def _wake(self) -> None:
        if self._waker is not None:
            self._waker.set()

    def poll(self, wait: bool) -> Frame | None:
        """The next frame; None once the source has ended (`finished`), or when `wait` is False and none is ready."""
        if self.finished:
            return None
        try:
            frame = self._queue.get() if wait else self._queue.get_nowait()
        except queue.Empty:
            return None
        self.finished = frame is None
        return frame

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.poll(wait=True)) is not None:
            yield frame

    def stop(self) -> None:
        """Ask the reader thread to end, without waiting for it (it may be inside a blocking read)."""
        self._stop.set()
        while True:  # unblock a reader waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def close(self) -> None:
        """Stop the reader thread and release the device; safe to call twice."""
        self.stop()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "kind": self.kind,
            "live": self.live,
            "fps": round(self.fps, 3),
            "dropped_frames": self.dropped,
            "reconnects": self.reconnects,
            "end_reason": self.end_reason,
        }


def source_kind(spec: str) -> str:
    """`camera`, `stream`, `folder` or `file`, as open_source would read `spec` (nothing is opened)."""
    lowered = str(spec).strip().lower()
    if (lowered[3:] if lowered.startswith("cam") else lowered).isdigit():
        return "camera"
    if lowered.startswith(STREAM_SCHEMES):
        return "stream"
    return "folder" if Path(str(spec).strip()).expanduser().is_dir() else "file"


def open_source(
    spec: str,
    queue_size: int | None = None,
    opener: Opener = open_capture,
    backoff: Backoff | None = None,
    sleep: Callable[[float], object] | None = None,
    wait_at_start: bool = False,
) -> FrameSource:
    """A started FrameSource for `cam0` / `0`, `rtsp://…` (and http(s)/rtmp), a video file or an image folder.

    `queue_size` defaults to 2 for live sources (latency) and 16 for files and folders (read-ahead).
    `wait_at_start`: a stream URL that cannot be opened yet is retried with back-off instead of raising.
    """
    text = str(spec).strip()
    kind = source_kind(text)
    if kind == "camera":
        index = int(text[3:] if text.lower().startswith("cam") else text)
        return FrameSource("camera", index, f"cam{index}", True, queue_size or 2, opener, backoff, sleep)
    if kind == "stream":
        return FrameSource(
            "stream",
            text,
            _redact(text),
            True,
            queue_size or 2,
            opener,
            backoff,
            sleep,
            wait_at_start=wait_at_start,
        )
    path = Path(text).expanduser()
    if kind == "folder":
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return FrameSource("folder", path, str(path), False, queue_size or 16, opener, backoff, sleep, files)
    if not path.is_file():
        raise UserError(
            f"video source {text!r} not found; pass a video file, a folder of images, cam0 (camera index) "
            "or an rtsp:// URL"
        )
    return FrameSource("file", str(path), str(path), False, queue_size or 16, opener, backoff, sleep)


def read_sources_file(path: str | Path) -> list[tuple[str, str]]:
    """(where, entry) per source line of a `--sources` file: one source a line, `#` starts a comment line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--sources {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append((f"{path}:{number}", line))
    return entries


def name_sources(entries: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(name, source) per (where, entry); `NAME=SOURCE` names a stream, otherwise a file or folder is called
    by its stem and anything else `cam<position>`. Two streams of one name are a UserError: their videos
    (DIR/<name>.mp4) and events could not be told apart."""
    named: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    for position, (where, entry) in enumerate(entries):
        name, source = _split_name(entry, where)
        if not source:
            raise UserError(f"{where}: {entry!r} names a stream but gives no source after '='")
        name = name or default_stream_name(source, position)
        if name in first:
            raise UserError(
                f"stream name {name!r} is used twice ({first[name]} and {where}); name them: NAME=SOURCE"
            )
        first[name] = where
        named.append((name, source))
    return named


def default_stream_name(source: str, position: int) -> str:
    """A file's or folder's stem; `cam<position>` for cameras and URLs."""
    stem = Path(source).expanduser().stem if source_kind(source) in ("file", "folder") else ""
    return stem or f"cam{position}"


def _split_name(entry: str, where: str) -> tuple[str | None, str]:
    """`NAME=SOURCE` -> (NAME, SOURCE); an entry whose text before its first `=` holds `:` or `/` (a URL's
    query, a path) has no name."""
    head, sep, tail = entry.partition("=")
    if not sep or ":" in head or "/" in head or "\\" in head:
        return None, entry
    if not STREAM_NAME.fullmatch(head.strip()):
        raise UserError(
            f"{where}: stream name {head.strip()!r} may hold only letters, digits, '_', '-' and '.' "
            "(it names the saved video file)"
        )
    return head.strip(), tail.strip()
