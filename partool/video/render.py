"""Draw tracks on a frame: box, track id and the attributes currently on; optional pixelation of people."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per id (golden-ratio hue steps)."""
    hue = int((track_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def clip_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Integer box inside the frame (may be empty)."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    return max(0, x1), max(0, y1), min(width, x2), min(height, y2)


def pixelate(image: np.ndarray, box: Sequence[float], block: int = 8) -> None:
    """Replace the box's pixels, in place, by blocks of `block` pixels (irreversible at that size)."""
    x1, y1, x2, y2 = clip_box(box, image.shape[1], image.shape[0])
    if x2 <= x1 or y2 <= y1:
        return
    region = image[y1:y2, x1:x2]
    small = cv2.resize(
        region, (max(1, (x2 - x1) // block), max(1, (y2 - y1) // block)), interpolation=cv2.INTER_AREA
    )
    image[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)


def draw_tracks(
    frame: np.ndarray,
    tracks: Sequence[tuple[int, np.ndarray, list[str]]],
    privacy: bool = False,
    max_labels: int = 4,
) -> np.ndarray:
    """A copy of `frame` with each (id, box, attributes on) drawn; people pixelated first when `privacy`."""
    out = frame.copy()
    height, width = out.shape[:2]
    scale = max(0.3, height / 900)
    thickness = max(1, round(height / 400))
    for _, box, _ in tracks if privacy else ():
        pixelate(out, box, block=max(4, round(height / 60)))
    for track_id, box, names in tracks:
        colour = track_colour(track_id)
        x1, y1, x2, y2 = clip_box(box, width, height)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        lines = [f"#{track_id}", *names[:max_labels]]
        if len(names) > max_labels:
            lines[-1] += f" +{len(names) - max_labels}"
        line_h = cv2.getTextSize("Ag", FONT, scale, 1)[0][1] + 6  # label box (text + 2 px) plus a gap
        y = max(line_h, y1 - line_h * (len(lines) - 1) - 2)
        for text in lines:
            (tw, th), _ = cv2.getTextSize(text, FONT, scale, 1)
            cv2.rectangle(out, (x1, y - th - 2), (x1 + tw + 2, y + 2), colour, -1)
            cv2.putText(out, text, (x1 + 1, y), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
            y += line_h
    return out
