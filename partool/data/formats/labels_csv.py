"""CSV: a header `image,attr_1,...,attr_K` and one row per image, 0/1 per attribute (blank or 2 = unknown).

Image paths are relative to the CSV's folder (absolute paths work too). An optional column named
`split` (train / val / test) assigns rows to splits, trainval being train + val; without it the
whole file is every split, so give train and evaluation data as separate files.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from partool.data.base import SPLITS, UNKNOWN
from partool.data.formats._common import Table, check_split, require_file
from partool.errors import UserError

_VALUES = {"0": 0, "1": 1, "": UNKNOWN, "2": UNKNOWN}


def load(path: str, split: str) -> Table:
    """Read the rows of `split` from a label CSV."""
    require_file(path, "label CSV", "give the path to a CSV with header image,attr_1,...")
    check_split(split, SPLITS, path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read the CSV ({exc})") from None
    if not rows or not rows[0] or rows[0][0].strip() != "image":
        raise UserError(f"{path}: the first row must be the header image,attr_1,...")
    header = [h.strip() for h in rows[0]]
    split_col = header.index("split") if "split" in header else None
    attr_cols = [i for i in range(1, len(header)) if i != split_col]
    if not attr_cols:
        raise UserError(f"{path}: the header names no attribute columns after 'image'")
    wanted = {"trainval": {"train", "val"}}.get(split, {split})
    here = os.path.dirname(os.path.abspath(path))
    names: list[str] = []
    labels: list[list[int]] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UserError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        if split_col is not None:
            row_split = row[split_col].strip()
            if row_split not in ("train", "val", "test"):
                raise UserError(f"{path}:{line}: split must be train, val or test, got {row_split!r}")
            if row_split not in wanted:
                continue
        try:
            labels.append([_VALUES[row[i].strip()] for i in attr_cols])
        except KeyError:
            bad = next(row[i] for i in attr_cols if row[i].strip() not in _VALUES)
            raise UserError(f"{path}:{line}: label {bad!r}; use 0, 1, or blank/2 for unknown") from None
        names.append(os.path.join(here, row[0].strip()))
    if not names:
        raise UserError(f"{path}: no rows for split {split!r}")
    if not os.path.isfile(names[0]):
        raise UserError(f"{path}: image {names[0]} not found (image paths are relative to the CSV's folder)")
    return Table(
        attributes=[header[i] for i in attr_cols],
        labels=np.asarray(labels, dtype=np.uint8),
        image_paths=names,
    )
