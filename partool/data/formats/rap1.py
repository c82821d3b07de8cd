"""RAPv1: `ROOT/RAP_annotation/RAP_annotation.mat` (or `ROOT/RAP_annotation.mat`) and `ROOT/RAP_dataset/`.

The struct `RAP_annotation` is read by position, as Rethinking-PAR's `format_rap.py` and OpenPAR do:
[0] five partitions, each a struct (trainval, test) of 1-based indices, [1] labels (41585 x 92),
[3] English attribute names (92), [5] image names. The standard 51 attributes are the first 51
columns, in file order (OpenPAR's order). RAPv1 defines only trainval and test.
"""

from __future__ import annotations

import os

import numpy as np

from partool.data.formats._common import Table, select, to_labels
from partool.data.formats._mat import fields, index_vector, strings
from partool.data.formats._rap import load_annotation
from partool.errors import UserError

SPLITS = ("trainval", "test")
NUM_ATTRIBUTES = 51


def load(root: str, split: str) -> Table:
    """Read one split of RAPv1 (51 attributes, partition 0) from its unpacked folder."""
    path, mat = load_annotation(root, split, "RAPv1", SPLITS)
    if "RAP_annotation" not in mat:
        raise UserError(f"{path}: no variable 'RAP_annotation'; not a RAP annotation file")
    top = fields(mat["RAP_annotation"], path, "RAP_annotation")
    if len(top) < 6:
        raise UserError(
            f"{path}: RAP_annotation has {len(top)} fields, RAPv1 has 7; is this RAPv2 (use rap2:)?"
        )
    raw = np.atleast_2d(np.asarray(top[1]))
    raw_names = strings(top[3], path, "attribute names (field 4)")
    names = strings(top[5], path, "image names (field 6)")
    if raw.ndim != 2 or raw.shape[1] < NUM_ATTRIBUTES or len(raw_names) < NUM_ATTRIBUTES:
        raise UserError(
            f"{path}: labels have shape {raw.shape} and {len(raw_names)} names; RAPv1 has at least "
            f"{NUM_ATTRIBUTES} attributes"
        )
    labels = to_labels(raw[:, :NUM_ATTRIBUTES], path, "RAPv1 labels")
    p0 = fields(np.atleast_1d(np.asarray(top[0], dtype=object))[0], path, "partition 0")
    if len(p0) < 2:
        raise UserError(f"{path}: partition 0 should hold trainval and test indices")
    parts = {name: index_vector(p0[k], path, f"partition 0 {name}") for k, name in enumerate(SPLITS)}
    roots = [os.path.join(root, "RAP_dataset"), root]
    return select(raw_names[:NUM_ATTRIBUTES], labels, names, parts, split, roots, path)
