"""Trackers: detections of one frame in, confirmed tracks with stable ids out.

`IoUTracker` (the default) needs nothing beyond NumPy/SciPy/OpenCV: boxes predicted with a smoothed
velocity, matched to detections by Hungarian assignment on IoU and colour histograms (who is who when
people cross), confirmed after a few hits (so a flicker of the detector does not start a track) and kept
through `max_age` missed frames. It is the default because the
offline path must run without ultralytics (AGPL-3.0, an optional extra) and because on the motion
detector's boxes — one box per moving blob, no low-confidence tail — ByteTrack's two-stage matching has
nothing extra to work with.

`UltralyticsTracker` runs ultralytics' BYTETracker or BOT-SORT on any detector's boxes (they accept a
`Boxes` object built from our arrays); it needs the `video` extra (ultralytics + lap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from partool.errors import UserError


@dataclass(frozen=True)
class Track:
    """A confirmed track as seen in the current frame."""

    id: int
    box: np.ndarray  # (4,) float32 x1 y1 x2 y2
    score: float


class Tracker(Protocol):
    name: str

    def update(self, boxes: np.ndarray, scores: np.ndarray, frame: np.ndarray) -> list[Track]: ...


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (N, 4) and b (M, 4), xyxy."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)).astype(np.float32)


BODY_PARTS = ((0.15, 0.5), (0.5, 0.9))  # upper and lower body, as fractions of the box height
BINS = 4  # per colour channel


def appearance(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """What a person looks like: (parts, BINS³) colour histograms of the upper and lower body in `box`.

    The middle of the box's width only, where the body is and the background is not. Each histogram
    sums to 1 (0 everywhere when the part is empty, e.g. a box cut by the frame edge to a sliver).
    """
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    xa, xb = max(0, int(x1 + 0.25 * (x2 - x1))), min(width, int(x2 - 0.25 * (x2 - x1)) + 1)
    parts = np.zeros((len(BODY_PARTS), BINS**3), np.float32)
    for i, (top, bottom) in enumerate(BODY_PARTS):
        ya, yb = max(0, int(y1 + top * (y2 - y1))), min(height, int(y1 + bottom * (y2 - y1)) + 1)
        region = frame[ya:yb, xa:xb]
        if region.size == 0:
            continue
        hist = cv2.calcHist([np.ascontiguousarray(region)], [0, 1, 2], None, [BINS] * 3, [0, 256] * 3)
        parts[i] = hist.ravel() / max(float(hist.sum()), 1.0)
    return parts


def appearance_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise distances in [0, 1] of appearances a (N, parts, bins) and b (M, parts, bins): one minus
    the Bhattacharyya coefficient of the histograms, averaged over the body parts."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    coefficient = np.einsum("npk,mpk->nm", np.sqrt(a), np.sqrt(b)) / a.shape[1]
    return (1.0 - coefficient).astype(np.float32)


def _isolated(boxes: np.ndarray) -> np.ndarray:
    """Which boxes overlap no other box: their pixels show one person, so their appearance can be learnt."""
    overlap = iou_matrix(boxes, boxes)
    np.fill_diagonal(overlap, 0.0)
    return ~(overlap > 0).any(axis=1)


@dataclass
class _State:
    box: np.ndarray  # last observed box
    score: float
    looks: np.ndarray  # appearance, averaged over the frames it was seen alone
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # centre, pixels/frame
    hits: int = 1
    misses: int = 0
    id: int = 0  # 0 while tentative

    def predicted(self) -> np.ndarray:
        """The last box moved along the centre velocity for the frames since it was seen (size kept)."""
        dx, dy = self.velocity * (self.misses + 1)
        return self.box + np.array([dx, dy, dx, dy], np.float32)


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)


class IoUTracker:
    """Hungarian matching of velocity-predicted boxes to detections on IoU and looks; ids at confirmation.

    The cost of a pair is 1 − IoU plus `looks` times the distance of their colour histograms (upper and
    lower body): when people cross, their predicted boxes overlap both detections about equally, and
    what they wear tells them apart. A pair further apart than `alike` is never matched, so a track
    whose person is hidden is not handed to someone else who walks out where it was predicted (on the
    demo clip, boxes of one person are at most 0.12 apart, of two people at least 0.36). Tracks
    unmatched by IoU get a second chance by centre distance (under `refind` box heights, similar height)
    plus looks: that re-finds a person whose box changed shape while merged with a passer-by. A track's
    looks are learnt only from boxes that overlap no other. A track cut by the frame's edge is confirmed
    only after `edge_hits` hits (else `min_hits`): someone walking in is first reported, and first
    classified, once the whole person is in view.
    """

    name = "iou"

    def __init__(
        self,
        iou_threshold: float = 0.3,
        min_hits: int = 3,
        max_age: int = 15,
        refind: float = 0.5,
        looks: float = 1.0,
        learn: float = 0.2,
        edge_hits: int = 30,
        alike: float = 0.35,
    ) -> None:
        self.iou_threshold, self.min_hits, self.max_age, self.refind = (
            iou_threshold,
            min_hits,
            max_age,
            refind,
        )
        self.looks, self.learn, self.edge_hits, self.alike = looks, learn, edge_hits, alike
        self.states: list[_State] = []
        self._next_id = 1

    def _match(self, predicted: np.ndarray, boxes: np.ndarray, looks: np.ndarray) -> list[tuple[int, int]]:
        pairs: list[tuple[int, int]] = []
        iou = iou_matrix(predicted, boxes)
        distance = appearance_distance(np.array([s.looks for s in self.states]), looks)
        unlike, alike = self.looks * distance, distance <= self.alike
        if iou.size:
            cost = np.where((iou >= self.iou_threshold) & alike, 1.0 - iou + unlike, 1e6)
            rows, cols = linear_sum_assignment(cost)
            pairs = [(r, c) for r, c in zip(rows, cols, strict=True) if cost[r, c] < 1e6]
        tracks = [r for r in range(len(predicted)) if r not in {p[0] for p in pairs} and self.states[r].id]
        dets = [c for c in range(len(boxes)) if c not in {p[1] for p in pairs}]
        if tracks and dets:
            h_t = predicted[tracks, 3] - predicted[tracks, 1]
            h_d = boxes[dets, 3] - boxes[dets, 1]
            ct = (predicted[tracks, :2] + predicted[tracks, 2:]) / 2
            cd = (boxes[dets, :2] + boxes[dets, 2:]) / 2
            dist = np.linalg.norm(ct[:, None] - cd[None], axis=2) / np.maximum(h_t[:, None], 1.0)
            ratio = h_d[None, :] / np.maximum(h_t[:, None], 1.0)
            pick = np.ix_(tracks, dets)
            close = (ratio > 0.75) & (ratio < 1.33) & (dist < self.refind) & alike[pick]
            cost = np.where(close, dist + unlike[pick], 1e6)
            rows, cols = linear_sum_assignment(cost)
            pairs += [(tracks[r], dets[c]) for r, c in zip(rows, cols, strict=True) if cost[r, c] < 1e6]
        return pairs

    def update(self, boxes: np.ndarray, scores: np.ndarray, frame: np.ndarray) -> list[Track]:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        looks = np.array([appearance(frame, b) for b in boxes], np.float32).reshape(
            -1, len(BODY_PARTS), BINS**3
        )
        alone = _isolated(boxes)
        predicted = np.array([s.predicted() for s in self.states], np.float32).reshape(-1, 4)
        pairs = self._match(predicted, boxes, looks)
        for r, c in pairs:
            state = self.states[r]
            step = (_centre(boxes[c]) - _centre(state.box)) / (state.misses + 1)
            state.velocity = 0.5 * state.velocity + 0.5 * step
            state.box, state.score = boxes[c].copy(), float(scores[c])
            if alone[c]:
                state.looks = (1 - self.learn) * state.looks + self.learn * looks[c]
            state.hits += 1
            state.misses = 0
            self._confirm(state, frame.shape)
        matched_tracks, matched_dets = {p[0] for p in pairs}, {p[1] for p in pairs}
        kept = []
        for i, state in enumerate(self.states):
            if i not in matched_tracks:
                state.misses += 1
                if state.id == 0 or state.misses > self.max_age:
                    continue  # tentative tracks die on their first miss
            kept.append(state)
        for c in range(len(boxes)):
            if c not in matched_dets:
                kept.append(_State(box=boxes[c].copy(), score=float(scores[c]), looks=looks[c]))
                self._confirm(kept[-1], frame.shape)
        self.states = kept
        return [Track(s.id, s.box.copy(), s.score) for s in kept if s.id and s.misses == 0]

    def _confirm(self, state: _State, shape: tuple[int, ...]) -> None:
        """Give a tentative track its id once it has enough hits (more while the frame's edge cuts it)."""
        x1, y1, x2, y2 = state.box
        cut = x1 <= 1 or y1 <= 1 or x2 >= shape[1] - 1 or y2 >= shape[0] - 1
        if state.id == 0 and state.hits >= (max(self.min_hits, self.edge_hits) if cut else self.min_hits):
            state.id, self._next_id = self._next_id, self._next_id + 1


class UltralyticsTracker:
    """ultralytics' BYTETracker or BOTSORT (default settings of its tracker YAML) on our boxes."""

    def __init__(self, kind: str) -> None:
        try:
            import lap  # noqa: F401 - without it ultralytics tries to pip-install it at run time
            from ultralytics.engine.results import Boxes
            from ultralytics.trackers import BOTSORT, BYTETracker
            from ultralytics.utils import YAML, IterableSimpleNamespace
            from ultralytics.utils.checks import check_yaml
        except ImportError:
            raise UserError(
                f"--tracker {kind} needs ultralytics and lap: pip install 'partool[video]' "
                "(or use --tracker iou, which needs neither)"
            ) from None
        cfg = IterableSimpleNamespace(**YAML.load(check_yaml(f"{kind}.yaml")))
        self.tracker = (BYTETracker if kind == "bytetrack" else BOTSORT)(args=cfg)
        self._boxes = Boxes
        self.name = kind

    def update(self, boxes: np.ndarray, scores: np.ndarray, frame: np.ndarray) -> list[Track]:
        n = len(boxes)
        data = np.zeros((n, 6), np.float32)
        if n:
            data[:, :4], data[:, 4] = boxes, scores  # class 0 (person)
        out = self.tracker.update(self._boxes(data, frame.shape[:2]), frame)
        return [Track(int(row[4]), np.asarray(row[:4], np.float32), float(row[5])) for row in out]


def make_tracker(name: str) -> Tracker:
    """`iou` (built-in, default), `bytetrack` or `botsort` (ultralytics)."""
    if name == "iou":
        return IoUTracker()
    if name in ("bytetrack", "botsort"):
        return UltralyticsTracker(name)
    raise UserError(f"unknown --tracker {name!r}; use iou, bytetrack or botsort")
