"""The dataset every format reader produces: attribute names, labels with an "unknown" code, images.

Labels are uint8 with 0 = absent, 1 = present and 2 = unknown/unspecified (RAP's 2s, WIDER's 0s,
blank CSV cells). The loss gives unknown entries weight 0 and the metrics leave them out, so every
format can keep what it does not know instead of guessing a 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from partool.errors import UserError

UNKNOWN = 2
SPLITS = ("train", "val", "trainval", "test")

# Errors PIL raises for unreadable, truncated or hostile image files; a sample that raises one is skipped.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class PARDataset(Dataset):
    """One split of a PAR dataset: `__getitem__` returns (transform(RGB image), float32 label tensor).

    A sample whose image cannot be decoded is skipped: the next readable sample (cyclically, so the
    choice is deterministic) is returned in its place, and its path is recorded in `.skipped`. The
    record lives in a shared-memory tensor, so skips seen inside DataLoader worker processes reach
    the parent too, and a known-bad image is not retried on the next epoch.
    """

    def __init__(
        self,
        attributes: Sequence[str],
        labels: np.ndarray,
        image_paths: Sequence[str],
        *,
        boxes: np.ndarray | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        spec: str = "",
        split: str = "",
    ) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] != len(attributes):
            raise UserError(
                f"{spec}: labels have shape {labels.shape} but there are {len(attributes)} attribute names; "
                "the annotation file is inconsistent"
            )
        if len(image_paths) != labels.shape[0]:
            raise UserError(
                f"{spec}: {len(image_paths)} images but {labels.shape[0]} label rows in split {split!r}; "
                "the annotation file is inconsistent"
            )
        if labels.size and (labels.min() < 0 or labels.max() > UNKNOWN):
            raise UserError(f"{spec}: labels must be 0, 1 or {UNKNOWN} (unknown), found {np.unique(labels)}")
        if boxes is not None and np.asarray(boxes).shape != (len(image_paths), 4):
            raise UserError(f"{spec}: expected one [x, y, w, h] box per image, got shape {np.shape(boxes)}")
        self.attributes: list[str] = [str(a) for a in attributes]
        self.labels: np.ndarray = labels.astype(np.uint8)
        self.image_paths: list[str] = [str(p) for p in image_paths]
        self.boxes: np.ndarray | None = None if boxes is None else np.asarray(boxes, dtype=np.float64)
        self.transform = transform
        self.spec = spec
        self.split = split
        self._bad = torch.zeros(len(self.image_paths), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def num_attributes(self) -> int:
        return len(self.attributes)

    @property
    def skipped(self) -> list[str]:
        """Paths of the images found unreadable so far (in this process and its DataLoader workers)."""
        return [self.image_paths[i] for i in torch.nonzero(self._bad).flatten().tolist()]

    def pos_ratio(self) -> np.ndarray:
        """Positives / known labels per attribute on this split (0 where nothing is known)."""
        pos = (self.labels == 1).sum(axis=0).astype(np.float64)
        known = (self.labels <= 1).sum(axis=0).astype(np.float64)
        return np.divide(pos, known, out=np.zeros_like(pos), where=known > 0)

    def load_image(self, index: int) -> Image.Image:
        """Decode image `index` as RGB (cropped to its box when the format has boxes); raises on bad files."""
        with Image.open(self.image_paths[index]) as img:
            img.load()
            rgb = img.convert("RGB")
        if self.boxes is not None:
            rgb = _crop(rgb, self.boxes[index])
        return rgb

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        n = len(self)
        for offset in range(n):
            i = (index + offset) % n
            if self._bad[i]:
                continue
            try:
                img = self.load_image(i)
            except _IMAGE_ERRORS:
                self._bad[i] = True
                continue
            if self.transform is not None:
                img = self.transform(img)
            return img, torch.from_numpy(self.labels[i].astype(np.float32))
        raise UserError(f"{self.spec}: none of the {n} images of split {self.split!r} could be read")

    def __repr__(self) -> str:
        return f"PARDataset({self.spec!r}, split={self.split!r}, n={len(self)}, attributes={self.num_attributes})"


def _crop(img: Image.Image, box: np.ndarray) -> Image.Image:
    """Crop an [x, y, w, h] box, clipped to the image and at least one pixel in each direction."""
    x, y, w, h = (float(v) for v in box)
    left = int(np.clip(np.floor(x), 0, img.width - 1))
    top = int(np.clip(np.floor(y), 0, img.height - 1))
    right = int(np.clip(np.ceil(x + w), left + 1, img.width))
    bottom = int(np.clip(np.ceil(y + h), top + 1, img.height))
    return img.crop((left, top, right, bottom))
