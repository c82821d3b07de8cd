"""A street clip with ground truth: SynthPAR's people walk across a street (video tests, demo, benchmark).

Why: tracking and per-track attributes need a video whose boxes, track ids, occlusions and labels are
known exactly. Each walker is a `synth.Person` drawn by `synth.draw_person` every frame; their
silhouettes (the same drawing as a mask) give the boxes and the visible fractions, so the truth
follows from the drawing. Seeded like the crops, from SynthPAR's "clip" stream.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from partool.artifacts import atomic_write_bytes
from partool.data.synth import ATTRIBUTES, STREAMS, Person, draw_person, hsv, muted, sample_person


@dataclass(frozen=True)
class Walker:
    """One track of the clip: who, which lane (foot y), direction, speed and when they enter."""

    track_id: int
    person: Person
    foot_y: float
    height: float
    direction: int
    speed: float
    t_enter: float


def _street(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    horizon = int(h * 0.35)
    img = np.zeros((h, w, 3), np.uint8)
    sky = np.array(hsv(rng.uniform(190, 230), rng.uniform(0.1, 0.4), rng.uniform(0.7, 0.95)), np.float32)
    img[:horizon] = sky.astype(np.uint8)
    x = 0
    while x < w:
        bw = int(rng.integers(w // 10, w // 4))
        top = int(rng.integers(int(h * 0.02), horizon))
        cv2.rectangle(img, (x, top), (x + bw, horizon + int(h * 0.2)), muted(rng), -1)
        for wy in range(top + 6, horizon + int(h * 0.15), 14):
            for wx in range(x + 5, x + bw - 8, 12):
                cv2.rectangle(img, (wx, wy), (wx + 5, wy + 7), muted(rng), -1)
        x += bw
    cv2.rectangle(img, (0, horizon + int(h * 0.2)), (w, h), hsv(0, 0, rng.uniform(0.45, 0.65)), -1)
    for y in range(horizon + int(h * 0.2), h, max(8, h // 20)):
        cv2.line(img, (0, y), (w, y), hsv(0, 0, rng.uniform(0.4, 0.6)), 1)
    return img


def _walkers(rng: np.random.Generator, n: int, w: int, h: int, seconds: float) -> list[Walker]:
    """Tracks that enter, cross and leave; the first two walk towards each other at once, so they cross."""
    horizon = h * 0.35
    out = []
    for k in range(n):
        foot_y = float(rng.uniform(0.72, 0.97) * h)
        height = (foot_y - horizon) * 0.95
        direction = (1 if k % 2 == 0 else -1) if k < 2 else int(rng.choice([-1, 1]))
        travel = w + height  # from just outside one edge to just outside the other
        speed = travel / (seconds * float(rng.uniform(0.55, 0.9)))
        t_enter = 0.0 if k < 2 else float(rng.uniform(0.0, 0.45 * seconds))
        out.append(Walker(k + 1, sample_person(rng), foot_y, float(height), direction, float(speed), t_enter))
    return out


def _walker_x(wk: Walker, t: float, w: int) -> float | None:
    dist = (t - wk.t_enter) * wk.speed
    if dist < 0 or dist > w + wk.height:
        return None
    start = -wk.height / 2 if wk.direction > 0 else w + wk.height / 2
    return start + wk.direction * dist


def _person_mask(wk: Walker, cx: float, phase: float) -> tuple[np.ndarray, int, int]:
    """The person's full silhouette on a local canvas, and the canvas' top-left in frame coordinates."""
    pad = 4
    lh, lw = math.ceil(wk.height * 1.1) + 2 * pad, math.ceil(wk.height * 0.8) + 2 * pad
    x0, y0 = math.floor(cx - lw / 2), math.floor(wk.foot_y - wk.height * 1.06) - pad
    mask = np.zeros((lh, lw), np.uint8)
    draw_person(mask, wk.person, cx - x0, wk.foot_y - y0, wk.height, phase, mask_value=255)
    return mask, x0, y0


def render_clip(
    path: str,
    seconds: float = 6.0,
    fps: float = 15.0,
    size: tuple[int, int] = (640, 360),
    seed: int = 0,
    num_people: int = 4,
) -> dict[str, Any]:
    """Write a street clip (`size` is (width, height)) and its ground truth next to it; return the truth.

    The video is MP4 ('mp4v'), or MJPG .avi where this OpenCV cannot write MP4. The truth (also
    written as `<stem>.json`) has per frame the tight box [x1, y1, x2, y2] of every person at least
    partly in view, their track id and visible fraction (pixels not hidden by nearer people over
    pixels inside the frame), and per track the attribute labels. Both files are written atomically.
    """
    w, h = int(size[0]), int(size[1])
    rng = np.random.default_rng([seed, STREAMS["clip"]])
    background = _street(rng, w, h)
    walkers = _walkers(rng, num_people, w, h, seconds)
    frames_total = max(1, round(seconds * fps))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(os.path.abspath(path))[0]
    writer, tmp_video, final_video = _open_writer(stem, fps, (w, h))
    frames = []
    try:
        for f in range(frames_total):
            t = f / fps
            frame = background.copy()
            ids = np.zeros((h, w), np.int32)
            objects = []
            # nearer people (larger foot y) are drawn later and hide farther ones
            for wk in sorted(walkers, key=lambda k: k.foot_y):
                cx = _walker_x(wk, t, w)
                if cx is None:
                    continue
                phase = (t - wk.t_enter) * wk.speed / (0.35 * wk.height) * math.pi
                draw_person(frame, wk.person, cx, wk.foot_y, wk.height, phase)
                mask, x0, y0 = _person_mask(wk, cx, phase)
                fy1, fy2, fx1, fx2 = (
                    max(0, y0),
                    min(h, y0 + mask.shape[0]),
                    max(0, x0),
                    min(w, x0 + mask.shape[1]),
                )
                if fy1 >= fy2 or fx1 >= fx2:
                    continue
                part = mask[fy1 - y0 : fy2 - y0, fx1 - x0 : fx2 - x0] > 0
                if not part.any():
                    continue
                ids[fy1:fy2, fx1:fx2][part] = wk.track_id
                ys, xs = np.nonzero(part)
                box = [
                    int(xs.min() + fx1),
                    int(ys.min() + fy1),
                    int(xs.max() + fx1 + 1),
                    int(ys.max() + fy1 + 1),
                ]
                objects.append({"track_id": wk.track_id, "box": box, "_in_frame": int(part.sum())})
            for obj in objects:
                obj["visible"] = round(float((ids == obj["track_id"]).sum()) / obj.pop("_in_frame"), 4)
            noise = np.random.default_rng([seed, STREAMS["clip"], f]).normal(0, 2.0, frame.shape)
            frame = np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            frames.append({"index": f, "objects": sorted(objects, key=lambda o: o["track_id"])})
        writer.release()
        os.replace(tmp_video, final_video)
    except BaseException:
        writer.release()
        if os.path.exists(tmp_video):
            os.unlink(tmp_video)
        raise
    truth = {
        "video": os.path.basename(final_video),
        "fps": fps,
        "size": [w, h],
        "num_frames": frames_total,
        "seed": seed,
        "attributes": list(ATTRIBUTES),
        "tracks": {
            str(wk.track_id): {
                "attributes": dict(zip(ATTRIBUTES, (int(v) for v in wk.person.labels()), strict=True))
            }
            for wk in walkers
        },
        "frames": frames,
    }
    atomic_write_bytes(stem + ".json", json.dumps(truth, indent=1).encode())
    return truth


def _open_writer(stem: str, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str, str]:
    """An MP4 writer, or MJPG/AVI when this OpenCV build has no MP4 encoder; writes to a temp name."""
    folder, base = os.path.split(stem)
    for fourcc, ext in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        tmp = os.path.join(folder, f".{base}.partial{ext}")
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, tmp, stem + ext
        writer.release()
        if os.path.exists(tmp):
            os.unlink(tmp)
    raise RuntimeError("this OpenCV build can write neither MP4 (mp4v) nor AVI (MJPG) video")
