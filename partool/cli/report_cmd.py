"""`partool report DB --html FILE`: an offline HTML gallery of the tracks an event store holds."""

from __future__ import annotations

from pathlib import Path

import typer

from partool.cli.search_cmd import (
    QUERY_ARGUMENT,
    SINCE_OPTION,
    STREAM_OPTION,
    UNTIL_OPTION,
    check_limit,
    opened_store,
    time_window,
)


def report(
    db: Path = typer.Argument(..., help="Event store written by `partool video … --db FILE`.", show_default=False),
    query: str | None = QUERY_ARGUMENT,
    html: Path = typer.Option(..., "--html", help="Write the gallery here: one HTML file, pictures inlined.", show_default=False),
    stream: list[str] = STREAM_OPTION,
    since: str | None = SINCE_OPTION,
    until: str | None = UNTIL_OPTION,
    limit: int = typer.Option(1000, "--limit", help="Put at most N tracks in the page, the first seen first (0: all; each picture adds about 10 kB)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:  # fmt: skip
    """Write an offline HTML gallery of the people an event store saw, filterable by attribute and stream.

    Each track gets a card: its best picture (the largest, sharpest crop), its stream, when it was in
    view and its attributes. The page is one self-contained file (pictures, style and script inline).

    In the page, click an attribute once to require it and twice to exclude it, type terms such as
    Backpack, !Hat, Female>0.8 (all must hold), or tick streams. The filter is kept in the address after
    #, so a link opens with it applied: gallery.html#attr=Backpack,!Hat&stream=cam1 (URL-encode an &
    inside a name: Skirt%26Dress).

    The query, --stream, --since and --until choose which tracks go in the page at all, as in
    `partool search`.

    Examples:

      partool report events.db --html gallery.html

      partool report events.db 'Backpack | HandBag' --html bags.html --stream cam1 --since "2026-12-01 14:00" --until "2026-12-01 18:00"

      chromium --headless=new --screenshot=shot.png "file://$PWD/gallery.html#attr=Female,!Hat"
    """
    from partool.artifacts import atomic_write_bytes
    from partool.cli.output import console, print_json
    from partool.video.report import gallery_page

    window = time_window(since, until)
    most = check_limit(limit)
    with opened_store(db) as conn:
        page, found = gallery_page(conn, f"partool report: {db.name}", query, stream, *window, limit=most)
    atomic_write_bytes(html, page.encode())
    if json_out:
        print_json(
            {"html": str(html), "tracks": len(found.tracks), "matched": found.total, "bytes": len(page)}
        )
        return
    console.print(f"wrote {html}: {len(found.tracks)} of {found.total} tracks, {len(page) / 1e6:.1f} MB")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
