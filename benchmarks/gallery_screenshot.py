"""A screenshot of `partool report --html` on a small synthetic event store, taken by headless Chromium.

SynthPAR people (rendered crops, their true labels as confident probabilities) walk past two cameras; each
track is fed through `EventStoreSink` as the pipeline would — a blurred small crop, then the full-size one,
so the store's size × sharpness choice picks the latter — then the gallery is written and opened in
Chromium with a filter in its URL fragment. Needs the `chromium` binary (Debian package `chromium`).

    python benchmarks/gallery_screenshot.py --out benchmarks/results/gallery.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from partool.artifacts import atomic_write_bytes
from partool.data.synth import ATTRIBUTES, SynthPAR, render
from partool.video.event_store import EventStoreSink, attribute_names, open_store, stream_names
from partool.video.query import find_tracks
from partool.video.report import render_gallery

CROP_HW = (192, 96)


def build_store(path: Path, tracks: int, seed: int) -> None:
    """`tracks` SynthPAR people over cam0 and cam1, 20 s apart, each seen for 6 to 15 s."""
    rng = np.random.default_rng(seed)
    start = 1_796_000_000.0  # a fixed wall clock, so the picture is the same on every run
    now = [start]
    sink = EventStoreSink(path, clock=lambda: now[0])
    for i in range(tracks):
        person, scene = SynthPAR.sample("test", i, seed)
        stream, track = f"cam{i % 2}", i // 2 + 1
        image = cv2.cvtColor(render(person, scene, CROP_HW), cv2.COLOR_RGB2BGR)
        labels = person.labels()
        probs = {n: round(float(rng.uniform(0.8, 0.98) if y else rng.uniform(0.02, 0.25)), 3)
                 for n, y in zip(ATTRIBUTES, labels, strict=True)}  # fmt: skip
        on = [n for n, y in zip(ATTRIBUTES, labels, strict=True) if y]
        first, last = 20.0 * i, 20.0 * i + float(rng.uniform(6, 15))
        base = {"stream": stream, "track": track, "box": [0, 0, CROP_HW[1], CROP_HW[0]], "probs": probs}
        small = cv2.GaussianBlur(cv2.resize(image, (CROP_HW[1] // 2, CROP_HW[0] // 2)), (0, 0), 2)
        sink.crop(stream, track, small, [0, 0, CROP_HW[1] // 2, CROP_HW[0] // 2])
        now[0] = start + first
        sink.event(
            {**base, "event": "track_appeared", "time": first, "frame": int(first * 15), "attributes": on}
        )
        sink.crop(stream, track, image, base["box"])
        now[0] = start + last
        sink.event({**base, "event": "track_left", "time": last, "frame": int(last * 15), "attributes": on,
                    "first_frame": int(first * 15), "frames_seen": int((last - first) * 15), "reason": "lost"})  # fmt: skip
    sink.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gallery.png"))
    parser.add_argument("--tracks", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fragment",
        default="attr=!Hat",
        help="filter applied through the URL, e.g. attr=Backpack&stream=cam1",
    )
    parser.add_argument("--size", default="1280,900", help="window WIDTH,HEIGHT")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not installed (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as work:
        db, html = Path(work) / "events.db", Path(work) / "gallery.html"
        build_store(db, args.tracks, args.seed)
        conn = open_store(db)
        found = find_tracks(conn, thumbnails=True)
        page = render_gallery(found.tracks, attribute_names(conn), stream_names(conn), "partool report: events.db",
                              f"{found.total} tracks (synthetic store)", found.total)  # fmt: skip
        conn.close()
        atomic_write_bytes(html, page.encode())
        shot = Path(work) / "shot.png"
        subprocess.run(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={work}/profile",
             "--hide-scrollbars", f"--window-size={args.size}", f"--screenshot={shot}",
             f"{html.as_uri()}#{args.fragment}"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        atomic_write_bytes(args.out, shot.read_bytes())
    print(f"wrote {args.out} ({args.tracks} tracks, #{args.fragment})")


if __name__ == "__main__":
    main()
