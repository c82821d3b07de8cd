"""PETA: `ROOT/PETA.mat` and images `ROOT/images/00001.png` ... (19,000).

`PETA.mat` holds one struct `peta` whose fields are read by position, as every public reader does
(Rethinking-PAR `format_peta.py`, OpenPAR): [0] data (19000 x 109: four id columns, then 105
attributes), [1] attribute names (105), [3] five partitions, each a struct (train, val, test) of
1-based indices. partool uses the standard 35-attribute subset (the first 35 columns) in
Rethinking-PAR's / OpenPAR's group order, and partition 0.
"""

from __future__ import annotations

import os

import numpy as np

from partool.data.formats._common import Table, check_split, first_file, require_dir, select, to_labels
from partool.data.formats._mat import fields, index_vector, load_mat, strings
from partool.errors import UserError

SPLITS = ("train", "val", "trainval", "test")
GROUP_ORDER = (10, 18, 19, 30, 15, 7, 9, 11, 14, 21, 26, 29, 32, 33, 34, 6, 8, 12, 25, 27, 31, 13, 23, 24, 28,
               4, 5, 17, 20, 22, 0, 1, 2, 3, 16)  # fmt: skip
_ID_COLUMNS = 4


def load(root: str, split: str) -> Table:
    """Read one split of PETA (35 attributes, partition 0) from its unpacked folder."""
    require_dir(root, "PETA")
    check_split(split, SPLITS, "PETA")
    path = first_file(
        [os.path.join(root, "PETA.mat")], "PETA.mat", "it comes with the dataset; put it in the root"
    )
    mat = load_mat(path)
    if "peta" not in mat:
        raise UserError(f"{path}: no variable 'peta'; not the PETA annotation file")
    top = fields(mat["peta"], path, "peta")
    if len(top) < 4:
        raise UserError(f"{path}: struct 'peta' has {len(top)} fields, expected at least 4; wrong file?")
    data = np.atleast_2d(np.asarray(top[0]))
    raw_names = strings(top[1], path, "peta attribute names")
    if data.ndim != 2 or data.shape[1] != _ID_COLUMNS + len(raw_names) or len(raw_names) < len(GROUP_ORDER):
        raise UserError(
            f"{path}: peta data has shape {data.shape} for {len(raw_names)} attribute names; expected "
            f"{_ID_COLUMNS} id columns + one column per attribute (at least {len(GROUP_ORDER)})"
        )
    order = list(GROUP_ORDER)
    labels = to_labels(data[:, _ID_COLUMNS:][:, order], path, "peta data")
    attributes = [raw_names[i] for i in order]
    partitions_cell = np.atleast_1d(np.asarray(top[3], dtype=object))
    p0 = fields(partitions_cell[0], path, "peta partition 0")
    if len(p0) < 3:
        raise UserError(f"{path}: peta partition 0 should hold train, val and test indices")
    parts = {
        name: index_vector(p0[k], path, f"partition 0 {name}")
        for k, name in enumerate(("train", "val", "test"))
    }
    parts["trainval"] = np.concatenate([parts["train"], parts["val"]])
    names = [f"{i + 1:05d}.png" for i in range(data.shape[0])]
    return select(attributes, labels, names, parts, split, [os.path.join(root, "images")], path)
