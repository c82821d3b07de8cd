"""`partool report --html`: the gallery is one offline file, and in a real headless Chromium a filter given
in the URL fragment shows exactly the tracks the store says match it."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from partool.cli.app import main
from partool.video.event_store import EventStoreSink, open_store
from partool.video.query import find_tracks
from partool.video.report import filter_fragment

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
NAMES = ("Female", "Backpack", "Hat", "Skirt&Dress")

# stream, track, attributes on, probabilities in NAMES' order, colour of its crop (None: no crop)
TRACKS = [
    ("cam0", 1, ["Female", "Backpack"], (0.9, 0.85, 0.1, 0.2), (40, 40, 200)),
    ("cam0", 2, ["Backpack", "Hat"], (0.3, 0.75, 0.7, 0.1), (40, 200, 40)),
    ("cam1", 1, ["Backpack"], (0.2, 0.95, 0.3, 0.05), (200, 40, 40)),
    ("cam1", 2, ["Female", "Skirt&Dress"], (0.95, 0.4, 0.05, 0.9), (200, 200, 40)),
    ("cam0", 3, ["Hat"], (0.6, 0.6, 0.88, 0.1), (40, 200, 200)),
    ("cam1", 3, [], None, None),
]


def crop(colour: tuple[int, int, int]) -> np.ndarray:
    """A person-shaped test card: the colour with a stripe pattern, so it has edges to be sharp with."""
    image = np.zeros((96, 48, 3), np.uint8)
    image[:] = colour
    image[::8] = 255
    return image


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "events.db"
    sink = EventStoreSink(path)
    for i, (stream, track, on, probs, colour) in enumerate(TRACKS):
        if colour is not None:
            sink.crop(stream, track, crop(colour), [0, 0, 48, 96])
        named = dict(zip(NAMES, probs, strict=True)) if probs else None
        base = {"stream": stream, "track": track, "box": [0, 0, 48, 96], "attributes": on, "probs": named}
        sink.event({**base, "event": "track_appeared", "time": float(i), "frame": i * 10})
        sink.event({**base, "event": "track_left", "time": i + 5.0, "frame": i * 10 + 50, "first_frame": i * 10,
                    "frames_seen": 51, "reason": "lost"})  # fmt: skip
    sink.close()
    return path


def report(tmp_path: Path, db: Path, *args: str) -> Path:
    html = tmp_path / "gallery.html"
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(db), "--html", str(html), *args])
    assert not exit_info.value.code
    return html


@pytest.fixture(scope="module")
def gallery(db, tmp_path_factory):
    return report(tmp_path_factory.mktemp("gallery"), db)


class Page(HTMLParser):
    """The cards of a gallery (id -> visible) and the text of the notice and the count."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.cards: dict[int, bool] = {}
        self.images = 0
        self.text: dict[str, str] = {}
        self.hidden: dict[str, bool] = {}
        self._in: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure" and "card" in (a.get("class") or ""):
            self.cards[int(a["data-id"])] = "hidden" not in a
        if tag == "img":
            self.images += 1
        if a.get("id") in ("notice", "count", "empty"):
            self._in = a["id"]
            self.text[self._in] = ""
            self.hidden[self._in] = "hidden" in a

    def handle_data(self, data: str) -> None:
        if self._in:
            self.text[self._in] += data

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    @property
    def visible(self) -> set[int]:
        return {i for i, shown in self.cards.items() if shown}


def ids(db: Path, query: str | None = None, streams: tuple[str, ...] = ()) -> set[int]:
    """What the store says matches (the same query language as `partool search`)."""
    conn = open_store(db)
    try:
        return {t.id for t in find_tracks(conn, query, streams).tracks}
    finally:
        conn.close()


def test_the_gallery_is_one_offline_file(db, gallery):
    html = gallery.read_text()
    links = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", html)
    assert links and all(link.startswith("data:image/jpeg;base64,") for link in links)
    assert not re.search(r"url\(|@import|https?://|<link|<iframe", html)
    page = Page(html)
    assert set(page.cards) == ids(db) and all(page.cards.values())  # every card shown before any script
    assert page.images == 5  # every track with a crop; cam1/3 had none
    for match in re.finditer(r'src="data:image/jpeg;base64,([^"]+)"', html):
        image = cv2.imdecode(np.frombuffer(base64.b64decode(match[1]), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (96, 48, 3)


def test_the_command_picks_tracks_like_search(db, tmp_path):
    html = report(tmp_path, db, "Backpack", "--stream", "cam1")
    assert set(Page(html.read_text()).cards) == ids(db, "Backpack", ("cam1",)) == {3}
    assert 'class="stream" value="cam1"' in html.read_text() and 'value="cam0"' not in html.read_text()


def test_bad_input_exits_2(db, tmp_path, capsys):
    for args, message in [
        ([str(tmp_path / "missing.db"), "--html", str(tmp_path / "g.html")], "no such event store"),
        (
            [str(db), "Hatt", "--html", str(tmp_path / "g.html")],
            "unknown attribute 'Hatt' at column 1; did you mean Hat?",
        ),
        ([str(db), "--html", str(tmp_path / "g.html"), "--until", "soon"], "--until 'soon' is not a time"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["report", *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "g.html").exists()


def chromium(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def shown(gallery: Path, fragment: str) -> Page:
    return Page(chromium(f"{gallery.as_uri()}#{fragment}", "--dump-dom").stdout)


@needs_chromium
@pytest.mark.parametrize(
    "fragment, query, streams, by_hand",
    [
        ("", None, (), {1, 2, 3, 4, 5, 6}),
        ("attr=Backpack,!Hat&stream=cam0", "Backpack & !Hat", ("cam0",), {1}),
        ("attr=backpack", "Backpack", (), {1, 2, 3}),
        ("attr=Female%3E0.85", "Female>0.85", (), {1, 4}),
        ("attr=Hat%3C0.1,Female", "Hat<0.1 & Female", (), {4}),
        ("attr=Skirt%26Dress", '"Skirt&Dress"', (), {4}),
        ("attr=!Female&stream=cam1,cam0", "!Female", ("cam0", "cam1"), {2, 3, 5, 6}),
        ("stream=cam1", None, ("cam1",), {3, 4, 6}),
    ],
)
def test_a_fragment_filters_the_gallery_in_chromium(db, gallery, fragment, query, streams, by_hand):
    page = shown(gallery, fragment)
    assert set(page.cards) == ids(db)
    assert page.visible == ids(db, query, streams) == by_hand
    assert page.text["count"] == f"{len(by_hand)} of 6 tracks shown" and page.hidden["notice"]


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("Backpack & !Hat", "attr=Backpack,!Hat"),
        ("Female>0.85", "attr=Female%3E0.85"),
        ("Hat<0.1 & Female", "attr=Hat%3C0.1,Female"),
        ('"Skirt&Dress"', "attr=Skirt%26Dress"),
        ("!Female & (Hat & !Backpack<=0.5)", "attr=!Female,Hat,!Backpack%3C%3D0.5"),
        ("Female | Hat", None),  # the page ANDs its terms
        ("!(Female & Hat)", None),
    ],
)
def test_a_query_as_the_galleries_fragment(query, fragment):
    """The fragments above that have a query are those the Chromium test checks against the store."""
    assert filter_fragment(query) == fragment


@needs_chromium
def test_unknown_terms_are_named_and_ignored(db, gallery):
    page = shown(gallery, "attr=Hat,Umbrella&stream=cam0,cam7")
    assert page.visible == ids(db, "Hat", ("cam0",)) == {2, 5}
    assert not page.hidden["notice"]
    assert (
        'ignored unknown attribute term "Umbrella"' in page.text["notice"] and '"cam7"' in page.text["notice"]
    )


@needs_chromium
def test_an_empty_result_says_so(gallery):
    page = shown(gallery, "attr=Hat,Skirt%26Dress")
    assert page.visible == set() and not page.hidden["empty"]


@needs_chromium
def test_a_screenshot_shows_the_filtered_gallery(gallery, tmp_path):
    png = tmp_path / "shot.png"
    chromium(
        f"{gallery.as_uri()}#attr=Backpack",
        f"--screenshot={png}",
        "--window-size=1000,700",
        "--hide-scrollbars",
    )
    image = cv2.imread(str(png))
    assert image.shape == (700, 1000, 3) and image.std() > 10  # drawn, not blank
