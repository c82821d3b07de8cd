"""Trackers: detections of one frame in, confirmed tracks with stable ids out.

`IoUTracker` (the default) needs nothing beyond NumPy/SciPy: boxes predicted with a smoothed velocity,
matched to detections by Hungarian assignment on IoU, confirmed after a few hits (so a flicker of the
detector does not start a track) and kept through `max_age` missed frames. It is the default because the
offline path must run without ultralytics (AGPL-3.0, an optional extra) and because on the motion
detector's boxes — one box per moving blob, no low-confidence tail — ByteTrack's two-stage matching has
nothing extra to work with.

`UltralyticsTracker` runs ultralytics' BYTETracker or BOT-SORT on any detector's boxes (they accept a
`Boxes` object built from our arrays); it needs the `video` extra (ultralytics + lap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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


@dataclass
class _State:
    box: np.ndarray  # last observed box
    score: float
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
    """Hungarian matching of velocity-predicted boxes to detections on IoU; ids given at confirmation.

    Tracks unmatched by IoU get a second chance by centre distance (under `refind` box heights, similar
    height): that re-finds a person whose box changed shape while merged with a passer-by.
    """

    name = "iou"

    def __init__(
        self, iou_threshold: float = 0.3, min_hits: int = 3, max_age: int = 15, refind: float = 0.5
    ) -> None:
        self.iou_threshold, self.min_hits, self.max_age, self.refind = (
            iou_threshold,
            min_hits,
            max_age,
            refind,
        )
        self.states: list[_State] = []
        self._next_id = 1

    def _match(self, predicted: np.ndarray, boxes: np.ndarray) -> list[tuple[int, int]]:
        pairs: list[tuple[int, int]] = []
        iou = iou_matrix(predicted, boxes)
        if iou.size:
            rows, cols = linear_sum_assignment(-iou)
            pairs = [(r, c) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= self.iou_threshold]
        tracks = [r for r in range(len(predicted)) if r not in {p[0] for p in pairs} and self.states[r].id]
        dets = [c for c in range(len(boxes)) if c not in {p[1] for p in pairs}]
        if tracks and dets:
            h_t = predicted[tracks, 3] - predicted[tracks, 1]
            h_d = boxes[dets, 3] - boxes[dets, 1]
            ct = (predicted[tracks, :2] + predicted[tracks, 2:]) / 2
            cd = (boxes[dets, :2] + boxes[dets, 2:]) / 2
            dist = np.linalg.norm(ct[:, None] - cd[None], axis=2) / np.maximum(h_t[:, None], 1.0)
            ratio = h_d[None, :] / np.maximum(h_t[:, None], 1.0)
            cost = np.where((ratio > 0.75) & (ratio < 1.33) & (dist < self.refind), dist, 1e6)
            rows, cols = linear_sum_assignment(cost)
            pairs += [(tracks[r], dets[c]) for r, c in zip(rows, cols, strict=True) if cost[r, c] < 1e6]
        return pairs

    def update(self, boxes: np.ndarray, scores: np.ndarray, frame: np.ndarray) -> list[Track]:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        predicted = np.array([s.predicted() for s in self.states], np.float32).reshape(-1, 4)
        pairs = self._match(predicted, boxes)
        for r, c in pairs:
            state = self.states[r]
            step = (_centre(boxes[c]) - _centre(state.box)) / (state.misses + 1)
            state.velocity = 0.5 * state.velocity + 0.5 * step
            state.box, state.score = boxes[c].copy(), float(scores[c])
            state.hits += 1
            state.misses = 0
            if state.id == 0 and state.hits >= self.min_hits:
                state.id, self._next_id = self._next_id, self._next_id + 1
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
                kept.append(_State(box=boxes[c].copy(), score=float(scores[c])))
                if self.min_hits <= 1:
                    kept[-1].id, self._next_id = self._next_id, self._next_id + 1
        self.states = kept
        return [Track(s.id, s.box.copy(), s.score) for s in kept if s.id and s.misses == 0]


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
