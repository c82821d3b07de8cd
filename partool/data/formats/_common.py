"""What a format reader returns, and the checks every reader shares."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from partool.data.base import SPLITS, UNKNOWN
from partool.errors import UserError


@dataclass
class Table:
    """One split of a dataset as read from disk: names, labels (0/1/2), absolute image paths, boxes."""

    attributes: list[str]
    labels: np.ndarray
    image_paths: list[str]
    boxes: np.ndarray | None = None


def check_split(split: str, available: Sequence[str], what: str) -> None:
    """UserError unless `split` is one this dataset provides."""
    if split not in available:
        known = ", ".join(available)
        extra = "" if split in SPLITS else f" (partool splits are {', '.join(SPLITS)})"
        raise UserError(f"{what} has no split {split!r}{extra}; it provides: {known}")


def to_labels(raw: object, path: str, what: str = "labels") -> np.ndarray:
    """Labels as uint8 0/1/2; UserError naming the file when other values or a non-matrix show up."""
    arr = np.asarray(raw)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise UserError(
            f"{path}: {what} should be a numeric (images x attributes) matrix, got shape {arr.shape}"
        )
    bad = ~np.isin(arr, (0, 1, UNKNOWN))
    if bad.any():
        values = np.unique(arr[bad])[:5].tolist()
        raise UserError(f"{path}: {what} must be 0, 1 or {UNKNOWN} (unknown); found {values}")
    return arr.astype(np.uint8)


def select(
    attributes: Sequence[str],
    labels: np.ndarray,
    names: Sequence[str],
    partitions: Mapping[str, np.ndarray],
    split: str,
    image_roots: Sequence[str],
    path: str,
) -> Table:
    """Cut one split out of whole-dataset arrays, checking indices and shapes against each other."""
    if labels.shape != (len(names), len(attributes)):
        raise UserError(
            f"{path}: labels have shape {labels.shape} but there are {len(names)} image names and "
            f"{len(attributes)} attributes; the file is damaged or not this dataset's format"
        )
    idx = np.asarray(partitions[split], dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(names)):
        raise UserError(f"{path}: split {split!r} indexes images outside 0..{len(names) - 1}; damaged file?")
    root = find_image_root(image_roots, names[idx[0]], path) if idx.size else image_roots[0]
    return Table(
        attributes=[str(a) for a in attributes],
        labels=labels[idx],
        image_paths=[os.path.join(root, names[i]) for i in idx],
    )


def require_file(path: str, what: str, hint: str) -> str:
    """Return `path` if it is a file, else raise a UserError naming it, what it is, and what to do."""
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path} ({hint})")
    return path


def first_file(candidates: Sequence[str], what: str, hint: str) -> str:
    """The first existing file among `candidates` (datasets are unpacked in more than one layout)."""
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise UserError(f"{what} not found; looked for {', '.join(candidates)} ({hint})")


def find_image_root(candidates: Sequence[str], first_image: str, what: str) -> str:
    """The first candidate folder that holds `first_image`; checked once so a wrong root fails early."""
    for root in candidates:
        if os.path.isfile(os.path.join(root, first_image)):
            return root
    raise UserError(
        f"{what}: image {first_image!r} not found under {' or '.join(candidates)}; "
        "put the dataset's images there or fix the dataset root"
    )


def require_dir(root: str, what: str) -> str:
    """UserError naming `root` when the dataset folder does not exist."""
    if not os.path.isdir(root):
        raise UserError(
            f"{what} root folder not found: {root} (give the folder the dataset was unpacked into)"
        )
    return root
