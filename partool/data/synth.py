"""SynthPAR: procedurally drawn pedestrians whose attribute labels are exact.

Why: the project needs data that trains on a laptop CPU in minutes, runs in CI without downloads,
and whose labels are right by construction, so a model that fails on it has a real bug. Each
sample is a `Person` (what they wear and carry; the labels follow from it) and a `Scene` (where
they stand, background clutter, an optional occluder, colour jitter, noise). Both come from a
random generator seeded by (seed, split, index), so a sample is the same on every machine and
the splits never share a generator. Images are drawn on the fly with OpenCV; nothing touches disk.
`partool.data.street_clip` walks the same people down a street for the video pipeline; a `Framing`
crops the samples the way a person detector frames people, for models that will run on its boxes.

Attribute names follow PA-100K's style (Female, Hat, Glasses, Backpack, HandBag, LongSleeve,
UpperStride, Trousers, Shorts, Skirt&Dress) plus colour attributes, 14 in all.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np
from PIL import Image

from partool.artifacts import atomic_write_bytes
from partool.data import parse_spec
from partool.data.base import PARDataset
from partool.errors import UserError

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
STREAMS = {"train": 0, "val": 1, "test": 2, "clip": 3}  # random streams: no two uses share a generator

RGB = tuple[int, int, int]


def hsv(h: float, s: float, v: float) -> RGB:
    """8-bit RGB of a hue in degrees (any, wrapped) and saturation and value in 0..1."""
    r, g, b = colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def _colour(rng: np.random.Generator, kind: str) -> RGB:
    """A colour of a category with wide gaps between categories, so the colour labels are unambiguous."""
    if kind == "dark":
        return hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.6), rng.uniform(0.06, 0.26))
    if kind == "red":
        return hsv(rng.uniform(-10, 8), rng.uniform(0.65, 1.0), rng.uniform(0.55, 0.95))
    if rng.random() < 0.3:  # light neutral: white, beige, light grey
        return hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.12), rng.uniform(0.62, 0.97))
    return hsv(rng.uniform(35, 325), rng.uniform(0.3, 0.9), rng.uniform(0.5, 0.95))


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
        hsv(0, 0, rng.uniform(0.85, 1.0)) if upper_kind == "dark" else hsv(0, 0, rng.uniform(0.0, 0.15))
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
        skin_rgb=hsv(rng.uniform(18, 34), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95)),
        hair_rgb=hsv(rng.uniform(15, 45), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.6)),
        hat_rgb=_colour(rng, str(rng.choice(["dark", "red", "other"]))),
        bag_rgb=_colour(rng, str(rng.choice(["dark", "other"]))),
        shoe_rgb=hsv(rng.uniform(0, 360), rng.uniform(0, 0.4), rng.uniform(0.05, 0.7)),
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


@dataclass(frozen=True)
class Framing:
    """Crops framed like a detector's boxes instead of SynthPAR's loose, centred ones.

    Why: in video the model sees the detector's box, which sits tight on the person, off-centre and
    stretched to the input size. A framed sample draws the person, finds their tight box (the
    silhouette's, as the street clip's truth does), and crops a box whose centre offset (a fraction of
    the tight box's width / height, normal) and size (log of found / tight per axis, normal) follow
    these parameters, and resizes it to the output size; the person is drawn `zoom` times the output
    height tall (a uniform draw), as detections are mostly larger than the model's input. `share` of
    the samples are framed; the rest are drawn exactly as without a framing. The defaults are the
    motion detector's framing on the demo clip (301 matched detections, measured with
    `partool.video.box_stats.clip_box_stats`); `BoxStats.framing()` turns another detector's
    measurement into a framing.
    """

    dx_mean: float = -0.002
    dx_std: float = 0.063
    dy_mean: float = 0.003
    dy_std: float = 0.024
    log_sw_mean: float = 0.042
    log_sw_std: float = 0.111
    log_sh_mean: float = 0.004
    log_sh_std: float = 0.057
    zoom: tuple[float, float] = (1.0, 1.6)
    share: float = 1.0

    def box(self, tight: tuple[float, float, float, float], rng: np.random.Generator) -> tuple[float, ...]:
        """A detector-style box (x1, y1, x2, y2) around the `tight` person box."""
        x1, y1, x2, y2 = tight
        w, h = x2 - x1, y2 - y1
        cx = (x1 + x2) / 2 + rng.normal(self.dx_mean, self.dx_std) * w
        cy = (y1 + y2) / 2 + rng.normal(self.dy_mean, self.dy_std) * h
        half_w = w * math.exp(rng.normal(self.log_sw_mean, self.log_sw_std)) / 2
        half_h = h * math.exp(rng.normal(self.log_sh_mean, self.log_sh_std)) / 2
        return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


FRAMING_STREAM = 1  # a framed sample's own random stream, next to its scene's


def person_box(person: Person, height: float, phase: float) -> tuple[int, int, int, int]:
    """The tight box (x1, y1, x2, y2) of `person`'s silhouette drawn `height` tall with feet at (0, 0)."""
    pad = 4
    lh, lw = math.ceil(height * 1.15) + 2 * pad, math.ceil(height * 1.2) + 2 * pad
    x0, y0 = -lw / 2, -math.ceil(height * 1.1) - pad
    mask = np.zeros((lh, lw), np.uint8)
    draw_person(mask, person, -x0, -y0, height, phase, mask_value=255)
    ys, xs = np.nonzero(mask)
    return (
        math.floor(xs.min() + x0),
        math.floor(ys.min() + y0),
        math.floor(xs.max() + x0) + 1,
        math.floor(ys.max() + y0) + 1,
    )


def _pt(x: float, y: float) -> tuple[int, int]:
    return (round(x), round(y))


@dataclass(frozen=True)
class _Pen:
    """Draws on `img` in a part's colours, or with `mask_value` as a hard-edged one-value silhouette."""

    img: np.ndarray
    mask_value: int | None

    @property
    def aa(self) -> int:
        return cv2.LINE_AA if self.mask_value is None else cv2.LINE_8

    def paint(self, colour: RGB) -> tuple[int, ...]:
        return colour if self.mask_value is None else (self.mask_value,)

    def fill(self, points: list[tuple[float, float]], colour: RGB) -> None:
        pts = np.array([_pt(x, y) for x, y in points], dtype=np.int32)
        cv2.fillPoly(self.img, [pts], self.paint(colour), self.aa)

    def line(self, a: tuple[float, float], c: tuple[float, float], colour: RGB, width: int) -> None:
        cv2.line(self.img, _pt(*a), _pt(*c), self.paint(colour), max(1, width), self.aa)


@dataclass(frozen=True)
class _Body:
    """Where the parts of a person `h` pixels tall with feet at (cx, foot_y) go, so each part is drawn alone."""

    cx: float
    foot_y: float
    h: float
    top: float
    r: float  # head radius
    head_cy: float
    shoulder_y: float
    waist_y: float
    hip_y: float
    knee_y: float
    ankle_y: float
    sw: float  # half-widths at shoulder, waist and hip
    ww: float
    hw: float
    limb: int  # arm and leg thickness
    leg_w: int
    swing: float  # walk cycle, -1..1

    @classmethod
    def of(cls, p: Person, cx: float, foot_y: float, h: float, phase: float) -> _Body:
        top = foot_y - h
        r = 0.062 * h
        b = p.build
        return cls(
            cx=cx,
            foot_y=foot_y,
            h=h,
            top=top,
            r=r,
            head_cy=top + 1.05 * r,
            shoulder_y=top + 0.165 * h,
            waist_y=top + 0.42 * h,
            hip_y=top + 0.5 * h,
            knee_y=top + 0.73 * h,
            ankle_y=top + 0.955 * h,
            sw=h * (0.095 if p.female else 0.115) * b,
            ww=h * (0.068 if p.female else 0.085) * b,
            hw=h * (0.105 if p.female else 0.088) * b,
            limb=max(2, round(0.055 * h * b)),
            leg_w=max(2, round(0.07 * h * b)),
            swing=math.sin(phase),
        )

    def torso_half_width(self, y: float) -> float:
        if y <= self.waist_y:
            return self.sw + (self.ww - self.sw) * (y - self.shoulder_y) / (self.waist_y - self.shoulder_y)
        return self.ww + (self.hw - self.ww) * (y - self.waist_y) / (self.hip_y - self.waist_y)


def draw_person(
    img: np.ndarray,
    p: Person,
    cx: float,
    foot_y: float,
    h: float,
    phase: float,
    mask_value: int | None = None,
) -> None:
    """Draw `p` with feet at (cx, foot_y), `h` pixels tall; with `mask_value`, a hard-edged silhouette instead.

    Parts go on back to front, each leg with its shoe and each arm with its bag in turn: a later part
    covers an earlier one, so this order is the picture's."""
    pen, body = _Pen(img, mask_value), _Body.of(p, cx, foot_y, h, phase)
    if p.backpack:
        _backpack(pen, p, body)
    for side in (-1, 1):
        ankle = _leg(pen, p, body, side)
        _shoe(pen, p, body, side, ankle)
    _lower_clothes(pen, p, body)
    _upper_clothes(pen, p, body)
    if p.backpack:
        _backpack_straps(pen, p, body)
    for side in (-1, 1):
        hand = _arm(pen, p, body, side)
        if p.handbag and side == p.bag_side:
            _handbag(pen, p, body, hand)
    if p.long_hair:
        _long_hair(pen, p, body)
    _head(pen, p, body)
    if p.glasses:
        _glasses(pen, body)
    if p.hat:
        _hat(pen, p, body)


def _backpack(pen: _Pen, p: Person, body: _Body) -> None:
    """The bag behind the torso, sticking out on one side."""
    cx, h, sw, shoulder_y, waist_y = body.cx, body.h, body.sw, body.shoulder_y, body.waist_y
    off = p.bag_side * sw * 0.55
    pen.fill(
        [
            (cx + off - sw * 0.75, shoulder_y + 0.02 * h),
            (cx + off + sw * 0.75, shoulder_y + 0.02 * h),
            (cx + off + sw * 0.8, waist_y + 0.03 * h),
            (cx + off - sw * 0.8, waist_y + 0.03 * h),
        ],
        p.bag_rgb,
    )


def _leg(pen: _Pen, p: Person, body: _Body, side: int) -> tuple[float, float]:
    """One leg, bare or covered to the ankle (trousers) or above the knee (shorts); returns the ankle."""
    h = body.h
    hip = (body.cx + side * 0.045 * h * p.build, body.hip_y - 0.02 * h)
    ang = side * 0.03 + p.stride * body.swing * side
    ankle = (hip[0] + math.sin(ang) * (body.ankle_y - hip[1]), body.ankle_y)
    knee = (hip[0] + (ankle[0] - hip[0]) * (body.knee_y - hip[1]) / (body.ankle_y - hip[1]), body.knee_y)
    pen.line(hip, ankle, p.skin_rgb, body.leg_w)
    if p.lower == "trousers":
        pen.line(hip, ankle, p.lower_rgb, body.leg_w)
    elif p.lower == "shorts":
        pen.line(hip, ((hip[0] + knee[0]) / 2, (hip[1] + knee[1] * 1.4) / 2.4), p.lower_rgb, body.leg_w + 1)
    return ankle


def _shoe(pen: _Pen, p: Person, body: _Body, side: int, ankle: tuple[float, float]) -> None:
    h = body.h
    cv2.ellipse(
        pen.img,
        _pt(ankle[0] + side * 0.01 * h, body.foot_y - 0.02 * h),
        (max(1, round(0.04 * h)), max(1, round(0.02 * h))),
        0,
        0,
        360,
        pen.paint(p.shoe_rgb),
        -1,
        pen.aa,
    )


def _lower_clothes(pen: _Pen, p: Person, body: _Body) -> None:
    """A skirt flaring to above the knee, or the seat of trousers and shorts from waist to hip."""
    cx, ww, hw, waist_y = body.cx, body.ww, body.hw, body.waist_y
    if p.lower == "skirt":
        hem_y = body.top + 0.7 * body.h
        pen.fill(
            [(cx - ww, waist_y), (cx + ww, waist_y), (cx + hw * 1.7, hem_y), (cx - hw * 1.7, hem_y)],
            p.lower_rgb,
        )
    elif p.lower in ("trousers", "shorts"):
        pen.fill(
            [(cx - ww, waist_y), (cx + ww, waist_y), (cx + hw, body.hip_y), (cx - hw, body.hip_y)],
            p.lower_rgb,
        )


def _upper_clothes(pen: _Pen, p: Person, body: _Body) -> None:
    """The torso, then its pattern: stripes (a label), or speckles or a logo (distractors)."""
    cx, h, shoulder_y, waist_y = body.cx, body.h, body.shoulder_y, body.waist_y
    pen.fill(
        [
            (cx - body.sw, shoulder_y),
            (cx + body.sw, shoulder_y),
            (cx + body.ww, waist_y),
            (cx - body.ww, waist_y),
        ],
        p.upper_rgb,
    )
    if p.stripes:
        step = max(3.0, 0.04 * h)
        y = shoulder_y + step / 2
        while y < waist_y - 1:
            half = body.torso_half_width(y) - 1
            pen.line((cx - half, y), (cx + half, y), p.stripe_rgb, max(1, round(0.013 * h)))
            y += step
    elif p.texture == "speckle":
        srng = np.random.default_rng(int(p.upper_rgb[0] * 65536 + p.upper_rgb[1] * 256 + p.upper_rgb[2]))
        for _ in range(12):
            y = srng.uniform(shoulder_y + 1, waist_y - 1)
            x = cx + srng.uniform(-1, 1) * (body.torso_half_width(y) - 1)
            shade = tuple(int(np.clip(c * srng.uniform(0.75, 1.25), 0, 255)) for c in p.upper_rgb)
            cv2.circle(pen.img, _pt(x, y), 1, pen.paint(shade), -1, pen.aa)
    elif p.texture == "logo":
        cv2.rectangle(
            pen.img,
            _pt(cx - 0.03 * h, shoulder_y + 0.06 * h),
            _pt(cx + 0.03 * h, shoulder_y + 0.1 * h),
            pen.paint(p.hat_rgb),
            -1,
            pen.aa,
        )


def _backpack_straps(pen: _Pen, p: Person, body: _Body) -> None:
    cx, h, sw = body.cx, body.h, body.sw
    for side in (-1, 1):
        pen.line(
            (cx + side * sw * 0.55, body.shoulder_y),
            (cx + side * sw * 0.7, body.waist_y - 0.04 * h),
            p.bag_rgb,
            max(1, round(0.02 * h)),
        )


def _arm(pen: _Pen, p: Person, body: _Body, side: int) -> tuple[float, float]:
    """One arm: sleeve over the first third (short) or all (long), then the hand; returns the hand."""
    h, limb = body.h, body.limb
    shoulder = (body.cx + side * (body.sw - limb / 2), body.shoulder_y + limb / 2)
    ang = side * 0.16 + side * p.arm_swing * body.swing
    hand = (shoulder[0] + math.sin(ang) * 0.34 * h, shoulder[1] + math.cos(ang) * 0.34 * h)
    pen.line(shoulder, hand, p.skin_rgb, limb)
    sleeve = 0.95 if p.long_sleeve else 0.35
    pen.line(shoulder, (shoulder[0] + (hand[0] - shoulder[0]) * sleeve, shoulder[1] + (hand[1] - shoulder[1]) * sleeve),
             p.upper_rgb, limb + 1)  # fmt: skip
    cv2.circle(pen.img, _pt(*hand), max(1, round(limb * 0.6)), pen.paint(p.skin_rgb), -1, pen.aa)
    return hand


def _handbag(pen: _Pen, p: Person, body: _Body, hand: tuple[float, float]) -> None:
    """A bag hanging from `hand` (drawn with that arm, so the other arm may cover it)."""
    h = body.h
    bw, bh = 0.11 * h, 0.09 * h
    pen.line(hand, (hand[0], hand[1] + 0.03 * h), p.bag_rgb, 1)
    cv2.rectangle(
        pen.img, _pt(hand[0] - bw / 2, hand[1] + 0.03 * h), _pt(hand[0] + bw / 2, hand[1] + 0.03 * h + bh),
        pen.paint(p.bag_rgb), -1, pen.aa,
    )  # fmt: skip


def _long_hair(pen: _Pen, p: Person, body: _Body) -> None:
    """Hair falling behind the head onto the shoulders."""
    cx, r, head_cy, below_shoulder = body.cx, body.r, body.head_cy, body.shoulder_y + 0.07 * body.h
    pen.fill(
        [
            (cx - r * 1.05, head_cy),
            (cx + r * 1.05, head_cy),
            (cx + r * 1.25, below_shoulder),
            (cx - r * 1.25, below_shoulder),
        ],
        p.hair_rgb,
    )


def _head(pen: _Pen, p: Person, body: _Body) -> None:
    """Neck, face, and the hair on top of the head."""
    cx, r, head_cy = body.cx, body.r, body.head_cy
    pen.line((cx, head_cy + r), (cx, body.shoulder_y + 1), p.skin_rgb, max(2, round(0.45 * r * 2)))
    cv2.ellipse(
        pen.img,
        _pt(cx, head_cy),
        (max(1, round(r * 0.9)), max(1, round(r))),
        0,
        0,
        360,
        pen.paint(p.skin_rgb),
        -1,
        pen.aa,
    )
    cv2.ellipse(pen.img, _pt(cx, head_cy - 0.15 * r), (max(1, round(r * 0.95)), max(1, round(r * 0.9))), 0, 180, 360,
                pen.paint(p.hair_rgb), -1, pen.aa)  # fmt: skip


def _glasses(pen: _Pen, body: _Body) -> None:
    cx, r = body.cx, body.r
    ey = body.head_cy - 0.05 * r
    for side in (-1, 1):
        ex = cx + side * 0.4 * r
        cv2.rectangle(
            pen.img,
            _pt(ex - 0.28 * r, ey - 0.18 * r),
            _pt(ex + 0.28 * r, ey + 0.18 * r),
            pen.paint((15, 15, 20)),
            -1,
        )
    pen.line((cx - 0.2 * r, ey), (cx + 0.2 * r, ey), (15, 15, 20), 1)


def _hat(pen: _Pen, p: Person, body: _Body) -> None:
    """Crown above the head and a brim across it."""
    cx, r, head_cy = body.cx, body.r, body.head_cy
    crown_top = body.top - 0.05 * body.h
    pen.fill(
        [(cx - r * 0.85, head_cy - 0.35 * r), (cx + r * 0.85, head_cy - 0.35 * r), (cx + r * 0.7, crown_top),
         (cx - r * 0.7, crown_top)],
        p.hat_rgb,
    )  # fmt: skip
    pen.line(
        (cx - r * 1.45, head_cy - 0.35 * r),
        (cx + r * 1.45, head_cy - 0.35 * r),
        p.hat_rgb,
        max(1, round(0.2 * r)),
    )


def muted(rng: np.random.Generator) -> RGB:
    """A greyish colour for scenery, so backgrounds hold no colour a label depends on."""
    return hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.8))


def _background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Wall/ground gradient with blocks and lines: clutter with person-like colours but no person."""
    h, w = hw
    c1, c2 = np.array(muted(rng), np.float32), np.array(muted(rng), np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = np.ascontiguousarray(np.broadcast_to(c1 * (1 - t) + c2 * t, (h, w, 3)).astype(np.uint8))
    ground = int(h * rng.uniform(0.6, 0.85))
    img[ground:] = np.clip(img[ground:].astype(np.int16) + rng.integers(-30, 30), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        x1, y1 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x2, y2 = x1 + int(rng.integers(4, w)), y1 + int(rng.integers(4, h // 2))
        cv2.rectangle(img, (x1, y1), (x2, y2), muted(rng), -1)
    for _ in range(int(rng.integers(0, 5))):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, muted(rng), int(rng.integers(1, 3)), cv2.LINE_AA)
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


def render(
    person: Person, scene: Scene, hw: tuple[int, int] = NATIVE_HW, framing: Framing | None = None
) -> np.ndarray:
    """The RGB crop (H, W, 3) uint8 of `person` in `scene`, framed by `framing` when given and its share
    draws this sample; pure function of its arguments."""
    if framing is not None:
        frng = np.random.default_rng([scene.seed, FRAMING_STREAM])
        if frng.random() < framing.share:
            return _render_framed(person, scene, hw, framing, frng)
    rng = np.random.default_rng(scene.seed)
    img = _background(rng, hw)
    draw_person(img, person, scene.cx, scene.foot_y, scene.height, scene.phase)
    _occlude(img, rng)
    return _camera(img, rng)


def _render_framed(
    person: Person, scene: Scene, hw: tuple[int, int], framing: Framing, rng: np.random.Generator
) -> np.ndarray:
    """The person cropped by a box drawn from `framing` around their tight box, resized to `hw`.

    The framing replaces the scene's placement (its position and size); the pose and the seed stay."""
    out_h, out_w = hw
    height = out_h * rng.uniform(*framing.zoom)
    x1, y1, x2, y2 = framing.box(person_box(person, height, scene.phase), rng)
    crop_hw = (max(1, round(y2 - y1)), max(1, round(x2 - x1)))
    img = _background(rng, crop_hw)
    draw_person(img, person, -x1, -y1, height, scene.phase)
    shrinking = crop_hw[0] > out_h or crop_hw[1] > out_w  # as the video pipeline resizes its crops
    img = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    _occlude(img, rng)
    return _camera(img, rng)


def split_size(split: str, size: int | None) -> int:
    """Images in a split: the defaults, or `size` for train and a quarter of it for val and test."""
    if size is None:
        return DEFAULT_SIZES[split]
    return size if split == "train" else max(1, size // 4)


class SynthPAR(PARDataset):
    """A split of SynthPAR: sample i of split s is drawn from a generator seeded by (seed, s, i).

    With a `framing`, images are cropped as a detector would (`Framing`); people and labels are the same."""

    def __init__(
        self,
        split: str = "train",
        size: int | None = None,
        seed: int = 0,
        transform: Callable[[Image.Image], Any] | None = None,
        spec: str = "synth",
        framing: Framing | None = None,
    ) -> None:
        self.framing = framing
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
        rng = np.random.default_rng([seed, STREAMS[split], index])
        return sample_person(rng), sample_scene(rng)

    def load_image(self, index: int) -> Image.Image:
        person, scene = self.items[index]
        return Image.fromarray(render(person, scene, framing=self.framing))


def open_framed(
    spec: str, split: str, transform: Callable[[Image.Image], Any] | None, overrides: dict[str, Any]
) -> SynthPAR:
    """The `split` of a `synth[:N]` spec, framed by `Framing(**overrides)`; UserError for other datasets or
    unknown fields (real datasets' crops already come from a detector or an annotator)."""
    kind, arg = parse_spec(spec)
    if kind != "synth":
        raise UserError(f"detector framing draws SynthPAR crops; --data {spec} is not synth or synth:N")
    known = {f.name for f in fields(Framing)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(
            f"unknown detector framing field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in overrides.items()}
    framing = Framing(**values)
    return SynthPAR(split, size=int(arg) if arg else None, transform=transform, spec=spec, framing=framing)


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
        atomic_write_bytes(os.path.join(out_dir, name), data.tobytes())
        rows.append(name + "," + ",".join(str(v) for v in person.labels()))
    csv_path = os.path.join(out_dir, "labels.csv")
    atomic_write_bytes(csv_path, ("\n".join(rows) + "\n").encode())
    return csv_path
