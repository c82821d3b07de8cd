"""How a detector frames people: its boxes measured against the true person boxes of a clip.

Why: the PAR model sees the detector's crop, not the tight box it was trained on. The centre offset (as a
fraction of the true box's width / height) and the scale (found size over true size, per axis) of
matched detections describe that framing; `partool.data.synth.Framing` draws training crops from the
same distribution (`BoxStats.framing()`), so the model learns the crops it will be given.
Scales are summarised in log space: a box twice too wide and one half as wide are equally far off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from partool.data.synth import Framing
from partool.video.tracking import iou_matrix


@dataclass(frozen=True)
class BoxStats:
    """Mean and spread of found boxes relative to true ones, over `count` matched pairs."""

    count: int
    dx_mean: float  # (found centre x − true centre x) / true width
    dx_std: float
    dy_mean: float  # (found centre y − true centre y) / true height
    dy_std: float
    log_sw_mean: float  # log(found width / true width)
    log_sw_std: float
    log_sh_mean: float  # log(found height / true height)
    log_sh_std: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def framing(self, **overrides: float) -> Framing:
        """The synthetic crop framing that draws boxes from this distribution (fields may be overridden)."""
        fields = {k: v for k, v in asdict(self).items() if k != "count"}
        return Framing(**{**fields, **overrides})


def relative_boxes(true: np.ndarray, found: np.ndarray) -> np.ndarray:
    """(N, 4) rows of (dx, dy, sw, sh) of `found` boxes against `true` boxes, both (N, 4) xyxy."""
    true, found = np.asarray(true, np.float64).reshape(-1, 4), np.asarray(found, np.float64).reshape(-1, 4)
    tw, th = true[:, 2] - true[:, 0], true[:, 3] - true[:, 1]
    fw, fh = found[:, 2] - found[:, 0], found[:, 3] - found[:, 1]
    dx = ((found[:, 0] + found[:, 2]) - (true[:, 0] + true[:, 2])) / 2 / tw
    dy = ((found[:, 1] + found[:, 3]) - (true[:, 1] + true[:, 3])) / 2 / th
    return np.stack([dx, dy, fw / tw, fh / th], axis=1)


def box_stats(true: np.ndarray, found: np.ndarray) -> BoxStats:
    """The framing statistics of matched pairs (row i of `found` is the detection of row i of `true`)."""
    rel = relative_boxes(true, found)
    if len(rel) == 0:
        return BoxStats(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    dx, dy, log_sw, log_sh = rel[:, 0], rel[:, 1], np.log(rel[:, 2]), np.log(rel[:, 3])
    return BoxStats(
        count=len(rel),
        dx_mean=float(dx.mean()),
        dx_std=float(dx.std()),
        dy_mean=float(dy.mean()),
        dy_std=float(dy.std()),
        log_sw_mean=float(log_sw.mean()),
        log_sw_std=float(log_sw.std()),
        log_sh_mean=float(log_sh.mean()),
        log_sh_std=float(log_sh.std()),
    )


def match_boxes(true: np.ndarray, found: np.ndarray, iou: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one (true index, found index) pairs by Hungarian assignment on IoU, each at least `iou`."""
    overlap = iou_matrix(
        np.asarray(true, np.float32).reshape(-1, 4), np.asarray(found, np.float32).reshape(-1, 4)
    )
    if overlap.size == 0:
        return []
    rows, cols = linear_sum_assignment(-overlap)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if overlap[r, c] >= iou]


def clip_box_stats(
    truth: dict[str, Any],
    detections: Sequence[tuple[int, np.ndarray]],
    iou: float = 0.5,
    min_visible: float = 0.5,
) -> BoxStats:
    """Framing statistics of a detector on a clip: `detections` are (frame index, boxes (N, 4)) pairs,
    `truth` is `street_clip.render_clip`'s; people count when at least `min_visible` of them shows."""
    objects = {f["index"]: f["objects"] for f in truth["frames"]}
    true_rows, found_rows = [], []
    for index, boxes in detections:
        people = [o["box"] for o in objects.get(index, []) if o["visible"] >= min_visible]
        gt = np.asarray(people, np.float32).reshape(-1, 4)
        found = np.asarray(boxes, np.float32).reshape(-1, 4)
        for r, c in match_boxes(gt, found, iou):
            true_rows.append(gt[r])
            found_rows.append(found[c])
    return box_stats(np.asarray(true_rows).reshape(-1, 4), np.asarray(found_rows).reshape(-1, 4))
