"""`partool search DB QUERY`: the tracks an event store holds that match an attribute query, as a table or JSON.

The store options (--stream, --since, --until) and the opening of the store live here too, so `partool
report` picks tracks with the same words and the same errors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from partool.errors import UserError

QUERY_ARGUMENT = typer.Argument(
    None,
    help="Attribute query, e.g. 'Female & Backpack & !Hat' or '(Hat | Glasses) & UpperDark>0.8' (single quotes: "
    "in bash, ! inside double quotes recalls history); leave it out for every track.",
    show_default=False,
)
STREAM_OPTION = typer.Option(
    [],
    "--stream",
    metavar="NAME",
    help="Only this stream (repeatable), by the name `partool video` gave it, e.g. cam1.",
    show_default=False,
)
SINCE_OPTION = typer.Option(
    None,
    "--since",
    metavar="TIME",
    help="Only tracks still in view at or after this time: '2026-12-01 14:00' (local time), "
    "'2026-12-01T13:00Z' (UTC), or an age such as '30m', '2h', '7d'.",
)
UNTIL_OPTION = typer.Option(
    None,
    "--until",
    metavar="TIME",
    help="Only tracks already in view at or before this time (same forms as --since; 'now').",
)


@contextmanager
def opened_store(db: Path) -> Iterator[sqlite3.Connection]:
    """The event store, closed afterwards; SQLite's own errors (a locked or damaged file) become one line."""
    from partool.video.event_store import open_store

    conn = open_store(db)
    try:
        yield conn
    except sqlite3.Error as e:
        raise UserError(f"{db}: {e}") from None
    finally:
        conn.close()


def time_window(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    """--since and --until as epoch seconds (None where not given)."""
    from partool.video.query import parse_time

    return (
        parse_time(since, "--since") if since is not None else None,
        parse_time(until, "--until") if until is not None else None,
    )


def check_limit(limit: int) -> int | None:
    """--limit as find_tracks takes it: None for 0 (no limit)."""
    if limit < 0:
        raise UserError(f"--limit must be 0 (no limit) or more, got {limit}")
    return limit or None


def search(
    db: Path = typer.Argument(..., help="Event store written by `partool video … --db FILE`.", show_default=False),
    query: str | None = QUERY_ARGUMENT,
    stream: list[str] = STREAM_OPTION,
    since: str | None = SINCE_OPTION,
    until: str | None = UNTIL_OPTION,
    limit: int = typer.Option(200, "--limit", help="Show at most N tracks, the first seen first (0: all)."),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:  # fmt: skip
    """Find the people an event store saw, by attributes, stream and time.

    A query joins attribute names with & (and), | (or), ! (not) and parentheses; ! binds tightest, then &,
    then |. A plain name means the smoothed decision is on; Backpack>0.8 compares the smoothed
    probability instead (also >=, <, <=). Names are case-insensitive and checked against the store;
    quote those that hold & | ! ( ) < >, like '"Skirt&Dress" & Female'. A track matches on its latest
    attributes, final once it has left. Times are shown in local time.

    Examples:

      partool search events.db 'Female & Backpack & !Hat'

      partool search events.db '(Hat | Glasses) & UpperDark>0.8' --stream cam1 --since "2026-12-01 14:00" --until "2026-12-01 15:30"

      partool search events.db Backpack --since 2h --json      (the last two hours, for scripts)

      partool search events.db                                 (every track)
    """
    from partool.cli.output import console, print_json
    from partool.video.event_store import local_time
    from partool.video.query import find_tracks

    window = time_window(since, until)
    most = check_limit(limit)
    with opened_store(db) as conn:
        found = find_tracks(conn, query, stream, *window, limit=most)
    if json_out:
        print_json({
            "db": str(db), "query": query, "matched": found.total, "shown": len(found.tracks),
            "tracks": [t.to_dict() for t in found.tracks],
        })  # fmt: skip
        return
    from rich.table import Table

    title = f"partool search: {found.total} track{'' if found.total == 1 else 's'}"
    title += f" match {query!r}" if query else " in the store"
    if found.total > len(found.tracks):
        title += f"; the first {len(found.tracks)} shown (--limit)"
    table = Table(title=title, title_justify="left")
    for column in ("id", "stream", "track", "first seen", "last seen", "frames", "attributes"):
        table.add_column(column, justify="right" if column in ("id", "track") else "left", overflow="fold")
    for t in found.tracks:
        first, last = local_time(t.first_epoch), local_time(t.last_epoch)
        table.add_row(
            str(t.id), t.stream, str(t.track), first, last[11:] if last[:10] == first[:10] else last,
            f"{t.first_frame}–{t.last_frame}", ", ".join(t.attributes) or "-",
        )  # fmt: skip
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
