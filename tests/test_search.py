"""`partool search`: attribute queries, streams and time windows over a small hand-built event store, with
the answers worked out by hand; bad queries, names, times and files exit 2 with one line that says why."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from partool.cli.app import main
from partool.errors import UserError
from partool.video.event_store import EventStoreSink, open_store
from partool.video.query import (
    And,
    Not,
    Or,
    Term,
    find_tracks,
    matches,
    parse_query,
    parse_time,
    resolve_names,
    to_sql,
)

T0 = datetime(2026, 12, 1, 14, 0, tzinfo=timezone.utc).timestamp()
NAMES = ("Female", "Backpack", "Hat", "Skirt&Dress")

# (stream, track, first s, last s, attributes on at the end, final probabilities in NAMES' order or None)
TRACKS = [
    ("cam0", 1, 0, 10, ["Female", "Backpack"], (0.9, 0.85, 0.1, 0.2)),
    ("cam1", 1, 5, 15, ["Backpack"], (0.2, 0.95, 0.3, 0.05)),
    ("cam0", 2, 20, 30, ["Female", "Backpack", "Hat"], (0.8, 0.75, 0.7, 0.1)),
    ("cam1", 2, 50, 60, ["Female", "Skirt&Dress"], (0.95, 0.4, 0.05, 0.9)),
    ("cam0", 3, 100, 110, ["Hat"], (0.3, 0.6, 0.88, 0.1)),  # Backpack 0.6 but off (hysteresis)
    ("cam1", 3, 200, 200, [], None),  # never classified
]


def key(track: dict) -> str:
    return f"{track['stream']}/{track['track']}"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """The tracks above through the real sink: appear with their first attributes, Hat of cam0/2 switches
    on at 25 s, and all leave; wall-clock T0 + source time."""
    path = tmp_path_factory.mktemp("store") / "events.db"
    clock = [T0]
    sink = EventStoreSink(path, clock=lambda: clock[0])
    events = []
    for stream, track, first, last, on, probs in TRACKS:
        named = dict(zip(NAMES, probs, strict=True)) if probs else None
        base = {"stream": stream, "track": track, "box": [0, 0, 40, 80]}
        early = [a for a in on if (stream, track, a) != ("cam0", 2, "Hat")]
        events.append({**base, "event": "track_appeared", "time": first, "frame": first * 10, "attributes": early,
                       "probs": named})  # fmt: skip
        events.append({**base, "event": "track_left", "time": last, "frame": last * 10, "first_frame": first * 10,
                       "frames_seen": (last - first) * 10 + 1, "attributes": on, "probs": named, "reason": "lost"})  # fmt: skip
    events.append({"stream": "cam0", "track": 2, "box": [0, 0, 40, 80], "event": "attribute_changed", "time": 25,
                   "frame": 250, "attribute": "Hat", "value": True, "prob": 0.66, "probs": None})  # fmt: skip
    for event in sorted(events, key=lambda e: e["time"]):
        clock[0] = T0 + event["time"]
        sink.event(event)
    sink.close()
    return path


def found(db, query=None, **kw) -> set[str]:
    conn = open_store(db)
    try:
        return {key(t.to_dict()) for t in find_tracks(conn, query, **kw).tracks}
    finally:
        conn.close()


@pytest.mark.parametrize(
    "query, expected",
    [
        ("Female & Backpack & !Hat", {"cam0/1"}),
        ("female & BACKPACK", {"cam0/1", "cam0/2"}),
        ("Backpack", {"cam0/1", "cam1/1", "cam0/2"}),  # the decision, not p > 0.5: cam0/3 has 0.6, off
        ("Backpack>0.8", {"cam0/1", "cam1/1"}),
        ("Female>=0.8", {"cam0/1", "cam0/2", "cam1/2"}),
        ("Hat<0.1", {"cam1/2"}),  # the unclassified track has no probability to compare
        ("!Female", {"cam1/1", "cam0/3", "cam1/3"}),
        ("!(Hat | Backpack)", {"cam1/2", "cam1/3"}),
        ('(Hat | "skirt&dress") & Female', {"cam0/2", "cam1/2"}),
        ("Hat | Female & 'Skirt&Dress'", {"cam0/2", "cam0/3", "cam1/2"}),  # & binds tighter than |
        ("!!Hat", {"cam0/2", "cam0/3"}),
        ("  Backpack>0.8|Hat>=0.88  ", {"cam0/1", "cam1/1", "cam0/3"}),
    ],
)
def test_queries(db, query, expected):
    assert found(db, query) == expected
    assert by_python(query) == expected  # the second implementation, over TRACKS' final state


def by_python(query: str) -> set[str]:
    """The tracks `query.matches` accepts, from TRACKS directly (not from the store)."""
    expr = resolve_names(parse_query(query), NAMES)
    return {
        f"{stream}/{track}"
        for stream, track, _, _, on, probs in TRACKS
        if matches(expr, on, dict(zip(NAMES, probs, strict=True)) if probs else {})
    }


def random_query(rng: random.Random, depth: int = 0) -> str:
    """A random query over NAMES: terms with and without comparisons, !, &, | and parentheses."""
    roll = rng.random()
    if depth >= 3 or roll < 0.35:
        name = rng.choice(NAMES)
        name = f'"{name}"' if "&" in name else name
        if rng.random() < 0.4:
            return f"{name}{rng.choice(['>', '>=', '<', '<='])}{rng.choice([0.1, 0.3, 0.6, 0.75, 0.85, 0.9])}"
        return name
    if roll < 0.5:
        return "!" + random_query(rng, depth + 1)
    joined = f" {rng.choice('&|')} ".join(random_query(rng, depth + 1) for _ in range(rng.randint(2, 3)))
    return f"({joined})" if rng.random() < 0.5 else joined


def test_sql_and_python_agree_on_random_queries(db):
    rng = random.Random(7)
    queries = [random_query(rng) for _ in range(150)]
    answers = {q: found(db, q) for q in queries}
    for query in queries:
        assert answers[query] == by_python(query), query
    # the sample is not degenerate: it has empty, full and partial answers
    sizes = {len(a) for a in answers.values()}
    assert 0 in sizes and len(TRACKS) in sizes and len(sizes) >= 5


def test_streams_and_times(db):
    assert found(db) == {f"{s}/{t}" for s, t, *_ in TRACKS}
    assert found(db, "Backpack", streams=["cam1"]) == {"cam1/1"}
    assert found(db, streams=["cam0", "cam1"]) == found(db)
    # in view at or after T0 + 25 s: last seen >= 25
    assert found(db, since=T0 + 25) == {"cam0/2", "cam1/2", "cam0/3", "cam1/3"}
    # in view at or before T0 + 12 s: first seen <= 12
    assert found(db, until=T0 + 12) == {"cam0/1", "cam1/1"}
    assert found(db, "Female", since=T0 + 8, until=T0 + 22) == {"cam0/1", "cam0/2"}
    conn = open_store(db)
    limited = find_tracks(conn, limit=2)
    assert limited.total == 6 and [key(t.to_dict()) for t in limited.tracks] == [
        "cam0/1",
        "cam1/1",
    ]  # first seen first


def test_the_parse_tree_and_its_sql():
    expr = parse_query("!a | b & c>0.5")
    assert expr == Or(Not(Term("a", column=2)), And(Term("b", column=6), Term("c", ">", 0.5, 10)))
    hostile = "x' OR 1=1 --"
    sql, params = to_sql(resolve_names(parse_query(f'"{hostile}" > 0.25'), [hostile]))
    assert hostile not in sql and "0.25" not in sql and params == [hostile, 0.25]  # values only as parameters


def test_time_forms():
    now = T0
    assert parse_time("2026-12-01T14:00Z", "--since") == T0
    assert parse_time("2026-12-01 15:00+01:00", "--since") == T0
    assert parse_time("2h", "--since", now=now) == T0 - 7200
    assert parse_time("90s", "--since", now=now) == T0 - 90
    assert parse_time("now", "--until", now=now) == T0
    local = datetime(2026, 12, 1, 14, 0).astimezone().timestamp()  # no offset: this machine's local time
    assert parse_time("2026-12-01 14:00", "--since") == local
    with pytest.raises(
        UserError, match=r"--until 'tomorrow-ish' is not a time: write '2026-12-01 14:00' \(local"
    ):
        parse_time("tomorrow-ish", "--until")


def run(capsys, *args: str) -> tuple[int, str, str]:
    """The console entry point in this process: exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, err


def test_cli_json_and_table(db, capsys):
    code, out, _ = run(capsys, "search", str(db), "Female & Backpack & !Hat", "--json")
    payload = json.loads(out)
    assert code == 0 and payload["matched"] == 1 and [key(t) for t in payload["tracks"]] == ["cam0/1"]
    track = payload["tracks"][0]
    assert track["first_time"] == "2026-12-01T14:00:00.000Z" and track["last_frame"] == 100
    assert track["probs"]["Backpack"] == 0.85 and track["has_thumbnail"] is False
    code, out, _ = run(capsys, "search", str(db), "Backpack", "--stream", "cam0", "--since", "2026-12-01T14:00:05Z",
                       "--until", "2026-12-01T14:00:21Z", "--json")  # fmt: skip
    assert code == 0 and {key(t) for t in json.loads(out)["tracks"]} == {"cam0/1", "cam0/2"}
    code, out, _ = run(capsys, "search", str(db), "hat", "--limit", "1")
    assert code == 0 and "2 tracks match 'hat'; the first 1 shown (--limit)" in out
    assert "200–300" in out and "1000–1100" not in out  # cam0/2's frames; cam0/3 is left out


@pytest.mark.parametrize(
    "query, message",
    [
        ("Backpak & Hat", "unknown attribute 'Backpak' at column 1; did you mean Backpack?"),
        ("Female & Skirt", "unknown attribute 'Skirt' at column 10; did you mean Skirt&Dress? (quote names"),
        (
            "Hat | Umbrella",
            "unknown attribute 'Umbrella' at column 7; the store's attributes are Backpack, Female, Hat, Skirt&Dress",
        ),
        ("Female & & Hat", "at column 10 expected an attribute name, '!' or '(', found '&'"),
        ("(Female | Hat", "at column 14 expected '&', '|' or ')', found the end of the query"),
        ("Female Hat", "at column 8 expected '&', '|' or the end of the query, found 'Hat'"),
        ("Backpack > 1.5", "at column 12 expected a probability from 0 to 1 after '>', found '1.5'"),
        (
            "Backpack >",
            "at column 11 expected a probability from 0 to 1 after '>', found the end of the query",
        ),
        ('"Hat', "the quote at column 1 is never closed"),
        ("Hat &", "at column 6 expected an attribute name, '!' or '(', found the end of the query"),
        ("   ", "the query is empty"),
    ],
)
def test_bad_queries_exit_2_with_one_line(db, capsys, query, message):
    code, out, err = run(capsys, "search", str(db), query)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("partool: error: ") and message in err, err


def test_bad_options_and_files_exit_2(db, tmp_path, capsys):
    cases = [
        (["--since", "yesterday"], "--since 'yesterday' is not a time"),
        (["--since", "2026-12-02", "--until", "2026-12-01"], "--since is later than --until"),
        (["--stream", "cam9"], "--stream cam9: no such stream in this store (it has cam0, cam1)"),
        (["--limit", "-1"], "--limit must be 0 (no limit) or more, got -1"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, "search", str(db), *args)
        assert code == 2 and message in err and err.count("\n") == 1, err
    (tmp_path / "text.db").write_text("hello " * 200)
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE x (y)")
    other.close()
    newer = tmp_path / "newer.db"
    newer.write_bytes(db.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    for path, message in [
        (tmp_path / "missing.db", "no such event store"),
        (tmp_path / "text.db", "not a partool event store"),
        (tmp_path / "other.db", "not a partool event store (an SQLite file of another program)"),
        (newer, "event store schema version 7 is newer than this partool"),
    ]:
        code, _, err = run(capsys, "search", str(path), "Hat")
        assert code == 2 and f"{path}: " in err and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "missing.db").exists()


def test_the_console_script_prints_one_line(db):
    """As a user runs it: a separate process, exit status 2, one line on stderr, no traceback."""
    result = subprocess.run([sys.executable, "-m", "partool", "search", str(db), "Female & Bakpack"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert (
        result.stderr.strip()
        == "partool: error: unknown attribute 'Bakpack' at column 10; did you mean Backpack?"
    )
