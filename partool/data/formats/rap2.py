"""RAPv2: `ROOT/RAP_annotation/RAP_annotation.mat` (or `ROOT/RAP_annotation.mat`) and `ROOT/RAP_dataset/`.

The struct `RAP_annotation` has named fields (Rethinking-PAR's `format_rap2.py`): name (84928 image
names), data (labels, 84928 x 152), attribute (152 names), selected_attribute (the 54 evaluated,
1-based) and partition_attribute (five structs of train_index / val_index / test_index, 1-based).
partool uses the 54 selected attributes in Rethinking-PAR's / OpenPAR's group order, partition 0.
"""

from __future__ import annotations

import os

import numpy as np

from partool.data.formats._common import Table, select, to_labels
from partool.data.formats._mat import index_vector, strings
from partool.data.formats._rap import load_annotation
from partool.errors import UserError

SPLITS = ("train", "val", "trainval", "test")
GROUP_ORDER = (10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33,
               34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 1, 2, 3, 4, 0, 5, 6, 7, 8, 9, 45, 46, 47, 48, 49, 50,
               51, 52, 53)  # fmt: skip
_FIELDS = ("name", "data", "attribute", "selected_attribute", "partition_attribute")


def load(root: str, split: str) -> Table:
    """Read one split of RAPv2 (54 attributes, partition 0) from its unpacked folder."""
    path, mat = load_annotation(root, split, "RAPv2", SPLITS)
    ann = mat.get("RAP_annotation")
    if not isinstance(ann, dict) or any(f not in ann for f in _FIELDS):
        found = sorted(ann) if isinstance(ann, dict) else []
        raise UserError(
            f"{path}: RAPv2's RAP_annotation needs fields {', '.join(_FIELDS)} (found {found}); "
            "is this RAPv1 (use rap1:)?"
        )
    raw = np.atleast_2d(np.asarray(ann["data"]))
    raw_names = strings(ann["attribute"], path, "attribute")
    names = strings(ann["name"], path, "name")
    selected = index_vector(ann["selected_attribute"], path, "selected_attribute")
    if selected.size != len(GROUP_ORDER) or selected.max() >= min(raw.shape[1], len(raw_names)):
        raise UserError(
            f"{path}: selected_attribute should list {len(GROUP_ORDER)} attributes within the "
            f"{raw.shape[1]} label columns; the file is damaged"
        )
    order = selected[list(GROUP_ORDER)]
    labels = to_labels(raw[:, order], path, "data")
    partitions = np.atleast_1d(np.asarray(ann["partition_attribute"], dtype=object))
    p0 = partitions[0]
    if not isinstance(p0, dict) or any(k not in p0 for k in ("train_index", "val_index", "test_index")):
        raise UserError(f"{path}: partition_attribute 0 should hold train_index, val_index and test_index")
    parts = {
        s: index_vector(p0[f"{s}_index"], path, f"partition 0 {s}_index") for s in ("train", "val", "test")
    }
    parts["trainval"] = np.concatenate([parts["train"], parts["val"]])
    roots = [os.path.join(root, "RAP_dataset"), os.path.join(root, "RAP_datasets"), root]
    return select([raw_names[i] for i in order], labels, names, parts, split, roots, path)
