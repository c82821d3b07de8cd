"""The SQLite event store: its schema and version, migration on open, commit-per-event durability under
`kill -9`, the thumbnail picked by size × sharpness, and the pipeline's real records landing in it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import cv2
import numpy as np
import pytest

from partool.errors import UserError
from partool.video import event_store
from partool.video.event_store import APPLICATION_ID, EventStoreSink, open_store, sharpness, thumbnail_score

PROBS = {"Female": 0.9, "Backpack": 0.2, "Hat": 0.1}


def appeared(track: int, t: float, frame: int, on: list[str], **extra) -> dict:
    return {"event": "track_appeared", "time": t, "frame": frame, "track": track, "box": [0, 0, 10, 20],
            "attributes": on, "probs": PROBS, **extra}  # fmt: skip


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


class Clock:
    """Wall-clock time the test sets by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_schema_version_and_rows(tmp_path):
    clock = Clock(1_800_000_000.0)
    sink = EventStoreSink(tmp_path / "e.db", clock=clock)
    sink.event(appeared(7, 2.0, 50, ["Female"]))
    clock.now += 1.5
    sink.event({"event": "attribute_changed", "time": 3.5, "frame": 87, "track": 7, "box": [0, 0, 10, 20],
                "attribute": "Backpack", "value": True, "prob": 0.71, "probs": {**PROBS, "Backpack": 0.71}})  # fmt: skip
    clock.now += 1.0
    sink.event({"event": "track_left", "time": 4.5, "frame": 112, "track": 7, "box": [0, 0, 10, 20], "first_frame": 50,
                "frames_seen": 60, "attributes": ["Backpack", "Female"], "probs": {**PROBS, "Backpack": 0.74},
                "reason": "lost"})  # fmt: skip
    sink.event({"event": "end", "frames": 120, "source": {"source": "street.mp4", "kind": "file"}})
    assert sink.close() == {"db": str(tmp_path / "e.db"), "tracks": 1}

    conn = sqlite3.connect(tmp_path / "e.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1 == len(event_store.MIGRATIONS)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert tables == {"runs", "streams", "tracks", "track_attributes", "changes"}
    assert columns(conn, "track_attributes") == ["track_id", "name", "prob", "is_on"]
    assert columns(conn, "changes") == [
        "id",
        "track_id",
        "time",
        "epoch",
        "frame",
        "attribute",
        "is_on",
        "prob",
    ]

    stream = conn.execute("SELECT name, source, first_epoch, last_epoch FROM streams").fetchone()
    assert stream == ("cam0", "street.mp4", 1_800_000_000.0, 1_800_000_002.5)
    row = conn.execute(
        "SELECT track, first_time, first_epoch, first_frame, last_time, last_epoch, last_frame, frames_seen, "
        "left_reason, attributes, probs FROM tracks"
    ).fetchone()
    # wall clock = the stream's anchor (first record: now - its time) + the record's source time
    assert row[:9] == (7, "2027-01-15T08:00:00.000Z", 1_800_000_000.0, 50, "2027-01-15T08:00:02.500Z",
                       1_800_000_002.5, 112, 60, "lost")  # fmt: skip
    assert json.loads(row[9]) == ["Backpack", "Female"] and json.loads(row[10])["Backpack"] == 0.74
    assert conn.execute("SELECT name, prob, is_on FROM track_attributes ORDER BY name").fetchall() == [
        ("Backpack", 0.74, 1), ("Female", 0.9, 1), ("Hat", 0.1, 0)]  # fmt: skip
    assert conn.execute("SELECT time, frame, attribute, is_on, prob FROM changes").fetchall() == [
        ("2027-01-15T08:00:01.500Z", 87, "Backpack", 1, 0.71)]  # fmt: skip
    # plain SQL over the JSON columns works too
    assert (
        conn.execute("SELECT count(*) FROM tracks WHERE json_extract(probs, '$.Female') > 0.8").fetchone()[0]
        == 1
    )
    assert conn.execute("SELECT ended_epoch IS NOT NULL, partool_version FROM runs").fetchone()[0] == 1


def test_streams_keep_their_tracks_apart(tmp_path):
    sink = EventStoreSink(tmp_path / "e.db")
    sink.event(appeared(1, 0.0, 0, [], stream="cam1"))
    sink.event(appeared(1, 0.0, 0, [], stream="cam2"))
    sink.event({"event": "end", "frames": 1})  # a summary of both streams: no stream of its own
    assert sink.close()["tracks"] == 2
    conn = sqlite3.connect(tmp_path / "e.db")
    assert conn.execute("SELECT s.name, t.track FROM tracks t JOIN streams s ON s.id = t.stream_id").fetchall() == [
        ("cam1", 1), ("cam2", 1)]  # fmt: skip
    assert [r[0] for r in conn.execute("SELECT name FROM streams ORDER BY name")] == ["cam1", "cam2"]


def test_migration_from_an_older_version(tmp_path, monkeypatch):
    """A version-1 file opened by a partool that knows version 2 is migrated in place, its rows kept; a
    migration that fails leaves the file at version 1, untouched."""
    sink = EventStoreSink(tmp_path / "e.db")
    sink.event(appeared(3, 0.0, 0, ["Female"]))
    sink.close()

    def broken_v2(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE tracks ADD COLUMN zone TEXT")
        raise RuntimeError("disk trouble")

    monkeypatch.setattr(event_store, "MIGRATIONS", [*event_store.MIGRATIONS, broken_v2])
    with pytest.raises(RuntimeError, match="disk trouble"):
        open_store(tmp_path / "e.db")
    conn = sqlite3.connect(tmp_path / "e.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1 and "zone" not in columns(conn, "tracks")
    conn.close()

    def v2(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE tracks ADD COLUMN zone TEXT NOT NULL DEFAULT 'unzoned'")

    monkeypatch.setattr(event_store, "MIGRATIONS", [event_store.MIGRATIONS[0], v2])
    conn = open_store(tmp_path / "e.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("SELECT track, zone, attributes FROM tracks").fetchall() == [
        (3, "unzoned", '["Female"]')
    ]
    conn.close()
    conn = open_store(tmp_path / "e.db")  # already current: opened as it is
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_bad_files_are_refused_with_one_line(tmp_path):
    with pytest.raises(UserError, match="no such event store"):
        open_store(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    (tmp_path / "notes.txt").write_text("not a database at all, just some text that is long enough " * 20)
    with pytest.raises(UserError, match="not a partool event store"):
        open_store(tmp_path / "notes.txt")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    with pytest.raises(UserError, match="another program"):
        open_store(tmp_path / "other.db")
    EventStoreSink(tmp_path / "new.db").close()
    newer = sqlite3.connect(tmp_path / "new.db")
    newer.execute("PRAGMA user_version = 99")
    newer.close()
    with pytest.raises(
        UserError, match=r"schema version 99 is newer than this partool .* \(up to 1\); upgrade"
    ):
        open_store(tmp_path / "new.db")


CHILD = """
import itertools, sys
from partool.video.event_store import EventStoreSink
sink = EventStoreSink(sys.argv[1])
probs = {"Female": 0.9, "Hat": 0.3}
for i in itertools.count():
    sink.event({"event": "track_appeared", "time": i * 0.1, "frame": i, "track": i, "box": [0, 0, 10, 20],
                "attributes": ["Female"], "probs": probs})
    sink.event({"event": "attribute_changed", "time": i * 0.1, "frame": i, "track": i, "box": [0, 0, 10, 20],
                "attribute": "Hat", "value": True, "prob": 0.8, "probs": {**probs, "Hat": 0.8}})
    print(i, flush=True)
"""


def test_kill_9_loses_nothing_committed(tmp_path):
    """A writer killed mid-run: every event it had returned from is in the file, which opens clean."""
    db = tmp_path / "e.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        last = -1
        for line in child.stdout:
            last = int(line)
            if last >= 150:
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL and last >= 150
    assert (tmp_path / "e.db-wal").exists()  # the killed writer never checkpointed
    conn = open_store(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    tracks = {r[0] for r in conn.execute("SELECT track FROM tracks")}
    changed = {r[0] for r in conn.execute("SELECT t.track FROM changes c JOIN tracks t ON t.id = c.track_id")}
    assert set(range(last + 1)) <= changed <= tracks
    assert (
        conn.execute("SELECT count(*) FROM track_attributes WHERE name = 'Hat' AND is_on = 1").fetchone()[0]
        >= last + 1
    )
    assert conn.execute("SELECT ended_epoch FROM runs").fetchone()[0] is None  # the run never ended


def checkerboard(height: int, width: int, cell: int = 4) -> np.ndarray:
    ys, xs = np.indices((height, width))
    board = (((ys // cell) + (xs // cell)) % 2 * 255).astype(np.uint8)
    return cv2.cvtColor(board, cv2.COLOR_GRAY2BGR)


def stored_thumbnail(db) -> np.ndarray:
    blob = sqlite3.connect(db).execute("SELECT thumbnail FROM tracks").fetchone()[0]
    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)


def test_the_thumbnail_is_the_largest_sharpest_crop(tmp_path):
    sharp_small = checkerboard(40, 20)
    blurred_big = cv2.GaussianBlur(checkerboard(120, 60), (0, 0), 6)
    sharp_big = checkerboard(100, 50)
    flat_huge = np.full((200, 100, 3), 128, np.uint8)
    sharp_mid = checkerboard(80, 40)
    box = lambda img: [10, 10, 10 + img.shape[1], 10 + img.shape[0]]  # noqa: E731
    # by hand: the checkerboard's Laplacian is large everywhere, the blurred one's small, the flat one's 0
    assert sharpness(flat_huge) == 0.0 and sharpness(blurred_big) < sharpness(sharp_big) / 100
    assert thumbnail_score(sharp_big, box(sharp_big)) == pytest.approx(100 * 50 * sharpness(sharp_big))
    assert thumbnail_score(blurred_big, box(blurred_big)) < thumbnail_score(sharp_small, box(sharp_small))

    db = tmp_path / "e.db"
    sink = EventStoreSink(db)
    sink.crop("cam0", 4, sharp_small, box(sharp_small))  # before the track appears: held
    sink.event(appeared(4, 0.0, 0, []))
    assert stored_thumbnail(db).shape[:2] == (40, 20)  # written with the new row
    sink.crop("cam0", 4, blurred_big, box(blurred_big))  # bigger but blurred: kept out
    assert stored_thumbnail(db).shape[:2] == (40, 20)
    sink.crop("cam0", 4, sharp_big, box(sharp_big))  # bigger and sharp: replaces it at once (committed)
    assert stored_thumbnail(db).shape[:2] == (100, 50)
    sink.crop("cam0", 4, flat_huge, box(flat_huge))  # biggest, no detail
    sink.crop("cam0", 4, sharp_mid, box(sharp_mid))  # sharp, smaller than the best
    sink.close()
    thumb = stored_thumbnail(db)
    assert thumb.shape[:2] == (100, 50)
    assert np.abs(thumb.astype(int) - sharp_big.astype(int)).mean() < 20  # that crop, through JPEG


def test_large_crops_are_stored_small(tmp_path):
    sink = EventStoreSink(tmp_path / "e.db")
    sink.event(appeared(1, 0.0, 0, []))
    sink.crop("cam0", 1, checkerboard(600, 300), [0, 0, 300, 600])
    sink.close()
    assert stored_thumbnail(tmp_path / "e.db").shape[:2] == (
        event_store.THUMBNAIL_SIDE,
        event_store.THUMBNAIL_SIDE // 2,
    )


def test_the_pipeline_records_land_in_the_store(tmp_path):
    """The real pipeline's records (street clip, tiny untrained Vim): the store holds what the JSON Lines
    log says, track by track."""
    import torch

    from partool.artifacts import build_meta
    from partool.data.street_clip import render_clip
    from partool.data.synth import ATTRIBUTES
    from partool.models import create_model
    from partool.models.run_folder import save_run
    from partool.runtime import load_backend
    from partool.video.detectors import MotionDetector
    from partool.video.pipeline import PipelineOptions, run_pipeline
    from partool.video.sinks import EventSink
    from partool.video.tracking import IoUTracker

    truth = render_clip(str(tmp_path / "street.mp4"), seconds=3.0, fps=15, size=(320, 180), num_people=3)
    torch.manual_seed(0)
    model = create_model("vim-t", len(ATTRIBUTES), img_size=(64, 32), depth=1).eval()
    run = save_run(tmp_path / "run", model, build_meta(model, list(ATTRIBUTES), "synth"))
    summary = run_pipeline(
        str(tmp_path / truth["video"]), load_backend(run, device="cpu"), MotionDetector(), IoUTracker(),
        [EventSink(tmp_path / "e.jsonl"), EventStoreSink(tmp_path / "e.db")], PipelineOptions(every=3),
    )  # fmt: skip
    assert summary.outputs["db"] == str(tmp_path / "e.db") and summary.outputs["tracks"] == summary.tracks > 0
    records = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    left = {r["track"]: r for r in records if r["event"] == "track_left"}
    conn = open_store(tmp_path / "e.db")
    rows = conn.execute(
        "SELECT track, first_frame, last_frame, frames_seen, attributes, probs, left_reason FROM tracks"
    ).fetchall()
    assert {r[0] for r in rows} == set(left)
    for track, first, last, seen, attributes, probs, reason in rows:
        record = left[track]
        assert (first, last, seen, reason) == (
            record["first_frame"],
            record["frame"],
            record["frames_seen"],
            record["reason"],
        )
        assert json.loads(attributes) == sorted(record["attributes"])
        assert json.loads(probs) == (record["probs"] or {})
    changes = conn.execute("SELECT count(*) FROM changes").fetchone()[0]
    assert changes == summary.attribute_changes == sum(r["event"] == "attribute_changed" for r in records)
    assert conn.execute("SELECT source FROM streams").fetchone()[0] == summary.source["source"]
