"""The video pipeline on a generated street clip (motion detector, tiny untrained Vim), its parts, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from partool.artifacts import build_meta
from partool.data.street_clip import render_clip
from partool.data.synth import ATTRIBUTES
from partool.errors import UserError
from partool.models import create_model
from partool.models.run_folder import save_run
from partool.runtime import load_backend
from partool.runtime.base import Backend
from partool.video.detectors import MotFileDetector, MotionDetector
from partool.video.pipeline import PipelineOptions, Stream, run_pipeline, run_streams
from partool.video.render import draw_tracks
from partool.video.scheduling import Scheduler
from partool.video.sinks import EventSink, Sink, VideoSink
from partool.video.smoothing import Smoother, count_flips
from partool.video.sources import Backoff, FrameSource, name_sources, open_source, read_sources_file
from partool.video.tracking import IoUTracker, Track, iou_matrix

W, H = 320, 180


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    truth = render_clip(str(folder / "street.mp4"), seconds=6.4, fps=15, size=(W, H), num_people=4)
    return folder / truth["video"], truth


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("vim-t", len(ATTRIBUTES), img_size=(64, 32), depth=1).eval()
    return save_run(tmp_path_factory.mktemp("run"), model, build_meta(model, list(ATTRIBUTES), "synth"))


@pytest.fixture(scope="module")
def pipeline_run(clip, run_dir, tmp_path_factory):
    video, truth = clip
    out = tmp_path_factory.mktemp("out")
    frames = []
    summary = run_pipeline(
        str(video), load_backend(run_dir, device="cpu"), MotionDetector(), IoUTracker(),
        [EventSink(out / "events.jsonl"), VideoSink(out / "annotated.mp4")],
        PipelineOptions(every=8, on_frame=frames.append),
    )  # fmt: skip
    return summary, frames, out, truth


def test_pipeline_finds_the_people_of_the_clip(pipeline_run):
    summary, frames, _, truth = pipeline_run
    assert summary.frames == truth["num_frames"] == len(frames)
    assert summary.source["end_reason"] == "end of file"
    assert abs(summary.tracks - len(truth["tracks"])) <= 1
    # detection recall on people fully inside the frame, mostly visible and not tiny
    hits = total = 0
    for gt_frame, result in zip(truth["frames"], frames, strict=True):
        gt = [o["box"] for o in gt_frame["objects"]
              if o["visible"] > 0.5 and o["box"][0] > 0 and o["box"][2] < W and o["box"][3] - o["box"][1] > 20]  # fmt: skip
        total += len(gt)
        if gt and len(result.boxes):
            hits += int((iou_matrix(np.asarray(gt, np.float32), result.boxes).max(1) >= 0.4).sum())
    assert total > 100 and hits / total >= 0.8
    assert summary.crops >= summary.tracks and summary.par_calls <= summary.frames
    assert {"read", "detect", "track", "preprocess", "par", "render", "write"} <= set(summary.stages)


def test_events_and_video_are_written(pipeline_run):
    summary, _, out, truth = pipeline_run
    lines = (out / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    kinds = [e["event"] for e in events]
    assert kinds.count("track_appeared") == kinds.count("track_left") == summary.tracks
    assert kinds[-1] == "end" and events[-1]["frames"] == summary.frames
    for e in events[:-1]:
        assert {"time", "frame", "track", "box"} <= set(e) and len(e["box"]) == 4
    appeared = next(e for e in events if e["event"] == "track_appeared")
    assert set(appeared["probs"]) == set(ATTRIBUTES)  # PAR ran on the frame the track appeared
    capture = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == truth["num_frames"]
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (W, H)
    assert not list(out.glob(".*partial*"))  # the temporary name was renamed away


def test_smoothing_reduces_attribute_flips():
    rng = np.random.default_rng(0)
    truth = np.array([0.35, 0.62, 0.45, 0.7, 0.2, 0.55], np.float32)  # several near the threshold
    noisy = np.clip(truth + rng.normal(0, 0.15, (300, truth.size)), 0, 1).astype(np.float32)
    raw = noisy >= 0.5
    smoother = Smoother(threshold=0.5, alpha=0.3, margin=0.1)
    smoothed = np.array([smoother.update(1, p)[0].on.copy() for p in noisy])
    raw_flips, smooth_flips = count_flips(raw), count_flips(smoothed)
    assert smooth_flips * 5 < raw_flips, (raw_flips, smooth_flips)
    # and the smoothed decisions are right more often than the raw ones
    assert (smoothed == (truth >= 0.5)).mean() > (raw == (truth >= 0.5)).mean()
    plain = Smoother(threshold=0.5, alpha=1.0, margin=0.0)  # alpha=1, margin=0 is plain thresholding
    assert count_flips(np.array([plain.update(1, p)[0].on.copy() for p in noisy])) == raw_flips


def test_changed_attributes_are_reported():
    smoother = Smoother(threshold=0.5, alpha=1.0, margin=0.1)
    smoother.update(7, np.array([0.2, 0.9], np.float32))
    state, changed = smoother.update(7, np.array([0.55, 0.45], np.float32))  # inside the band: kept
    assert changed.size == 0 and state.on.tolist() == [False, True]
    state, changed = smoother.update(7, np.array([0.65, 0.3], np.float32))
    assert changed.tolist() == [0, 1] and state.on.tolist() == [True, False]
    smoother.forget(7)
    assert len(smoother) == 0


def test_tracker_keeps_the_id_through_a_short_occlusion():
    tracker = IoUTracker(min_hits=3, max_age=10)
    frame = np.zeros((H, W, 3), np.uint8)
    seen = {}
    for t in range(30):
        box = np.array([[10 + 4 * t, 50, 40 + 4 * t, 130]], np.float32)
        hidden = 12 <= t < 18  # six frames behind an occluder: no detection
        tracks = tracker.update(box[:0] if hidden else box, np.ones(0 if hidden else 1, np.float32), frame)
        seen[t] = [tr.id for tr in tracks]
    assert seen[0] == seen[1] == []  # confirmed on the third hit
    assert all(seen[t] == [1] for t in range(2, 12)) and all(seen[t] == [] for t in range(12, 18))
    assert all(seen[t] == [1] for t in range(18, 30))


def test_scheduler_every_growth_and_batch_limit():
    sched = Scheduler(every=5, grow=0.2)
    a = Track(1, np.array([0, 0, 10, 20], np.float32), 1.0)
    b = Track(2, np.array([50, 0, 60, 20], np.float32), 1.0)
    assert [t.id for t in sched.due([a, b], 0, limit=1)] == [1]  # new tracks first, capped by the batch
    sched.mark([a], 0)
    assert [t.id for t in sched.due([a, b], 1, limit=8)] == [2]
    sched.mark([b], 1)
    assert sched.due([a, b], 4, limit=8) == []
    assert [t.id for t in sched.due([a, b], 5, limit=8)] == [1]  # every 5 frames
    grown = Track(2, np.array([50, 0, 61, 22], np.float32), 1.0)  # area 200 -> 242: +21 %
    assert [t.id for t in sched.due([grown], 2, limit=8)] == [2]
    sched.forget(1)
    assert len(sched) == 1


def test_privacy_pixelates_only_the_people():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    box = np.array([40, 40, 104, 136], np.float32)
    out = draw_tracks(frame, [(1, box, [])], privacy=True)
    inner = out[48:128, 48:96].astype(int)  # inside the box, away from the outline and label
    assert len(np.unique(inner.reshape(-1, 3), axis=0)) < inner.shape[0] * inner.shape[1] / 8
    np.testing.assert_array_equal(out[150:, 150:], frame[150:, 150:])


def test_mot_file_detector(tmp_path):
    path = tmp_path / "det.txt"
    path.write_text(
        "1,-1,10,20,30,60,0.9,-1,-1,-1\n1,-1,100,20,30,60,0.4,-1,-1,-1\n3,-1,5,5,10,20,0.8,-1,-1,-1\n"
    )
    det = MotFileDetector(path)
    boxes, scores = det.detect(np.zeros((1, 1, 3), np.uint8), 0)
    np.testing.assert_allclose(boxes, [[10, 20, 40, 80], [100, 20, 130, 80]])
    np.testing.assert_allclose(scores, [0.9, 0.4], rtol=1e-6)
    assert len(det.detect(np.zeros((1, 1, 3), np.uint8), 1)[0]) == 0
    assert det.detect(np.zeros((1, 1, 3), np.uint8), 2)[0].tolist() == [[5, 5, 15, 25]]
    (tmp_path / "bad.txt").write_text("1,x\n")
    with pytest.raises(UserError, match=r"bad\.txt:1"):
        MotFileDetector(tmp_path / "bad.txt")


# ------------------------------------------------------------------ sources with fake captures


class FakeCapture:
    """A capture yielding `frames` small frames (then failing), opened or not; counts reads."""

    def __init__(self, frames: int, opened: bool = True, delay: float = 0.0) -> None:
        self.left, self.opened, self.delay = frames, opened, delay

    def isOpened(self):
        return self.opened

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((8, 8, 3), np.uint8)

    def get(self, prop):
        return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        self.opened = False


def test_live_source_drops_old_frames_and_stays_bounded():
    source = open_source("cam0", queue_size=2, opener=lambda _t: FakeCapture(400, delay=0.0005))
    sizes, received = [], []
    for frame in source:
        sizes.append(source._queue.qsize())
        received.append(frame.index)
        time.sleep(0.01)  # a consumer far slower than the camera
    assert max(sizes) <= 2
    assert source.dropped > 0 and len(received) + source.dropped >= 390
    assert received == sorted(received) and received[-1] >= 390  # the newest frames arrive, in order
    assert source.end_reason.startswith("camera stopped")


def test_file_source_reads_every_frame(clip):
    video, truth = clip
    with open_source(str(video), queue_size=2) as source:
        indices = []
        for frame in source:
            indices.append(frame.index)
            time.sleep(0.002)
    assert indices == list(range(truth["num_frames"])) and source.dropped == 0


def test_rtsp_reconnects_with_exponential_backoff():
    captures = iter(
        [FakeCapture(3), FakeCapture(0, opened=False), FakeCapture(0, opened=False), FakeCapture(2)]
    )
    sleeps: list[float] = []
    source = open_source(
        "rtsp://user:secret@cam.local/live", queue_size=8,  # room for all: this test is about reconnecting
        opener=lambda _t: next(captures, FakeCapture(0, opened=False)),
        backoff=Backoff(first=0.5, factor=2.0, cap=3.0, retries=4), sleep=sleeps.append,
    )  # fmt: skip
    frames = list(source)
    assert len(frames) == 5 and source.reconnects == 1
    assert sleeps == [0.5, 1.0, 2.0, 0.5, 1.0, 2.0, 3.0]  # third try worked; then four failed, capped at 3 s
    assert "stream lost after 5 frames" in source.end_reason
    assert "secret" not in source.name


def test_a_stream_down_at_start_is_waited_for_only_when_asked():
    captures = iter([FakeCapture(0, opened=False), FakeCapture(0, opened=False), FakeCapture(3)])
    sleeps: list[float] = []
    source = open_source(
        "rtsp://cam.local/live", queue_size=8, opener=lambda _t: next(captures, FakeCapture(0, opened=False)),
        backoff=Backoff(first=0.5, factor=2.0, cap=3.0, retries=3), sleep=sleeps.append, wait_at_start=True,
    )  # fmt: skip
    assert len(list(source)) == 3 and source.reconnects == 0  # a late first connection is no reconnect
    # down at start: the first retry failed, the second worked; lost after 3 frames: three retries failed
    assert sleeps == [0.5, 1.0, 0.5, 1.0, 2.0] and "stream lost after 3 frames" in source.end_reason
    never = open_source("rtsp://cam.local/live", opener=lambda _t: FakeCapture(0, opened=False),
                        backoff=Backoff(retries=2), sleep=lambda _s: None, wait_at_start=True)  # fmt: skip
    assert list(never) == [] and never.end_reason == "stream unavailable at start; 2 more tries failed"
    with pytest.raises(UserError, match=r"stream rtsp://cam\.local/live cannot be opened"):
        open_source("rtsp://cam.local/live", opener=lambda _t: FakeCapture(0, opened=False))


def test_partool_video_waits_for_a_dead_stream_only_among_others(clip):
    """The CLI opens a refused RTSP URL next to a file (retried in the background, closed here at once), but
    refuses it alone."""
    from partool.cli.video_cmd import _open_sources

    dead = "rtsp://127.0.0.1:9/nothing"  # the discard port: nothing serves RTSP there
    sources = _open_sources([dead, str(clip[0])], [])
    for source in sources:
        source.close()
    assert [s.kind for s in sources] == ["stream", "file"]
    assert sources[0].end_reason == "stopped"  # closed while it waited: not "unavailable"
    with pytest.raises(UserError, match="cannot be opened"):
        _open_sources([dead], [])


def test_a_source_dying_mid_run_keeps_outputs(run_dir, tmp_path):
    captures = iter([FakeCapture(12)])  # 12 frames, then the stream dies and never comes back
    source = open_source("rtsp://cam.local/live", queue_size=16, opener=lambda _t: next(captures, FakeCapture(0, opened=False)),
                         backoff=Backoff(retries=1), sleep=lambda _s: None)  # fmt: skip
    summary = run_pipeline(
        source, load_backend(run_dir, device="cpu"), MotionDetector(), IoUTracker(),
        [EventSink(tmp_path / "e.jsonl"), VideoSink(tmp_path / "v.mp4")],
    )  # fmt: skip
    assert summary.frames == 12 and "stream lost" in summary.source["end_reason"]
    assert json.loads((tmp_path / "e.jsonl").read_text().splitlines()[-1])["frames"] == 12
    assert int(cv2.VideoCapture(str(tmp_path / "v.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 12


def test_the_backend_warms_up_before_the_source_and_a_failed_warmup_releases_it(run_dir, clip):
    """PAR's first call goes to a blank crop before any frame is read (its cost reported apart from the
    run's); a warm-up that fails still closes a source the caller opened."""
    backend = load_backend(run_dir, device="cpu")
    calls = []
    real = backend._infer
    backend._infer = lambda batch: calls.append(batch.copy()) or real(batch)
    source = open_source(str(clip[0]))
    summary = run_pipeline(source, backend, MotionDetector(), IoUTracker(), [], PipelineOptions(max_frames=3))
    assert len(calls) == 1 and calls[0].shape == (1, 3, 64, 32) and not calls[0].any()  # nobody in 3 frames
    assert summary.frames == 3 and summary.warmup_seconds > 0 and "warmup_seconds" in summary.to_dict()

    def broken(_batch):
        raise RuntimeError("device lost")

    backend._infer = broken
    source = open_source(str(clip[0]))
    closed = []
    real_close = source.close
    source.close = lambda: closed.append(1) or real_close()
    with pytest.raises(RuntimeError, match="device lost"):
        run_pipeline(source, backend, MotionDetector(), IoUTracker())
    assert closed


# ------------------------------------------------------------------ many streams in one run


def test_sources_are_named_from_arguments_and_a_file(tmp_path):
    video = tmp_path / "door.mp4"
    video.write_bytes(b"")
    listing = tmp_path / "cams.txt"
    listing.write_text(
        f"# the hall\nhall=rtsp://10.0.0.6/live?channel=1&x=2\n\n{video}\nrtsp://u:p@10.0.0.7/s\n"
    )
    entries = [("argument 1", "0"), ("argument 2", "yard=cam2"), *read_sources_file(listing)]
    assert entries[2][0] == f"{listing}:2"
    assert name_sources(entries) == [
        ("cam0", "0"), ("yard", "cam2"), ("hall", "rtsp://10.0.0.6/live?channel=1&x=2"),
        ("door", str(video)), ("cam4", "rtsp://u:p@10.0.0.7/s"),
    ]  # fmt: skip
    assert name_sources([("a", "rtsp://h/x?a=b")]) == [("cam0", "rtsp://h/x?a=b")]  # a query is no name
    with pytest.raises(UserError, match=r"'door' is used twice \(argument 1 and .*cams.txt:4\)"):
        name_sources([("argument 1", "door=0"), *read_sources_file(listing)])
    with pytest.raises(UserError, match="may hold only letters"):
        name_sources([("argument 1", "my cam=0")])
    with pytest.raises(UserError, match="cannot read"):
        read_sources_file(tmp_path / "none.txt")


class PlainCapture(FakeCapture):
    """`frames` frames of one grey level, 64x64."""

    def __init__(self, frames: int, level: int) -> None:
        super().__init__(frames)
        self.level = level

    def read(self):
        ok, _ = super().read()
        return ok, (np.full((64, 64, 3), self.level, np.uint8) if ok else None)


class BoxDetector:
    """One person at a fixed place in every frame; raises from frame `fail_at` on."""

    name = "box"

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at

    def detect(self, frame, index):
        if self.fail_at is not None and index >= self.fail_at:
            raise RuntimeError("detector lost its device")
        return np.array([[8, 4, 40, 60]], np.float32), np.ones(1, np.float32)


class BrightnessBackend(Backend):
    """Two attributes, both the crop's mean brightness (bright -> on); records every batch size."""

    name = "fake"

    def __init__(self, max_batch: int) -> None:
        super().__init__({"attributes": ["a", "b"], "input_size": [16, 8]}, max_batch)
        self.sizes: list[int] = []

    def _infer(self, batch):
        self.sizes.append(len(batch))
        return np.repeat(batch.mean(axis=(1, 2, 3))[:, None] * 10, 2, axis=1)


class Recorder(Sink):
    """Keeps events, crops and frames (mean level) it is given."""

    wants_frames = True

    def __init__(self) -> None:
        self.events, self.crops, self.levels = [], [], []

    def event(self, record):
        self.events.append(record)

    def crop(self, stream, track_id, image, box):
        self.crops.append((stream, track_id, image.shape))

    def frame(self, image, fps):
        self.levels.append(int(image[32:, 50:].mean()))  # right of the box and its label
        return True


def plain_stream(name: str, frames: int, level: int, detector=None) -> Stream:
    source = FrameSource("file", name, name, False, 4, opener=lambda _t: PlainCapture(frames, level))
    return Stream(name, source, detector or BoxDetector(), IoUTracker(min_hits=1), [Recorder()])


def test_streams_share_one_par_batch_and_keep_their_own_state():
    backend = BrightnessBackend(max_batch=2)
    streams = [plain_stream("white", 10, 255), plain_stream("black", 10, 0), plain_stream("grey", 10, 128)]
    everything = Recorder()
    summary = run_streams(streams, backend, [everything], PipelineOptions(every=5))
    # warm-up; step 0: three new tracks, two fit; step 1: the third; steps 5 and 6 the same again
    assert backend.sizes == [1, 2, 1, 2, 1]
    assert summary.par_batches == {"histogram": {"1": 2, "2": 2}, "mean": 1.5, "max": 2}
    assert summary.frames == 30 and summary.par_calls == 4 and summary.crops == 6
    assert [(s["stream"], s["frames"], s["tracks"], s["crops"]) for s in summary.streams] == [
        ("white", 10, 1, 2), ("black", 10, 1, 2), ("grey", 10, 1, 2),
    ]  # fmt: skip
    # every stream has its own track 1 with its own smoothed attributes
    left = {e["stream"]: e for e in everything.events if e["event"] == "track_left"}
    assert left["white"]["attributes"] == ["a", "b"] and left["black"]["attributes"] == []
    assert {e["stream"] for e in everything.events if e["event"] != "end"} == {"white", "black", "grey"}
    assert everything.events[-1]["event"] == "end" and everything.events[-1]["frames"] == 30
    assert sorted(everything.crops) == sorted(
        (n, 1, (56, 32, 3)) for n in ("white", "black", "grey") for _ in "xy"
    )
    # a stream's own sinks see its frames and events only
    for stream, level in zip(streams, (255, 0, 128), strict=True):
        own = stream.sinks[0]
        assert len(own.levels) == 10 and set(own.levels) == {level}
        assert {e.get("stream", stream.name) for e in own.events} == {stream.name}


def test_one_failing_stream_does_not_stop_the_others():
    captures = iter([FakeCapture(5)])
    dying = open_source(
        "rtsp://cam.local/live", queue_size=8, opener=lambda _t: next(captures, FakeCapture(0, opened=False)),
        backoff=Backoff(retries=2), sleep=lambda _s: None,
    )  # fmt: skip
    streams = [
        Stream("dying", dying, BoxDetector(), IoUTracker(min_hits=1)),
        plain_stream("broken", 20, 200, BoxDetector(fail_at=3)),
        plain_stream("steady", 40, 100),
    ]
    summary = run_streams(streams, BrightnessBackend(8), [], PipelineOptions(every=5))
    facts = {s["stream"]: s for s in summary.streams}
    assert facts["dying"]["frames"] == 5 and "stream lost after 5 frames" in facts["dying"]["end_reason"]
    assert facts["broken"]["frames"] == 3
    assert facts["broken"]["stopped_by"] == "error: RuntimeError: detector lost its device"
    assert facts["steady"]["frames"] == 40 and facts["steady"]["stopped_by"] == "source ended"
    assert summary.frames == 48 and "source ended" in summary.stopped_by


def test_a_stream_is_cut_at_max_frames_and_the_run_stops_on_request():
    streams = [plain_stream("short", 50, 50), plain_stream("long", 10_000, 60)]
    summary = run_streams(streams, BrightnessBackend(8), [], PipelineOptions(max_frames=20))  # per stream
    assert [s["frames"] for s in summary.streams] == [20, 20] and summary.stopped_by == "max frames"
    stop = threading.Event()

    def on_frame(result):  # what a service's SIGTERM handler does, from another thread
        if result.stream == "long" and result.index == 29:
            stop.set()

    streams = [plain_stream("short", 20, 50), plain_stream("long", 10_000, 60)]
    summary = run_streams(streams, BrightnessBackend(8), [], PipelineOptions(on_frame=on_frame, stop=stop))
    assert summary.stopped_by == "stopped" and [s["frames"] for s in summary.streams] == [20, 30]
    assert [s["stopped_by"] for s in summary.streams] == ["source ended", "stopped"]


# ------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def cli():
    from partool.cli.video_cmd import register

    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # keeps `video` a named subcommand
    return app


def test_cli_runs_and_prints_json(cli, clip, run_dir, tmp_path):
    video, _ = clip
    args = ["video", str(video), "--model", str(run_dir), "--max-frames", "20", "--device", "cpu",
            "--events", str(tmp_path / "e.jsonl"), "--save", str(tmp_path / "o.mp4"), "--privacy", "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == 20 and summary["stopped_by"] == "max frames"
    assert (tmp_path / "o.mp4").is_file() and (tmp_path / "e.jsonl").is_file()


def test_cli_runs_several_streams_into_a_folder_and_the_event_store(cli, clip, run_dir, tmp_path):
    from partool.video.event_store import open_store, stream_names

    video, _ = clip
    (tmp_path / "cams.txt").write_text(f"# second camera\nb={video}\n")
    args = ["video", f"a={video}", "--sources", str(tmp_path / "cams.txt"), "--model", str(run_dir),
            "--max-frames", "30", "--device", "cpu", "--save", str(tmp_path / "videos"),
            "--events", str(tmp_path / "e.jsonl"), "--db", str(tmp_path / "e.db"), "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [(s["stream"], s["frames"], s["stopped_by"]) for s in summary["streams"]] == [
        ("a", 30, "max frames"), ("b", 30, "max frames"),
    ]  # fmt: skip
    assert summary["frames"] == 60 and summary["stopped_by"] == "max frames"
    assert summary["par_batches"]["max"] >= 2  # both streams' people in one call
    for stream in summary["streams"]:
        path = tmp_path / "videos" / f"{stream['stream']}.mp4"
        assert stream["outputs"]["video"] == str(path)
        assert int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert {e["stream"] for e in events[:-1]} == {"a", "b"} and events[-1]["event"] == "end"
    assert stream_names(open_store(tmp_path / "e.db")) == ["a", "b"]


def test_saved_video_is_cut_into_segments_named_by_their_start(tmp_path):
    """2-second segments at 5 FPS: 23 frames -> files of 10, 10 and 3 frames, each named after the clock when
    its first frame came (two in the same second get -2), each complete (renamed) once the next begins."""
    from partool.video.sinks import VideoSink

    start = datetime(2026, 12, 4, 14, 30, 0).timestamp()  # local time, as the names are
    times = iter([start, start + 2.0, start + 2.9])
    sink = VideoSink(tmp_path / "cam1.mp4", segment_seconds=2.0, clock=lambda: next(times))
    image = np.zeros((48, 64, 3), np.uint8)
    for i in range(23):
        sink.frame(image, 5.0)
        if i == 10:  # the second segment has begun: the first is complete on disk
            assert (tmp_path / "cam1-20261204-143000.mp4").is_file()
    report = sink.close()
    names = ["cam1-20261204-143000.mp4", "cam1-20261204-143002.mp4", "cam1-20261204-143002-2.mp4"]
    assert report["videos"] == [str(tmp_path / n) for n in names] and report["video_frames"] == 23
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no partial file left
    counts = [int(cv2.VideoCapture(str(tmp_path / n)).get(cv2.CAP_PROP_FRAME_COUNT)) for n in names]
    assert counts == [10, 10, 3]


def test_cli_segments_each_streams_video(cli, clip, run_dir, tmp_path):
    video, _ = clip
    args = ["video", f"a={video}", f"b={video}", "--model", str(run_dir), "--max-frames", "25", "--device", "cpu",
            "--save", str(tmp_path / "videos"), "--segment", "1s", "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for stream in json.loads(result.stdout)["streams"]:  # the clip is 15 FPS: 15 + 10 frames
        files = stream["outputs"]["videos"]
        assert [Path(f).name.startswith(f"{stream['stream']}-") for f in files] == [True, True]
        assert [int(cv2.VideoCapture(f).get(cv2.CAP_PROP_FRAME_COUNT)) for f in files] == [15, 10]


def test_sigterm_asks_the_run_to_stop():
    """A service manager's SIGTERM ends `partool video` like the end of its sources: outputs complete."""
    from partool.cli.video_cmd import _stop_on_sigterm

    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    with _stop_on_sigterm(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no video source"),
        (["{clip}", "{clip}"], "'street' is used twice (argument 1 and argument 2)"),
        (["a={clip}", "b={clip}", "--save", "{tmp}/x.mp4"], "2 streams need a folder"),
        (["missing.mp4"], "not found"),
        (["cam57"], "camera cam57 cannot be opened"),
        (["rtsp://127.0.0.1:9/none"], "cannot be opened"),
        (["{clip}", "--model", "{tmp}/nothing"], "does not exist"),
        (["{clip}", "--model", "{tmp}/bad.onnx"], "partool.json"),
        (["{clip}", "--detector", "hog"], "unknown --detector"),
        (["{clip}", "--every", "0"], "--every"),
        (["{clip}", "--segment", "10m"], "--segment cuts the saved video into files: it needs --save"),
        (
            ["{clip}", "--save", "{tmp}/o.mp4", "--segment", "0s"],
            "--segment '0s' is not a duration above zero",
        ),
        (["{clip}", "--save", "{tmp}/o.mp4", "--segment", "ten"], "write it like 90s, 10m or 1h"),
    ],
)
def test_cli_bad_input_is_one_line(cli, clip, run_dir, tmp_path, args, message):
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    subst = [a.format(clip=clip[0], tmp=tmp_path) for a in args]
    if "--model" not in subst:
        subst += ["--model", str(run_dir)]
    result = CliRunner().invoke(cli, ["video", *subst, "--device", "cpu"])
    assert isinstance(result.exception, UserError), result.output
    text = str(result.exception)
    assert message in text and "\n" not in text


# ------------------------------------------------------------------ optional: ultralytics (the video extra)


def test_bytetrack_on_our_boxes():
    pytest.importorskip("ultralytics")
    pytest.importorskip("lap")
    from partool.video.tracking import UltralyticsTracker

    frame = np.zeros((H, W, 3), np.uint8)
    tracker = UltralyticsTracker("bytetrack")
    ids = []
    for t in range(12):
        boxes = np.array([[10 + 5 * t, 40, 40 + 5 * t, 120], [250 - 5 * t, 50, 280 - 5 * t, 140]], np.float32)
        ids.append(sorted(tr.id for tr in tracker.update(boxes, np.array([0.9, 0.8], np.float32), frame)))
    assert ids[-1] and all(i == ids[-1] for i in ids[3:]) and len(ids[-1]) == 2


def test_untrained_yolo_runs_person_only(clip):
    pytest.importorskip("ultralytics")
    from partool.video.detectors import make_detector

    detector = make_detector("yolo11n.yaml", device="cpu")  # builds offline, no weights
    capture = cv2.VideoCapture(str(clip[0]))
    ok, frame = capture.read()
    assert ok
    boxes, scores = detector.detect(frame, 0)
    assert boxes.shape[1:] == (4,) and boxes.dtype == np.float32 and scores.shape == (len(boxes),)
    assert detector.model.predictor.args.classes == [0]
