"""The event store: what the video pipeline saw, in one SQLite file that people and scripts query with SQL.

Why SQLite: one file, no server, readable from any language, and readable while a run writes (WAL mode).
The schema is a contract: `PRAGMA application_id` marks the file as partool's, `PRAGMA user_version` says
its schema version, and opening an older file migrates it one version at a time, each step one
transaction (`MIGRATIONS[i]` turns version i into i + 1). `EventStoreSink` commits once per event (a track
appearing, an attribute changing, a track leaving) and per better thumbnail; with WAL and
synchronous=NORMAL a killed process (`kill -9`) loses nothing it had committed (a power cut may lose the
last commits).

Times: the pipeline's records carry a source time in seconds (media time for files, the monotonic clock
since the start for live sources). The store anchors each stream at its first record (now minus that
record's time) and writes anchor + time as wall-clock epoch seconds and ISO 8601 UTC text: exact for live
sources; for files, the time the moment would have had if played live from the run's start.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from partool import __version__
from partool.errors import UserError
from partool.video.sinks import Sink

APPLICATION_ID = 0x50415254  # "PART"
DEFAULT_STREAM = "cam0"
THUMBNAIL_SIDE = 256  # longer side of a stored thumbnail, in pixels (never upscaled)
THUMBNAIL_QUALITY = 85

SCHEMA_V1 = (
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started_time TEXT NOT NULL,
        started_epoch REAL NOT NULL,
        ended_time TEXT,
        ended_epoch REAL,
        partool_version TEXT NOT NULL
    )""",
    """CREATE TABLE streams (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        source TEXT,
        first_time TEXT NOT NULL,
        first_epoch REAL NOT NULL,
        last_time TEXT NOT NULL,
        last_epoch REAL NOT NULL
    )""",
    """CREATE TABLE tracks (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stream_id INTEGER NOT NULL REFERENCES streams(id),
        track INTEGER NOT NULL,
        first_time TEXT NOT NULL,
        first_epoch REAL NOT NULL,
        first_frame INTEGER NOT NULL,
        last_time TEXT NOT NULL,
        last_epoch REAL NOT NULL,
        last_frame INTEGER NOT NULL,
        frames_seen INTEGER,
        left_reason TEXT,
        attributes TEXT NOT NULL DEFAULT '[]',
        probs TEXT NOT NULL DEFAULT '{}',
        thumbnail BLOB,
        thumbnail_score REAL,
        UNIQUE (run_id, stream_id, track)
    )""",
    "CREATE INDEX tracks_first_epoch ON tracks(first_epoch)",
    "CREATE INDEX tracks_stream ON tracks(stream_id, last_epoch)",
    """CREATE TABLE track_attributes (
        track_id INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        prob REAL NOT NULL,
        is_on INTEGER NOT NULL CHECK (is_on IN (0, 1)),
        PRIMARY KEY (track_id, name)
    ) WITHOUT ROWID""",
    "CREATE INDEX track_attributes_name ON track_attributes(name, is_on, prob)",
    """CREATE TABLE changes (
        id INTEGER PRIMARY KEY,
        track_id INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
        time TEXT NOT NULL,
        epoch REAL NOT NULL,
        frame INTEGER NOT NULL,
        attribute TEXT NOT NULL,
        is_on INTEGER NOT NULL CHECK (is_on IN (0, 1)),
        prob REAL NOT NULL
    )""",
    "CREATE INDEX changes_track ON changes(track_id, epoch)",
)


def _create_v1(conn: sqlite3.Connection) -> None:
    """Version 0 (an empty file) -> 1: the first schema, and the mark that says the file is partool's."""
    for statement in SCHEMA_V1:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = [_create_v1]  # MIGRATIONS[i] turns version i into i + 1


def iso(epoch: float) -> str:
    """Epoch seconds as ISO 8601 UTC text with milliseconds ('2026-12-01T13:00:03.120Z'); sorts as text."""
    return (
        datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def local_time(epoch: float) -> str:
    """Epoch seconds as this machine's local wall-clock time, to the second, for people to read."""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def open_store(path: str | Path, create: bool = False) -> sqlite3.Connection:
    """A connection to the event store at `path`, migrated to this partool's schema version.

    Without `create` the file must exist (a reader never leaves an empty file behind a typo). Bad input —
    no file, not SQLite, another program's database, a newer schema — raises UserError.
    """
    path = Path(path)
    if not create and not path.is_file():
        raise UserError(f"{path}: no such event store (`partool video … --db {path}` writes one)")
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{path}: cannot create its folder ({e.strerror})") from None
    uri = f"{path.resolve().as_uri()}?mode={'rwc' if create else 'rw'}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10.0)
    except sqlite3.Error as e:
        raise UserError(f"{path}: cannot open it ({e})") from None
    try:
        _check_and_migrate(conn, path)
        conn.execute("PRAGMA foreign_keys = ON")
        if create:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as e:
        conn.close()
        raise UserError(f"{path}: not a partool event store ({e})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _header(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version, after checking the file is an event store (or empty) that this partool reads."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    empty = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 0
    if app_id != APPLICATION_ID and not (app_id == 0 and version == 0 and empty):
        raise UserError(f"{path}: not a partool event store (an SQLite file of another program)")
    if version > len(MIGRATIONS):
        raise UserError(
            f"{path}: event store schema version {version} is newer than this partool "
            f"({__version__}) reads (up to {len(MIGRATIONS)}); upgrade partool"
        )
    return version


def _check_and_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Step an older file up to the latest version, one transaction a step. A current file is only read, so
    readers need no write lock; a migrator re-reads the version under the lock (another may have won)."""
    while _header(conn, path) < len(MIGRATIONS):
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _header(conn, path)
            if version < len(MIGRATIONS):
                MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN … COMMIT, or ROLLBACK when the block raises."""
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: high for a focused crop, near 0 for a blurred one."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def thumbnail_score(image: np.ndarray, box: Sequence[float]) -> float:
    """How good a crop is as a track's picture: box area (pixels) times sharpness."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return max(0.0, x2 - x1) * max(0.0, y2 - y1) * sharpness(image)


def encode_thumbnail(image: np.ndarray) -> bytes:
    """A BGR crop as JPEG, its longer side at most THUMBNAIL_SIDE pixels."""
    height, width = image.shape[:2]
    scale = THUMBNAIL_SIDE / max(height, width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG thumbnail")
    return data.tobytes()


@dataclass
class _Track:
    """A track of this run that has not left: its row (None until it appears) and its best picture."""

    row: int | None = None
    on: set[str] = field(default_factory=set)
    score: float = -1.0
    thumbnail: bytes | None = None  # held until the row exists


class EventStoreSink(Sink):
    """`partool video --db FILE`: the pipeline's events and candidate crops into an event store.

    Records name their stream in "stream" (DEFAULT_STREAM when absent). Thread-safe, so several streams'
    threads may share one sink. `clock` gives wall-clock epoch seconds (tests pass their own).
    """

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self.conn = open_store(self.path, create=True)
        self.lock = threading.Lock()
        self.streams: dict[str, tuple[int, float]] = {}  # name -> (row, wall-clock anchor)
        self.tracks: dict[tuple[str, int], _Track] = {}
        self.written = 0
        now = clock()
        with transaction(self.conn):
            self.run = self.conn.execute(
                "INSERT INTO runs (started_time, started_epoch, partool_version) VALUES (?, ?, ?)",
                (iso(now), now, __version__),
            ).lastrowid

    def crop(self, stream: str, track_id: int, image: np.ndarray, box: Sequence[float]) -> None:
        score = thumbnail_score(image, box)
        with self.lock:
            state = self.tracks.setdefault((stream, int(track_id)), _Track())
            if score <= state.score:
                return
            state.score = score
            jpeg = encode_thumbnail(image)
            if state.row is None:
                state.thumbnail = jpeg
                return
            with transaction(self.conn):
                self.conn.execute(
                    "UPDATE tracks SET thumbnail = ?, thumbnail_score = ? WHERE id = ?",
                    (jpeg, score, state.row),
                )

    def event(self, record: dict[str, Any]) -> None:
        kind = record.get("event")
        if kind not in ("track_appeared", "attribute_changed", "track_left", "end"):
            return
        name = str(record.get("stream") or DEFAULT_STREAM)
        with self.lock, transaction(self.conn):
            if kind == "end":
                self._end(record)
                return
            stream, epoch = self._stream(name, record)
            key = (name, int(record["track"]))
            state = self.tracks.setdefault(key, _Track())
            if state.row is None:
                self._insert_track(state, stream, key[1], record, epoch)
            if kind == "track_appeared":
                state.on = set(record.get("attributes") or ())
            elif kind == "attribute_changed":
                (state.on.add if record["value"] else state.on.discard)(record["attribute"])
                self.conn.execute(
                    "INSERT INTO changes (track_id, time, epoch, frame, attribute, is_on, prob) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (state.row, iso(epoch), epoch, int(record["frame"]), record["attribute"],
                     int(bool(record["value"])), float(record["prob"])),
                )  # fmt: skip
            else:
                state.on = set(record.get("attributes") or ())
                self.conn.execute(
                    "UPDATE tracks SET frames_seen = ?, left_reason = ? WHERE id = ?",
                    (record.get("frames_seen"), record.get("reason", ""), state.row),
                )
                del self.tracks[key]
            self._update_track(state, record, epoch)

    def close(self) -> dict[str, Any]:
        with self.lock:
            now = self.clock()
            with transaction(self.conn):
                self.conn.execute(
                    "UPDATE runs SET ended_time = ?, ended_epoch = ? WHERE id = ? AND ended_epoch IS NULL",
                    (iso(now), now, self.run),
                )
            self.conn.close()
        return {"db": str(self.path), "tracks": self.written}

    def _stream(self, name: str, record: dict[str, Any]) -> tuple[int, float]:
        """The stream's row (made on first sight) and this record's wall-clock time; marks it last seen."""
        now = self.clock()
        source_time = record.get("time")
        if name not in self.streams:
            anchor = now - float(source_time) if source_time is not None else now
            self.conn.execute(
                "INSERT INTO streams (name, first_time, first_epoch, last_time, last_epoch) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, iso(now), now, iso(now), now),
            )
            row = self.conn.execute("SELECT id FROM streams WHERE name = ?", (name,)).fetchone()[0]
            self.streams[name] = (row, anchor)
        row, anchor = self.streams[name]
        epoch = anchor + float(source_time) if source_time is not None else now
        self.conn.execute(
            "UPDATE streams SET last_time = ?, last_epoch = ? WHERE id = ? AND last_epoch < ?",
            (iso(epoch), epoch, row, epoch),
        )
        return row, epoch

    def _end(self, record: dict[str, Any]) -> None:
        """The run's end, and each stream's source from the summary: its per-stream entries ("streams":
        [{"stream", "source"}, …]), or its one "source" when the run had one stream."""
        sources = {
            entry["stream"]: entry["source"]
            for entry in record.get("streams") or ()
            if isinstance(entry, dict)
            and isinstance(entry.get("stream"), str)
            and isinstance(entry.get("source"), str)
        }
        source = record.get("source")
        source = source.get("source") if isinstance(source, dict) else source
        if not sources and isinstance(source, str) and len(self.streams) <= 1:
            sources[record.get("stream") or next(iter(self.streams), DEFAULT_STREAM)] = source
        for name, text in sources.items():
            row, _ = self._stream(name, {})
            self.conn.execute("UPDATE streams SET source = ? WHERE id = ?", (text, row))
        now = self.clock()
        self.conn.execute(
            "UPDATE runs SET ended_time = ?, ended_epoch = ? WHERE id = ?", (iso(now), now, self.run)
        )

    def _insert_track(
        self, state: _Track, stream: int, track: int, record: dict[str, Any], epoch: float
    ) -> None:
        frame = int(record.get("first_frame", record["frame"]))
        state.row = self.conn.execute(
            "INSERT INTO tracks (run_id, stream_id, track, first_time, first_epoch, first_frame, "
            "last_time, last_epoch, last_frame, thumbnail, thumbnail_score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self.run, stream, track, iso(epoch), epoch, frame, iso(epoch), epoch, frame, state.thumbnail,
             state.score if state.thumbnail is not None else None),
        ).lastrowid  # fmt: skip
        state.thumbnail = None
        self.written += 1

    def _update_track(self, state: _Track, record: dict[str, Any], epoch: float) -> None:
        """Last seen and the current decisions, and the probabilities when the record has them, in the JSON
        columns and in track_attributes."""
        on = json.dumps(sorted(state.on))
        self.conn.execute(
            "UPDATE tracks SET last_time = ?, last_epoch = ?, last_frame = ?, attributes = ? WHERE id = ?",
            (iso(epoch), epoch, int(record["frame"]), on, state.row),
        )
        probs = record.get("probs")
        if probs:
            self.conn.execute("UPDATE tracks SET probs = ? WHERE id = ?", (json.dumps(probs), state.row))
            self.conn.executemany(
                "INSERT INTO track_attributes (track_id, name, prob, is_on) VALUES (?, ?, ?, 0) "
                "ON CONFLICT (track_id, name) DO UPDATE SET prob = excluded.prob",
                [(state.row, name, float(p)) for name, p in probs.items()],
            )
        self.conn.execute(
            "UPDATE track_attributes SET is_on = name IN (SELECT value FROM json_each(?)) WHERE track_id = ?",
            (on, state.row),
        )


@dataclass(frozen=True)
class StoredTrack:
    """One row of `tracks` as search and report show it."""

    id: int
    stream: str
    run: int
    track: int
    first_time: str
    first_epoch: float
    first_frame: int
    last_time: str
    last_epoch: float
    last_frame: int
    frames_seen: int | None
    left_reason: str | None
    attributes: list[str]
    probs: dict[str, float]
    has_thumbnail: bool
    thumbnail: bytes | None  # JPEG; None when not asked for (or there is none)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the picture itself."""
        return {k: v for k, v in self.__dict__.items() if k != "thumbnail"}


_TRACK_COLUMNS = (
    "t.id, s.name, t.run_id, t.track, t.first_time, t.first_epoch, t.first_frame, t.last_time, t.last_epoch, "
    "t.last_frame, t.frames_seen, t.left_reason, t.attributes, t.probs"
)


def read_tracks(
    conn: sqlite3.Connection, where: str, params: Sequence[Any], limit: int | None, thumbnails: bool
) -> list[StoredTrack]:
    """Tracks (`t`, joined with their stream `s`) matching `where` — SQL with `?` placeholders only — by
    first sighting, at most `limit`."""
    thumb = "t.thumbnail" if thumbnails else "NULL"
    rows = conn.execute(
        f"SELECT {_TRACK_COLUMNS}, t.thumbnail IS NOT NULL, {thumb} FROM tracks t JOIN streams s ON s.id = t.stream_id "
        f"WHERE {where} ORDER BY t.first_epoch, t.id LIMIT ?",
        (*params, -1 if limit is None else limit),
    ).fetchall()
    return [
        StoredTrack(*row[:12], json.loads(row[12]), json.loads(row[13]), bool(row[14]), row[15])
        for row in rows
    ]


def count_tracks(conn: sqlite3.Connection, where: str, params: Sequence[Any]) -> int:
    return conn.execute(
        f"SELECT count(*) FROM tracks t JOIN streams s ON s.id = t.stream_id WHERE {where}", tuple(params)
    ).fetchone()[0]


def attribute_names(conn: sqlite3.Connection) -> list[str]:
    """Every attribute name the store has probabilities for."""
    return [r[0] for r in conn.execute("SELECT DISTINCT name FROM track_attributes ORDER BY name")]


def stream_names(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM streams ORDER BY name")]
