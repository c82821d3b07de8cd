"""Person detectors behind one interface: `detect(frame, index) -> (boxes (N, 4) xyxy float32, scores (N,))`.

- `MotionDetector`: OpenCV MOG2 background subtraction, morphology and connected blobs, split into one
  box per head where people merge, kept when person-shaped (taller than wide, big enough); the background
  is not learnt under people who walked, so one who stops stays detected. Needs no weights, so it is the
  offline default; it assumes a static camera and sees what moves or has moved.
- `YoloDetector`: ultralytics YOLO (`yolo11n.pt`, an exported `.onnx` / `.engine`), person class only.
  ultralytics is AGPL-3.0 and fetches weights at run time, so it is imported only when asked for.
- `MotFileDetector`: detections read from a MOT Challenge `det.txt`, for evaluating tracking and PAR
  on fixed detections.
`index` is the frame's index in its source (MOT files are keyed by it; the others ignore it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from scipy.signal import find_peaks

from partool.errors import UserError
from partool.video.tracking import iou_matrix

Detections = tuple[np.ndarray, np.ndarray]  # boxes (N, 4) float32 x1 y1 x2 y2, scores (N,) float32


def empty_detections() -> Detections:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)


class Detector(Protocol):
    name: str

    def detect(self, frame: np.ndarray, index: int) -> Detections: ...


class MotionDetector:
    """Moving, person-shaped blobs: MOG2 foreground without shadows, opened, closed, split, filtered.

    Sizes are fractions of the frame height so the same settings work at any resolution. The score is how
    much of the box the foreground fills (a person fills about half of their box; noise fills less).

    Two failure modes of plain background subtraction are handled here:
    - people who walk together or cross merge into one blob: a blob whose upper outline has several
      prominent highest points (heads) is split into one person box per head, `person_aspect` wide;
    - a person who stops is learnt into the background within a few seconds: the background model is
      not updated under people who have walked (travelled `confirm` of their height), so they stay
      foreground while they stand, for up to `hold` frames (after that they are learnt, so a parked
      object does not stay a detection forever). Things that never travelled — a person already there
      on the first frame, a swaying branch — are learnt as before.
    On frame n the model learns at 1 / min(`bootstrap` · n, `history`): fast at first, so the empty scene
    is learnt within seconds, but half as fast as MOG2's own schedule (2n), so that someone walking in
    during those seconds is confirmed as a walker before their body is learnt.
    """

    name = "motion"

    def __init__(
        self,
        history: int = 300,
        var_threshold: float = 25.0,
        min_height: float = 0.12,
        min_aspect: float = 1.1,
        max_aspect: float = 5.0,
        min_fill: float = 0.2,
        person_aspect: float = 2.7,
        head_prominence: float = 0.05,
        confirm: float = 0.3,
        hold: int = 450,
        bootstrap: int = 4,
    ) -> None:
        self.subtractor = cv2.createBackgroundSubtractorMOG2(
            history=history, varThreshold=var_threshold, detectShadows=True
        )
        self.min_height, self.min_aspect, self.max_aspect, self.min_fill = (
            min_height, min_aspect, max_aspect, min_fill,
        )  # fmt: skip
        self.person_aspect, self.head_prominence = person_aspect, head_prominence
        self.walkers = WalkerMemory(confirm=confirm, hold=hold)
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self.history, self.bootstrap = history, bootstrap
        self._frames = 0
        self._background: np.ndarray | None = None  # the frame's pixels last seen as background
        self._frozen: list[np.ndarray] = []  # boxes of walkers, where the model does not learn

    def detect(self, frame: np.ndarray, index: int) -> Detections:
        self._frames += 1
        rate = 1.0 / min(self.bootstrap * self._frames, self.history)
        if self._background is None:  # nothing to compare the first frame with: learn it
            self._background = frame.copy()
            self.subtractor.apply(frame, learningRate=rate)
            return empty_detections()
        holding = bool(self._frozen)  # else one pass of the model both finds and learns the foreground
        mask = self._foreground(frame, 0.0 if holding else rate)
        boxes, scores = self._people(mask)
        self._frozen = self.walkers.update(boxes)
        self._remember_background(frame, mask, self._frozen)
        if holding:
            self._learn(frame, self._frozen, rate)
        if not boxes:
            return empty_detections()
        return np.asarray(boxes, np.float32), np.asarray(scores, np.float32)

    def _foreground(self, frame: np.ndarray, rate: float) -> np.ndarray:
        """The cleaned foreground mask of `frame` against the model, which learns the frame at `rate`."""
        height = frame.shape[0]
        mask = self.subtractor.apply(frame, learningRate=rate)
        mask = np.where(mask == 255, np.uint8(255), np.uint8(0))  # 127 marks shadows
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open)
        # join limbs, head and torso of one person: a tall kernel scaled to the frame
        k = max(3, round(height * 0.02)) | 1
        close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, 3 * k))
        return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close)

    def _remember_background(self, frame: np.ndarray, mask: np.ndarray, frozen: list[np.ndarray]) -> None:
        """Keep the image of the background: `frame`'s pixels that are neither foreground nor a walker's."""
        assert self._background is not None
        seen = cv2.bitwise_not(mask)
        for y1, y2, x1, x2 in (_grown(box, frame.shape) for box in frozen):
            seen[y1:y2, x1:x2] = 0
        cv2.copyTo(frame, seen, self._background)

    def _learn(self, frame: np.ndarray, frozen: list[np.ndarray], rate: float) -> None:
        """Update the model with `frame` at `rate`, where the `frozen` boxes show the background instead."""
        assert self._background is not None
        learn = frame.copy()
        for y1, y2, x1, x2 in (_grown(box, frame.shape) for box in frozen):
            learn[y1:y2, x1:x2] = self._background[y1:y2, x1:x2]
        self.subtractor.apply(learn, learningRate=rate)

    def _people(self, mask: np.ndarray) -> tuple[list[tuple[float, ...]], list[float]]:
        """Person boxes and scores from the blobs of `mask`: merged blobs split, odd shapes dropped."""
        height, width = mask.shape
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes: list[tuple[float, ...]] = []
        scores: list[float] = []
        for k in range(1, count):
            x, y, w, h = (int(v) for v in stats[k, :4])
            if h < self.min_height * height:
                continue
            blob = labels[y : y + h, x : x + w] == k
            for bx1, by1, bx2, by2 in split_blob(blob, self.person_aspect, self.head_prominence):
                piece = blob[by1:by2, bx1:bx2]
                ph, pw = by2 - by1, bx2 - bx1
                at_edge = x + bx1 == 0 or x + bx2 == width  # cut by the frame: any width
                aspect = ph / max(pw, 1)
                if ph < self.min_height * height or aspect < self.min_aspect:
                    continue
                if aspect > self.max_aspect and not at_edge:
                    continue
                fill = float(piece.sum()) / (pw * ph)
                if fill < self.min_fill:
                    continue
                boxes.append((x + bx1, y + by1, x + bx2, y + by2))
                scores.append(min(1.0, fill * 1.5))
        return boxes, scores


def _grown(box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Row and column bounds (y1, y2, x1, x2) of `box` grown by the reach of swinging limbs, in the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = 0.15 * (x2 - x1), 0.05 * (y2 - y1)
    return (
        max(0, int(y1 - my)),
        min(shape[0], int(y2 + my) + 1),
        max(0, int(x1 - mx)),
        min(shape[1], int(x2 + mx) + 1),
    )


def head_columns(blob: np.ndarray, prominence: float) -> np.ndarray:
    """Columns of the prominent highest points of a blob's upper outline: one per head, left to right.

    A person's outline falls away on both sides of the head (shoulders, arms), so people side by side
    show one peak each, `prominence` (a fraction of the blob's height) above the dip between them.
    """
    height = blob.shape[0]
    top = np.where(blob.any(axis=0), blob.argmax(axis=0), height).astype(np.float64)
    k = max(1, round(0.015 * height))
    smooth = np.convolve(np.pad(top, k, mode="edge"), np.ones(2 * k + 1) / (2 * k + 1), mode="same")[k:-k]
    outline = np.concatenate([[height + 1.0], smooth, [height + 1.0]])  # so a head may touch the blob's side
    peaks, _ = find_peaks(-outline, prominence=prominence * height, distance=max(1.0, 0.1 * height))
    return peaks - 1


def split_blob(blob: np.ndarray, person_aspect: float, prominence: float) -> list[tuple[int, int, int, int]]:
    """Boxes (x1, y1, x2, y2, blob coordinates) of the people in a foreground blob: itself, or one per head.

    Only a blob wider than a person (`person_aspect` = height / width) is looked at. Each head's box
    spans from the head's top to the lowest foreground near it. Its sides are where the blob ends for the
    leftmost and rightmost person (people at the ends of a group show their outer side), and
    `person_aspect` from the head elsewhere (sides hidden behind a neighbour are not seen).
    """
    height, width = blob.shape
    heads = head_columns(blob, prominence) if width * person_aspect > height else np.zeros(0, int)
    if len(heads) < 2:
        return [(0, 0, width, height)]
    columns = np.arange(width)
    boxes = []
    for i, c in enumerate(heads):
        rows = np.nonzero(blob[:, max(0, c - 1) : c + 2].any(axis=1))[0]
        top = int(rows.min()) if len(rows) else 0
        half = (height - top) / person_aspect / 2  # a first guess, from the blob's bottom
        near = np.nonzero(blob[:, max(0, round(c - half)) : round(c + half) + 1].any(axis=1))[0]
        bottom = int(near.max()) + 1 if len(near) else height
        half = (bottom - top) / person_aspect / 2
        filled = columns[blob[top:bottom].any(axis=0)]
        x1 = max(int(filled.min()), round(c - 1.5 * half)) if i == 0 else round(c - half)
        x2 = min(int(filled.max()) + 1, round(c + 1.5 * half)) if i == len(heads) - 1 else round(c + half)
        boxes.append((max(0, x1), top, min(width, x2), bottom))
    return boxes


class WalkerMemory:
    """The detector's short memory of its boxes, frame to frame: which of them are people who walked.

    A box is matched to the remembered ones by IoU. Once its centre has travelled `confirm` of its height
    from where it was first seen, it is a walker; a walker that stops stays one for `hold` still frames,
    and one the detector misses (merged into a passer-by's blob, say) is remembered for `patience` frames.
    """

    def __init__(self, confirm: float = 0.3, hold: int = 450, patience: int = 10, iou: float = 0.3) -> None:
        self.confirm, self.hold, self.patience, self.iou = confirm, hold, patience, iou
        self.seen: list[_Seen] = []

    def update(self, boxes: list[tuple[float, ...]]) -> list[np.ndarray]:
        """Take this frame's boxes; return those of walkers (the regions the background must not learn)."""
        current = np.asarray(boxes, np.float32).reshape(-1, 4)
        previous = np.array([s.box for s in self.seen], np.float32).reshape(-1, 4)
        overlap = iou_matrix(previous, current)
        seen, matched = [], set()
        for c, box in enumerate(current):
            r = int(overlap[:, c].argmax()) if len(previous) else -1
            if r >= 0 and overlap[r, c] >= self.iou:
                overlap[r, :] = 0  # one successor per box
                matched.add(r)
                seen.append(self.seen[r].moved_to(box, self.confirm))
            else:
                seen.append(_Seen(box, _centre(box), _centre(box)))
        for r, old in enumerate(self.seen):
            if r not in matched and old.walked and old.missed < self.patience:
                seen.append(replace(old, missed=old.missed + 1, still=old.still + 1))
        self.seen = seen
        return [s.box for s in seen if s.walked and s.still < self.hold]


@dataclass(frozen=True)
class _Seen:
    box: np.ndarray
    first: np.ndarray  # centre where it was first seen
    anchor: np.ndarray  # centre when it last moved
    walked: bool = False
    still: int = 0  # frames since it last moved
    missed: int = 0  # frames since it was last detected

    def moved_to(self, box: np.ndarray, confirm: float) -> _Seen:
        centre, height = _centre(box), float(box[3] - box[1])
        walked = self.walked or float(np.linalg.norm(centre - self.first)) >= confirm * height
        if float(np.linalg.norm(centre - self.anchor)) > 0.05 * height:
            return _Seen(box, self.first, centre, walked)
        return _Seen(box, self.first, self.anchor, walked, self.still + 1)


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)


class YoloDetector:
    """ultralytics YOLO restricted to COCO class 0 (person)."""

    name = "yolo"

    def __init__(self, weights: str, conf: float = 0.25, imgsz: int = 640, device: str | None = None) -> None:
        try:
            from ultralytics import YOLO
        except ImportError:
            raise UserError(
                f"--detector {weights} needs ultralytics: pip install 'partool[video]' "
                "(or use --detector motion, which needs no weights)"
            ) from None
        local = Path(weights)
        if local.suffix in (".onnx", ".engine") and not local.is_file():
            raise UserError(
                f"detector {weights} not found; export it with `yolo export model=yolo11n.pt format=onnx`"
            )
        try:
            self.model = YOLO(weights, task="detect")
        except Exception as e:  # download failures, unreadable weights: ultralytics raises many kinds
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"cannot load detector {weights} ({first}); offline, download it once elsewhere and pass its path"
            ) from None
        self.conf, self.imgsz, self.device = conf, imgsz, device
        self.name = f"yolo:{local.name}"

    def detect(self, frame: np.ndarray, index: int) -> Detections:
        result = self.model.predict(
            frame, classes=[0], conf=self.conf, imgsz=self.imgsz, device=self.device, verbose=False
        )[0]
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return empty_detections()
        return (
            boxes.xyxy.cpu().numpy().astype(np.float32),
            boxes.conf.cpu().numpy().astype(np.float32),
        )


class MotFileDetector:
    """Detections of a MOT Challenge file: `frame, id, left, top, width, height, conf, ...` (frame 1-based)."""

    name = "mot"

    def __init__(self, path: str | Path, min_conf: float = -np.inf) -> None:
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"detections file {path} not found (MOT format: frame,id,left,top,width,height,conf)"
            )
        rows: dict[int, list[tuple[float, ...]]] = defaultdict(list)
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                fields = line.replace(" ", "").split(",")
                try:
                    frame, left, top, width, height, conf = (
                        int(float(fields[0])), *(float(v) for v in fields[2:7]),
                    )  # fmt: skip
                except (ValueError, IndexError):
                    raise UserError(
                        f"{path}:{number}: not a MOT detection line (frame,id,left,top,width,height,conf,...)"
                    ) from None
                if conf >= min_conf and width > 0 and height > 0:
                    rows[frame - 1].append((left, top, left + width, top + height, conf))
        self.rows = {k: np.asarray(v, np.float32) for k, v in rows.items()}
        self.name = f"mot:{path.name}"

    def detect(self, frame: np.ndarray, index: int) -> Detections:
        data = self.rows.get(index)
        if data is None:
            return empty_detections()
        return data[:, :4].copy(), data[:, 4].copy()


def make_detector(spec: str, device: str | None = None) -> Detector:
    """`motion`, `mot:FILE`, or YOLO weights (`yolo11n.pt`, `.onnx`, `.engine`, or a `.yaml` model for tests)."""
    if spec == "motion":
        return MotionDetector()
    if spec.startswith("mot:"):
        return MotFileDetector(spec[4:])
    if spec.lower().endswith((".pt", ".onnx", ".engine", ".yaml")):
        yolo_device = None if device in (None, "auto") else device
        return YoloDetector(spec, device=yolo_device)
    raise UserError(f"unknown --detector {spec!r}; use motion, mot:FILE or YOLO weights such as yolo11n.pt")
