"""SynthPAR: procedurally drawn pedestrians whose attribute labels are exact, and a street clip with ground truth.

Why: the project needs data that trains on a laptop CPU in minutes, runs in CI without downloads,
and whose labels are right by construction, so a model that fails on it has a real bug. Each
sample is a `Person` (what they wear and carry; the labels follow from it) and a `Scene` (where
they stand, background clutter, an optional occluder, colour jitter, noise). Both come from a
random generator seeded by (seed, split, index), so a sample is the same on every machine and
the splits never share a generator. Images are drawn on the fly with OpenCV; nothing touches disk.

Attribute names follow PA-100K's style (Female, Hat, Glasses, Backpack, HandBag, LongSleeve,
UpperStride, Trousers, Shorts, Skirt&Dress) plus colour attributes, 14 in all.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from partool.data.base import PARDataset

ATTRIBUTES = (
    "Female",
    "LongHair",
    "Hat",
    "Glasses",
    "Backpack",
    "HandBag",
    "LongSleeve",
    "UpperStride",
    "UpperDark",
    "UpperRed",
    "Trousers",
    "Shorts",
    "Skirt&Dress",
    "LowerDark",
)
NATIVE_HW = (128, 64)
DEFAULT_SIZES = {"train": 2000, "val": 500, "test": 500}
_STREAMS = {"train": 0, "val": 1, "test": 2, "clip": 3}

RGB = tuple[int, int, int]


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def _colour(rng: np.random.Generator, kind: str) -> RGB:
    """A colour of a category with wide gaps between categories, so the colour labels are unambiguous."""
    if kind == "dark":
        return _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.6), rng.uniform(0.06, 0.26))
    if kind == "red":
        return _hsv(rng.uniform(-10, 8), rng.uniform(0.65, 1.0), rng.uniform(0.55, 0.95))
    if rng.random() < 0.3:  # light neutral: white, beige, light grey
        return _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.12), rng.uniform(0.62, 0.97))
    return _hsv(rng.uniform(35, 325), rng.uniform(0.3, 0.9), rng.uniform(0.5, 0.95))


@dataclass(frozen=True)
class Person:
    """What one pedestrian looks like; `labels()` derives the attribute vector from it."""

    female: bool
    long_hair: bool
    hat: bool
    glasses: bool
    backpack: bool
    handbag: bool
    long_sleeve: bool
    stripes: bool
    upper_kind: str  # "dark" | "red" | "other"
    lower: str  # "trousers" | "shorts" | "skirt"
    lower_dark: bool
    upper_rgb: RGB
    stripe_rgb: RGB
    lower_rgb: RGB
    skin_rgb: RGB
    hair_rgb: RGB
    hat_rgb: RGB
    bag_rgb: RGB
    shoe_rgb: RGB
    build: float  # width scale
    texture: str  # "plain" | "speckle" | "logo": distractors that change no label
    bag_side: int  # +1 right, -1 left (image coordinates)
    stride: float  # leg swing amplitude (radians)
    arm_swing: float

    def labels(self) -> np.ndarray:
        values = (
            self.female,
            self.long_hair,
            self.hat,
            self.glasses,
            self.backpack,
            self.handbag,
            self.long_sleeve,
            self.stripes,
            self.upper_kind == "dark",
            self.upper_kind == "red",
            self.lower == "trousers",
            self.lower == "shorts",
            self.lower == "skirt",
            self.lower_dark,
        )
        return np.array(values, dtype=np.uint8)


def sample_person(rng: np.random.Generator) -> Person:
    """Draw a person with attribute frequencies and correlations loosely like PA-100K's."""
    female = bool(rng.random() < 0.45)
    upper_kind = str(rng.choice(["dark", "red", "other"], p=[0.35, 0.15, 0.5]))
    if rng.random() < (0.35 if female else 0.02):
        lower = "skirt"
    else:
        lower = "shorts" if rng.random() < 0.2 else "trousers"
    lower_dark = bool(rng.random() < 0.5)
    upper_rgb = _colour(rng, upper_kind)
    stripe_rgb = (
        _hsv(0, 0, rng.uniform(0.85, 1.0)) if upper_kind == "dark" else _hsv(0, 0, rng.uniform(0.0, 0.15))
    )
    return Person(
        female=female,
        long_hair=bool(rng.random() < (0.7 if female else 0.12)),
        hat=bool(rng.random() < 0.2),
        glasses=bool(rng.random() < 0.2),
        backpack=bool(rng.random() < 0.25),
        handbag=bool(rng.random() < (0.3 if female else 0.1)),
        long_sleeve=bool(rng.random() < 0.55),
        stripes=bool(rng.random() < 0.18),
        upper_kind=upper_kind,
        lower=lower,
        lower_dark=lower_dark,
        upper_rgb=upper_rgb,
        stripe_rgb=stripe_rgb,
        lower_rgb=_colour(rng, "dark") if lower_dark else _colour(rng, "other"),
        skin_rgb=_hsv(rng.uniform(18, 34), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95)),
        hair_rgb=_hsv(rng.uniform(15, 45), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.6)),
        hat_rgb=_colour(rng, str(rng.choice(["dark", "red", "other"]))),
        bag_rgb=_colour(rng, str(rng.choice(["dark", "other"]))),
        shoe_rgb=_hsv(rng.uniform(0, 360), rng.uniform(0, 0.4), rng.uniform(0.05, 0.7)),
        build=float(rng.uniform(0.88, 1.12)),
        texture=str(rng.choice(["plain", "speckle", "logo"], p=[0.6, 0.2, 0.2])),
        bag_side=int(rng.choice([-1, 1])),
        stride=float(rng.uniform(0.0, 0.3)),
        arm_swing=float(rng.uniform(0.0, 0.25)),
    )


@dataclass(frozen=True)
class Scene:
    """Where the person stands in the crop, and everything around them (drawn from `seed`)."""

    cx: float
    foot_y: float
    height: float
    phase: float
    seed: int

    def head_box(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) holding head, hair, hat and glasses; nothing else changes with them."""
        h = self.height
        top = self.foot_y - h
        half = 0.062 * h * 1.6
        return (
            math.floor(self.cx - half),
            math.floor(top - 0.06 * h),
            math.ceil(self.cx + half),
            math.ceil(top + 0.13 * h),
        )


def sample_scene(rng: np.random.Generator, hw: tuple[int, int] = NATIVE_HW) -> Scene:
    """Scale and position jitter of a pedestrian crop."""
    height_px, width_px = hw
    h = height_px * rng.uniform(0.74, 0.9)
    return Scene(
        cx=width_px / 2 + rng.uniform(-0.08, 0.08) * width_px,
        foot_y=height_px - rng.uniform(0.01, 0.05) * height_px,
        height=float(h),
        phase=float(rng.uniform(0, 2 * math.pi)),
        seed=int(rng.integers(0, 2**62)),
    )


def _pt(x: float, y: float) -> tuple[int, int]:
    return (round(x), round(y))


def draw_person(
    img: np.ndarray,
    p: Person,
    cx: float,
    foot_y: float,
    h: float,
    phase: float,
    mask_value: int | None = None,
) -> None:
    """Draw `p` with feet at (cx, foot_y), `h` pixels tall; with `mask_value`, a hard-edged silhouette instead."""
    aa = cv2.LINE_AA if mask_value is None else cv2.LINE_8

    def paint(colour: RGB) -> tuple[int, ...]:
        return colour if mask_value is None else (mask_value,)

    top = foot_y - h
    r = 0.062 * h
    head_cy = top + 1.05 * r
    shoulder_y, waist_y, hip_y = top + 0.165 * h, top + 0.42 * h, top + 0.5 * h
    knee_y, ankle_y = top + 0.73 * h, top + 0.955 * h
    b = p.build
    sw = h * (0.095 if p.female else 0.115) * b
    ww = h * (0.068 if p.female else 0.085) * b
    hw = h * (0.105 if p.female else 0.088) * b
    limb = max(2, round(0.055 * h * b))
    leg_w = max(2, round(0.07 * h * b))

    def fill(points: list[tuple[float, float]], colour: RGB) -> None:
        pts = np.array([_pt(x, y) for x, y in points], dtype=np.int32)
        cv2.fillPoly(img, [pts], paint(colour), aa)

    def line(a: tuple[float, float], c: tuple[float, float], colour: RGB, width: int) -> None:
        cv2.line(img, _pt(*a), _pt(*c), paint(colour), max(1, width), aa)

    def torso_half_width(y: float) -> float:
        if y <= waist_y:
            return sw + (ww - sw) * (y - shoulder_y) / (waist_y - shoulder_y)
        return ww + (hw - ww) * (y - waist_y) / (hip_y - waist_y)

    swing = math.sin(phase)
    # backpack body behind the torso, sticking out on one side
    if p.backpack:
        off = p.bag_side * sw * 0.55
        fill(
            [
                (cx + off - sw * 0.75, shoulder_y + 0.02 * h),
                (cx + off + sw * 0.75, shoulder_y + 0.02 * h),
                (cx + off + sw * 0.8, waist_y + 0.03 * h),
                (cx + off - sw * 0.8, waist_y + 0.03 * h),
            ],
            p.bag_rgb,
        )
    # legs and shoes
    for side in (-1, 1):
        hip = (cx + side * 0.045 * h * b, hip_y - 0.02 * h)
        ang = side * 0.03 + p.stride * swing * side
        ankle = (hip[0] + math.sin(ang) * (ankle_y - hip[1]), ankle_y)
        knee = (hip[0] + (ankle[0] - hip[0]) * (knee_y - hip[1]) / (ankle_y - hip[1]), knee_y)
        line(hip, ankle, p.skin_rgb, leg_w)
        if p.lower == "trousers":
            line(hip, ankle, p.lower_rgb, leg_w)
        elif p.lower == "shorts":
            line(hip, ((hip[0] + knee[0]) / 2, (hip[1] + knee[1] * 1.4) / 2.4), p.lower_rgb, leg_w + 1)
        cv2.ellipse(
            img,
            _pt(ankle[0] + side * 0.01 * h, foot_y - 0.02 * h),
            (max(1, round(0.04 * h)), max(1, round(0.02 * h))),
            0,
            0,
            360,
            paint(p.shoe_rgb),
            -1,
            aa,
        )
    if p.lower == "skirt":
        fill(
            [
                (cx - ww, waist_y),
                (cx + ww, waist_y),
                (cx + hw * 1.7, top + 0.7 * h),
                (cx - hw * 1.7, top + 0.7 * h),
            ],
            p.lower_rgb,
        )
    elif p.lower in ("trousers", "shorts"):
        fill([(cx - ww, waist_y), (cx + ww, waist_y), (cx + hw, hip_y), (cx - hw, hip_y)], p.lower_rgb)
    # torso, then its pattern
    fill([(cx - sw, shoulder_y), (cx + sw, shoulder_y), (cx + ww, waist_y), (cx - ww, waist_y)], p.upper_rgb)
    if p.stripes:
        step = max(3.0, 0.04 * h)
        y = shoulder_y + step / 2
        while y < waist_y - 1:
            half = torso_half_width(y) - 1
            line((cx - half, y), (cx + half, y), p.stripe_rgb, max(1, round(0.013 * h)))
            y += step
    elif p.texture == "speckle":
        srng = np.random.default_rng(int(p.upper_rgb[0] * 65536 + p.upper_rgb[1] * 256 + p.upper_rgb[2]))
        for _ in range(12):
            y = srng.uniform(shoulder_y + 1, waist_y - 1)
            x = cx + srng.uniform(-1, 1) * (torso_half_width(y) - 1)
            shade = tuple(int(np.clip(c * srng.uniform(0.75, 1.25), 0, 255)) for c in p.upper_rgb)
            cv2.circle(img, _pt(x, y), 1, paint(shade), -1, aa)
    elif p.texture == "logo":
        cv2.rectangle(
            img,
            _pt(cx - 0.03 * h, shoulder_y + 0.06 * h),
            _pt(cx + 0.03 * h, shoulder_y + 0.1 * h),
            paint(p.hat_rgb),
            -1,
            aa,
        )
    if p.backpack:
        for side in (-1, 1):
            line(
                (cx + side * sw * 0.55, shoulder_y),
                (cx + side * sw * 0.7, waist_y - 0.04 * h),
                p.bag_rgb,
                max(1, round(0.02 * h)),
            )
    # arms: sleeve over the first third (short) or all (long), then the hand
    for side in (-1, 1):
        shoulder = (cx + side * (sw - limb / 2), shoulder_y + limb / 2)
        ang = side * 0.16 + side * p.arm_swing * swing
        hand = (shoulder[0] + math.sin(ang) * 0.34 * h, shoulder[1] + math.cos(ang) * 0.34 * h)
        line(shoulder, hand, p.skin_rgb, limb)
        sleeve = 0.95 if p.long_sleeve else 0.35
        line(shoulder, (shoulder[0] + (hand[0] - shoulder[0]) * sleeve, shoulder[1] + (hand[1] - shoulder[1]) * sleeve),
             p.upper_rgb, limb + 1)  # fmt: skip
        cv2.circle(img, _pt(*hand), max(1, round(limb * 0.6)), paint(p.skin_rgb), -1, aa)
        if p.handbag and side == p.bag_side:
            bw, bh = 0.11 * h, 0.09 * h
            line(hand, (hand[0], hand[1] + 0.03 * h), p.bag_rgb, 1)
            cv2.rectangle(
                img, _pt(hand[0] - bw / 2, hand[1] + 0.03 * h), _pt(hand[0] + bw / 2, hand[1] + 0.03 * h + bh),
                paint(p.bag_rgb), -1, aa,
            )  # fmt: skip
    # long hair falls behind the head onto the shoulders
    if p.long_hair:
        fill(
            [
                (cx - r * 1.05, head_cy),
                (cx + r * 1.05, head_cy),
                (cx + r * 1.25, shoulder_y + 0.07 * h),
                (cx - r * 1.25, shoulder_y + 0.07 * h),
            ],
            p.hair_rgb,
        )
    line((cx, head_cy + r), (cx, shoulder_y + 1), p.skin_rgb, max(2, round(0.45 * r * 2)))
    cv2.ellipse(
        img,
        _pt(cx, head_cy),
        (max(1, round(r * 0.9)), max(1, round(r))),
        0,
        0,
        360,
        paint(p.skin_rgb),
        -1,
        aa,
    )
    cv2.ellipse(img, _pt(cx, head_cy - 0.15 * r), (max(1, round(r * 0.95)), max(1, round(r * 0.9))), 0, 180, 360,
                paint(p.hair_rgb), -1, aa)  # fmt: skip
    if p.glasses:
        ey = head_cy - 0.05 * r
        for side in (-1, 1):
            ex = cx + side * 0.4 * r
            cv2.rectangle(
                img,
                _pt(ex - 0.28 * r, ey - 0.18 * r),
                _pt(ex + 0.28 * r, ey + 0.18 * r),
                paint((15, 15, 20)),
                -1,
            )
        line((cx - 0.2 * r, ey), (cx + 0.2 * r, ey), (15, 15, 20), 1)
    if p.hat:
        crown_top = top - 0.05 * h
        fill(
            [(cx - r * 0.85, head_cy - 0.35 * r), (cx + r * 0.85, head_cy - 0.35 * r), (cx + r * 0.7, crown_top),
             (cx - r * 0.7, crown_top)],
            p.hat_rgb,
        )  # fmt: skip
        line(
            (cx - r * 1.45, head_cy - 0.35 * r),
            (cx + r * 1.45, head_cy - 0.35 * r),
            p.hat_rgb,
            max(1, round(0.2 * r)),
        )


def _muted(rng: np.random.Generator) -> RGB:
    return _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.8))


def _background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Wall/ground gradient with blocks and lines: clutter with person-like colours but no person."""
    h, w = hw
    c1, c2 = np.array(_muted(rng), np.float32), np.array(_muted(rng), np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = np.ascontiguousarray(np.broadcast_to(c1 * (1 - t) + c2 * t, (h, w, 3)).astype(np.uint8))
    ground = int(h * rng.uniform(0.6, 0.85))
    img[ground:] = np.clip(img[ground:].astype(np.int16) + rng.integers(-30, 30), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        x1, y1 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x2, y2 = x1 + int(rng.integers(4, w)), y1 + int(rng.integers(4, h // 2))
        cv2.rectangle(img, (x1, y1), (x2, y2), _muted(rng), -1)
    for _ in range(int(rng.integers(0, 5))):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, _muted(rng), int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def _occlude(img: np.ndarray, rng: np.random.Generator) -> None:
    """Sometimes cover part of the crop: a pole, a low box (bench, car), or a passer-by at the edge."""
    h, w = img.shape[:2]
    kind = rng.choice(["none", "pole", "box", "passerby"], p=[0.62, 0.14, 0.12, 0.12])
    if kind == "pole":
        x, pw = int(rng.integers(0, w)), int(rng.integers(3, 9))
        cv2.rectangle(img, (x, 0), (x + pw, h), _colour(rng, str(rng.choice(["dark", "other"]))), -1)
    elif kind == "box":
        bh, bw = int(h * rng.uniform(0.1, 0.22)), int(w * rng.uniform(0.4, 1.0))
        x = int(rng.integers(-bw // 3, w - bw // 2))
        cv2.rectangle(img, (x, h - bh), (x + bw, h), _colour(rng, str(rng.choice(["dark", "other"]))), -1)
    elif kind == "passerby":
        side = int(rng.choice([0, w]))
        cv2.ellipse(
            img, (side, int(h * rng.uniform(0.3, 0.7))), (int(w * rng.uniform(0.12, 0.25)), int(h * 0.3)),
            0, 0, 360, _colour(rng, str(rng.choice(["dark", "red", "other"]))), -1, cv2.LINE_AA,
        )  # fmt: skip


def _camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, white balance, blur and sensor noise."""
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.93, 1.07, size=3)
    out = img.astype(np.float32) * gain.astype(np.float32) + np.float32(rng.uniform(-15, 15))
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    out += rng.normal(0.0, rng.uniform(1.0, 6.0), size=out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def render(person: Person, scene: Scene, hw: tuple[int, int] = NATIVE_HW) -> np.ndarray:
    """The RGB crop (H, W, 3) uint8 of `person` in `scene`; pure function of its arguments."""
    rng = np.random.default_rng(scene.seed)
    img = _background(rng, hw)
    draw_person(img, person, scene.cx, scene.foot_y, scene.height, scene.phase)
    _occlude(img, rng)
    return _camera(img, rng)


def split_size(split: str, size: int | None) -> int:
    """Images in a split: the defaults, or `size` for train and a quarter of it for val and test."""
    if size is None:
        return DEFAULT_SIZES[split]
    return size if split == "train" else max(1, size // 4)


class SynthPAR(PARDataset):
    """A split of SynthPAR: sample i of split s is drawn from a generator seeded by (seed, s, i)."""

    def __init__(
        self,
        split: str = "train",
        size: int | None = None,
        seed: int = 0,
        transform: Callable[[Image.Image], Any] | None = None,
        spec: str = "synth",
    ) -> None:
        parts = ("train", "val") if split == "trainval" else (split,)
        self.items: list[tuple[Person, Scene]] = []
        paths: list[str] = []
        for part in parts:
            for i in range(split_size(part, size)):
                self.items.append(self.sample(part, i, seed))
                paths.append(f"synth://{seed}/{part}/{i}")
        labels = (
            np.stack([p.labels() for p, _ in self.items]) if self.items else np.zeros((0, len(ATTRIBUTES)))
        )
        super().__init__(ATTRIBUTES, labels, paths, transform=transform, spec=spec, split=split)

    @staticmethod
    def sample(split: str, index: int, seed: int = 0) -> tuple[Person, Scene]:
        rng = np.random.default_rng([seed, _STREAMS[split], index])
        return sample_person(rng), sample_scene(rng)

    def load_image(self, index: int) -> Image.Image:
        person, scene = self.items[index]
        return Image.fromarray(render(person, scene))


def write_samples(out_dir: str, count: int = 8, seed: int = 0) -> str:
    """Write `count` train samples as PNGs plus `labels.csv` (partool's CSV format); returns the CSV path."""
    os.makedirs(out_dir, exist_ok=True)
    rows = ["image," + ",".join(ATTRIBUTES)]
    for i in range(count):
        person, scene = SynthPAR.sample("train", i, seed)
        name = f"synth_{i:03d}.png"
        ok, data = cv2.imencode(".png", cv2.cvtColor(render(person, scene), cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("OpenCV could not encode a PNG")
        _atomic_write(os.path.join(out_dir, name), data.tobytes())
        rows.append(name + "," + ",".join(str(v) for v in person.labels()))
    csv_path = os.path.join(out_dir, "labels.csv")
    _atomic_write(csv_path, ("\n".join(rows) + "\n").encode())
    return csv_path


def _atomic_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- street clip


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
    sky = np.array(_hsv(rng.uniform(190, 230), rng.uniform(0.1, 0.4), rng.uniform(0.7, 0.95)), np.float32)
    img[:horizon] = sky.astype(np.uint8)
    x = 0
    while x < w:
        bw = int(rng.integers(w // 10, w // 4))
        top = int(rng.integers(int(h * 0.02), horizon))
        cv2.rectangle(img, (x, top), (x + bw, horizon + int(h * 0.2)), _muted(rng), -1)
        for wy in range(top + 6, horizon + int(h * 0.15), 14):
            for wx in range(x + 5, x + bw - 8, 12):
                cv2.rectangle(img, (wx, wy), (wx + 5, wy + 7), _muted(rng), -1)
        x += bw
    cv2.rectangle(img, (0, horizon + int(h * 0.2)), (w, h), _hsv(0, 0, rng.uniform(0.45, 0.65)), -1)
    for y in range(horizon + int(h * 0.2), h, max(8, h // 20)):
        cv2.line(img, (0, y), (w, y), _hsv(0, 0, rng.uniform(0.4, 0.6)), 1)
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
    rng = np.random.default_rng([seed, _STREAMS["clip"]])
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
            noise = np.random.default_rng([seed, _STREAMS["clip"], f]).normal(0, 2.0, frame.shape)
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
    _atomic_write(stem + ".json", json.dumps(truth, indent=1).encode())
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
