"""PA-100K: `ROOT/annotation.mat` (train/val/test_images_name, *_label, attributes) and images in `ROOT/data/`.

Attributes keep the order of `annotation.mat` (26), as OpenPAR, which MambaPAR builds on, uses them.
"""

from __future__ import annotations

import os

import numpy as np

from partool.data.formats._common import Table, check_split, first_file, require_dir, select, to_labels
from partool.data.formats._mat import load_mat, strings
from partool.errors import UserError

SPLITS = ("train", "val", "trainval", "test")
_PARTS = ("train", "val", "test")


def load(root: str, split: str) -> Table:
    """Read one split of PA-100K from its unpacked folder."""
    require_dir(root, "PA-100K")
    check_split(split, SPLITS, "PA-100K")
    path = first_file(
        [os.path.join(root, "annotation.mat"), os.path.join(root, "annotation", "annotation.mat")],
        "PA-100K annotation.mat",
        "it comes with the dataset; put it in the dataset root",
    )
    mat = load_mat(path)
    keys = ["attributes"] + [f"{p}_{s}" for p in _PARTS for s in ("images_name", "label")]
    missing = [k for k in keys if k not in mat]
    if missing:
        raise UserError(f"{path}: not a PA-100K annotation file, it lacks {', '.join(missing)}")
    attributes = strings(mat["attributes"], path, "attributes")
    names: list[str] = []
    labels: list[np.ndarray] = []
    parts: dict[str, np.ndarray] = {}
    for part in _PARTS:
        part_names = strings(mat[f"{part}_images_name"], path, f"{part}_images_name")
        part_labels = to_labels(mat[f"{part}_label"], path, f"{part}_label")
        if part_labels.shape[0] != len(part_names):
            raise UserError(
                f"{path}: {part}_label has {part_labels.shape[0]} rows but {part}_images_name "
                f"has {len(part_names)} names; the file is damaged"
            )
        parts[part] = np.arange(len(names), len(names) + len(part_names))
        names += part_names
        labels.append(part_labels)
    parts["trainval"] = np.concatenate([parts["train"], parts["val"]])
    roots = [os.path.join(root, "data"), os.path.join(root, "data", "release_data", "release_data"), root]
    return select(attributes, np.concatenate(labels), names, parts, split, roots, path)
