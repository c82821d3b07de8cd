"""Person detectors behind one interface: `detect(frame, index) -> (boxes (N, 4) xyxy float32, scores (N,))`.

- `MotionDetector`: OpenCV MOG2 background subtraction, morphology and contours, kept when the blob is
  person-shaped (taller than wide, big enough). Needs no weights, so it is the offline default; it assumes
  a static camera and sees only what moves.
- `YoloDetector`: ultralytics YOLO (`yolo11n.pt`, an exported `.onnx` / `.engine`), person class only.
  ultralytics is AGPL-3.0 and fetches weights at run time, so it is imported only when asked for.
- `MotFileDetector`: detections read from a MOT Challenge `det.txt`, for evaluating tracking and PAR
  on fixed detections.
`index` is the frame's index in its source (MOT files are keyed by it; the others ignore it).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from partool.errors import UserError

Detections = tuple[np.ndarray, np.ndarray]  # boxes (N, 4) float32 x1 y1 x2 y2, scores (N,) float32


def empty_detections() -> Detections:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)


class Detector(Protocol):
    name: str

    def detect(self, frame: np.ndarray, index: int) -> Detections: ...


class MotionDetector:
    """Moving, person-shaped blobs: MOG2 foreground without shadows, opened, closed, outer contours.

    Sizes are fractions of the frame height so the same settings work at any resolution. The score is how
    much of the box the foreground fills (a person fills about half of their box; noise fills less).
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
    ) -> None:
        self.subtractor = cv2.createBackgroundSubtractorMOG2(
            history=history, varThreshold=var_threshold, detectShadows=True
        )
        self.min_height, self.min_aspect, self.max_aspect, self.min_fill = (
            min_height, min_aspect, max_aspect, min_fill,
        )  # fmt: skip
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def detect(self, frame: np.ndarray, index: int) -> Detections:
        height = frame.shape[0]
        mask = self.subtractor.apply(frame)
        mask = np.where(mask == 255, np.uint8(255), np.uint8(0))  # 127 marks shadows
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open)
        # join limbs, head and torso of one person: a tall kernel scaled to the frame
        k = max(3, round(height * 0.02)) | 1
        close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, 3 * k))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes, scores = [], []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if h < self.min_height * height or not self.min_aspect <= h / max(w, 1) <= self.max_aspect:
                continue
            fill = float(cv2.countNonZero(mask[y : y + h, x : x + w])) / (w * h)
            if fill < self.min_fill:
                continue
            boxes.append((x, y, x + w, y + h))
            scores.append(min(1.0, fill * 1.5))
        if not boxes:
            return empty_detections()
        return np.asarray(boxes, np.float32), np.asarray(scores, np.float32)


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
