"""partool against a real RTSP server: GStreamer's (Debian's gir1.2-gst-rtsp-server-1.0, run by the system
python3 that has `gi`) serves the street clip on 127.0.0.1. A two-stream run (the RTSP stream + a file)
loses the server mid-stream and gets it back: partool reconnects, the file stream never stops, and every
event reaches the event store.

Needs: python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly}, gstreamer1.0-libav
(apt-get install -y …); skipped, naming the missing package, without them.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
import torch

from partool.artifacts import build_meta
from partool.data.street_clip import render_clip
from partool.data.synth import ATTRIBUTES
from partool.models import create_model
from partool.models.run_folder import save_run
from partool.runtime import load_backend
from partool.video.detectors import MotionDetector
from partool.video.pipeline import PipelineOptions, Stream, run_streams
from partool.video.sinks import EventSink
from partool.video.sources import Backoff, FrameSource, open_source
from partool.video.tracking import IoUTracker

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's, where python3-gi installs `gi`
FPS = 15.0

PROBE = """
import sys
try:
    import gi
except ImportError:
    sys.exit("python3-gi")
try:
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import Gst, GstRtspServer
except (ImportError, ValueError):
    sys.exit("gir1.2-gst-rtsp-server-1.0")
Gst.init(None)
for element, package in (("decodebin", "gstreamer1.0-plugins-base"), ("videoconvert", "gstreamer1.0-plugins-base"),
                         ("qtdemux", "gstreamer1.0-plugins-good"), ("rtph264pay", "gstreamer1.0-plugins-good"),
                         ("x264enc", "gstreamer1.0-plugins-ugly"), ("avdec_mpeg4", "gstreamer1.0-libav")):
    if Gst.ElementFactory.find(element) is None:
        sys.exit(package)
"""

SERVER = """
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

Gst.init(None)
clip, port = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()  # not shared: every client plays the clip from its start
factory.set_launch(
    f'( filesrc location="{clip}" ! decodebin ! videoconvert ! x264enc tune=zerolatency '
    'speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 config-interval=1 )'
)
server.get_mount_points().add_factory("/clip", factory)
if not server.attach(None):
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print(server.get_bound_port(), flush=True)
GLib.MainLoop().run()
"""


def missing() -> str | None:
    """Why this test cannot run here (naming the package to install), or None."""
    if not SYSTEM_PYTHON.is_file():
        return "needs Debian's python3 with python3-gi: apt-get install -y python3-gi"
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", PROBE], capture_output=True, text=True, timeout=60)
    if probe.returncode:
        package = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "python3-gi"
        return f"needs Debian's {package}: apt-get install -y {package}"
    if "FFMPEG:                      YES" not in cv2.getBuildInformation():
        return "needs an OpenCV with FFmpeg to read RTSP (opencv-python's wheels have it)"
    return None


class Server:
    """The RTSP server in a subprocess; `start` on a free port first, then again on the same one."""

    def __init__(self, clip: Path, log: Path) -> None:
        self.clip, self.log, self.port, self.process = clip, log, 0, None

    def start(self) -> None:
        for _ in range(20):  # the port of a killed server may take a moment to be free
            with self.log.open("a") as log:
                process = subprocess.Popen(
                    [str(SYSTEM_PYTHON), "-c", SERVER, str(self.clip), str(self.port)],
                    stdout=subprocess.PIPE, stderr=log, text=True,
                )  # fmt: skip
            line = process.stdout.readline().strip()
            if line.isdigit() and int(line) > 0:
                self.process, self.port = process, int(line)
                return
            process.kill()
            process.wait()
            time.sleep(0.25)
        raise AssertionError(f"the RTSP server did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/clip"


class PacedLoop:
    """The clip read at its frame rate, from the start again at its end: a file stream that runs all along."""

    def __init__(self, path: str) -> None:
        self.path, self.capture, self.next = path, cv2.VideoCapture(path), time.monotonic()

    def isOpened(self) -> bool:
        return self.capture.isOpened()

    def read(self):
        self.next += 1.0 / FPS
        time.sleep(max(0.0, self.next - time.monotonic()))
        ok, image = self.capture.read()
        if not ok:
            self.capture.release()
            self.capture = cv2.VideoCapture(self.path)
            ok, image = self.capture.read()
        return ok, image

    def get(self, prop: int) -> float:
        return 0.0 if prop == cv2.CAP_PROP_FRAME_COUNT else self.capture.get(prop)

    def release(self) -> None:
        self.capture.release()


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def event_store_sink(path: Path) -> list:
    """The event store's sink, when that module is there."""
    try:
        from partool.video.event_store import EventStoreSink
    except ImportError:
        return []
    return [EventStoreSink(path)]


def test_rtsp_stream_reconnects_while_the_file_stream_runs_on(tmp_path):
    reason = missing()
    if reason:
        pytest.skip(reason)
    clip = tmp_path / render_clip(str(tmp_path / "clip.mp4"), seconds=10, fps=FPS, size=(320, 180))["video"]
    torch.manual_seed(0)
    model = create_model("vim-t", len(ATTRIBUTES), img_size=(64, 32), depth=1).eval()
    backend = load_backend(
        save_run(tmp_path / "run", model, build_meta(model, list(ATTRIBUTES), "synth")), device="cpu"
    )
    server = Server(clip, tmp_path / "server.log")
    server.start()
    try:
        rtsp = open_source(server.url, backoff=Backoff(first=0.5, factor=1.5, cap=2.0, retries=12))
        file = FrameSource("file", str(clip), str(clip), False, 16, opener=lambda t: PacedLoop(t))
        sinks = [EventSink(tmp_path / "events.jsonl"), *event_store_sink(tmp_path / "events.db")]
        frames: Counter[str] = Counter()
        stop = threading.Event()
        options = PipelineOptions(every=5, on_frame=lambda r: frames.update([r.stream]), stop=stop)
        streams = [
            Stream("rtsp", rtsp, MotionDetector(), IoUTracker()),
            Stream("file", file, MotionDetector(), IoUTracker()),
        ]
        summaries = []
        runner = threading.Thread(
            target=lambda: summaries.append(run_streams(streams, backend, sinks, options))
        )
        runner.start()
        try:
            wait_for(lambda: frames["rtsp"] >= 20, 20, "20 RTSP frames")
            server.kill()
            file_at_kill = frames["file"]
            time.sleep(1.0)
            server.start()
            wait_for(lambda: rtsp.reconnects >= 1, 20, "a reconnect")
            file_at_reconnect, rtsp_at_reconnect = frames["file"], frames["rtsp"]
            wait_for(lambda: frames["rtsp"] >= rtsp_at_reconnect + 15, 15, "15 RTSP frames after the restart")
        finally:
            stop.set()
            runner.join(30)
    finally:
        server.kill()
    assert not runner.is_alive() and summaries
    facts = {s["stream"]: s for s in summaries[0].streams}
    assert facts["rtsp"]["reconnects"] >= 1 and facts["rtsp"]["frames"] >= rtsp_at_reconnect + 15
    assert facts["file"]["stopped_by"] == "stopped"  # ran until the end of the run
    assert file_at_reconnect > file_at_kill  # and on through the outage
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    appeared = Counter(e["stream"] for e in events if e["event"] == "track_appeared")
    assert appeared["rtsp"] >= 1 and appeared["file"] >= 1
    if len(sinks) == 2:  # the event store holds every track and every change the events file has
        with sqlite3.connect(tmp_path / "events.db") as db:
            stored = dict(
                db.execute(
                    "SELECT s.name, count(*) FROM tracks t JOIN streams s ON s.id = t.stream_id GROUP BY s.name"
                )
            )
            changes = db.execute("SELECT count(*) FROM changes").fetchone()[0]
        assert stored == dict(appeared)
        assert changes == sum(e["event"] == "attribute_changed" for e in events)
