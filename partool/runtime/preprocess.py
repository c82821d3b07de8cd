"""Person crops (BGR uint8, any size) -> one normalised float32 batch (N, 3, H, W), done once for the batch.

Only the resize is per crop (each crop has its own size); colour conversion, scaling, normalisation and the
NCHW transpose run as one vectorised expression over the stacked uint8 batch. The result equals the eval
transform of training (Resize -> ToTensor -> Normalize on RGB) up to the resize kernel: OpenCV's area filter
when shrinking (it averages like PIL's antialiased bilinear) and bilinear when enlarging.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def resize_crop(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`crop` resized to (H, W): area averaging when it shrinks (no aliasing), bilinear when it grows."""
    height, width = size
    shrinking = crop.shape[0] > height or crop.shape[1] > width
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def preprocess(
    crops: Sequence[np.ndarray],
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    pad_to: int | None = None,
) -> np.ndarray:
    """Stack BGR uint8 crops into a normalised RGB float32 batch; zero rows pad it to `pad_to` when given."""
    height, width = int(size[0]), int(size[1])
    rows = max(len(crops), pad_to or 0)
    stacked = np.zeros((len(crops), height, width, 3), np.uint8)
    for i, crop in enumerate(crops):
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
            raise ValueError(
                f"crop {i} has shape {crop.shape} and dtype {crop.dtype}; expected (h, w, 3) uint8 BGR"
            )
        stacked[i] = resize_crop(crop, (height, width))
    # x_norm = (x / 255 - mean) / std, as one multiply-add per value; [..., ::-1] turns BGR into RGB
    scale = (1.0 / (255.0 * np.asarray(std, np.float32))).astype(np.float32)
    bias = (-np.asarray(mean, np.float32) / np.asarray(std, np.float32)).astype(np.float32)
    batch = np.zeros((rows, 3, height, width), np.float32)
    batch[: len(crops)] = (stacked[..., ::-1] * scale + bias).transpose(0, 3, 1, 2)
    return batch
