"""Image transforms of the paper's recipe (Rethinking-PAR / OpenPAR / MambaPAR).

train: Resize(H, W) -> Pad(10) -> RandomCrop(H, W) -> RandomHorizontalFlip -> ToTensor -> Normalize
eval:  Resize(H, W) -> ToTensor -> Normalize
with mean = std = 0.5 by default (inputs in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torchvision.transforms as T

DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
PAD = 10


def _triple(value: float | Sequence[float]) -> list[float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"mean/std need one value or three (RGB), got {values}")
    return values


def build_transforms(
    img_size: Sequence[int],
    mean: float | Sequence[float] = DEFAULT_MEAN,
    std: float | Sequence[float] = DEFAULT_STD,
    train: bool = False,
) -> T.Compose:
    """The train (augmenting) or eval transform for a (H, W) input size."""
    height, width = (int(v) for v in img_size)
    size = (height, width)
    normalize = T.Normalize(mean=_triple(mean), std=_triple(std))
    if train:
        steps = [
            T.Resize(size),
            T.Pad(PAD),
            T.RandomCrop(size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            normalize,
        ]
    else:
        steps = [T.Resize(size), T.ToTensor(), normalize]
    return T.Compose(steps)
