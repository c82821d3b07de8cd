"""WIDER Attribute: `wider_attribute_{trainval,test}.json` (in ROOT/Anno/ or ROOT/) and scene images in ROOT/Image/.

Each scene image lists person targets with an [x, y, width, height] box and 14 attribute values,
1 (positive), -1 (negative) or 0 (unspecified) per the dataset's README. partool crops each person
box as one sample and maps -1 -> 0, 1 -> 1 and 0 -> 2 (unknown: no loss, left out of the metrics).
Names come from `attribute_id_map`. trainval.json holds both the train and the val scenes (file
names start with "train/" or "val/"), test.json the test scenes.
"""

from __future__ import annotations

import json
import os

import numpy as np

from partool.data.base import UNKNOWN
from partool.data.formats._common import Table, check_split, find_image_root, first_file, require_dir
from partool.errors import UserError

SPLITS = ("train", "val", "trainval", "test")
_RAW_TO_LABEL = {1: 1, -1: 0, 0: UNKNOWN}


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or "images" not in doc or "attribute_id_map" not in doc:
        raise UserError(f"{path}: a WIDER Attribute file needs 'images' and 'attribute_id_map'")
    return doc


def load(root: str, split: str) -> Table:
    """Read one split of WIDER Attribute, one sample per annotated person box."""
    require_dir(root, "WIDER Attribute")
    check_split(split, SPLITS, "WIDER Attribute")
    stem = "wider_attribute_test.json" if split == "test" else "wider_attribute_trainval.json"
    path = first_file(
        [os.path.join(root, "Anno", stem), os.path.join(root, stem)],
        f"WIDER Attribute {stem}",
        "it comes with the dataset's annotations; put it in ROOT/Anno/",
    )
    doc = _read_json(path)
    id_map = doc["attribute_id_map"]
    try:
        attributes = [str(id_map[k]) for k in sorted(id_map, key=int)]
    except (TypeError, ValueError):
        raise UserError(f"{path}: attribute_id_map keys should be attribute numbers") from None
    prefix = {"train": ("train/",), "val": ("val/",)}.get(split)
    names: list[str] = []
    rows: list[list[int]] = []
    boxes: list[list[float]] = []
    for image in doc["images"]:
        file_name = str(image.get("file_name", ""))
        if prefix is not None and not file_name.startswith(prefix):
            continue
        for target in image.get("targets", []):
            values, box = target.get("attribute"), target.get("bbox")
            if not isinstance(values, list) or len(values) != len(attributes) or len(box or []) != 4:
                raise UserError(
                    f"{path}: a target of {file_name} has {len(values or [])} attribute values and box "
                    f"{box}; expected {len(attributes)} values and [x, y, width, height]"
                )
            try:
                rows.append([_RAW_TO_LABEL[int(v)] for v in values])
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{path}: attribute values of {file_name} must be -1, 0 or 1") from None
            names.append(file_name)
            boxes.append([float(v) for v in box])
    if not names:
        raise UserError(f"{path}: no annotated person for split {split!r}")
    image_root = find_image_root([os.path.join(root, "Image"), root], names[0], path)
    return Table(
        attributes=attributes,
        labels=np.asarray(rows, dtype=np.uint8),
        image_paths=[os.path.join(image_root, n) for n in names],
        boxes=np.asarray(boxes, dtype=np.float64),
    )
