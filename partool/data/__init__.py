"""Datasets behind one spec string (`--data SPEC`): real PAR formats on disk and the synthetic SynthPAR."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from PIL import Image

from partool.data.base import SPLITS, UNKNOWN, PARDataset
from partool.errors import UserError

DATASET_SPECS = """\
synth            SynthPAR, drawn on the fly (train 2000 / val 500 / test 500 images, 14 attributes)
synth:N          SynthPAR with N train images and N/4 val and test images
pa100k:ROOT      PA-100K: ROOT/annotation.mat, images in ROOT/data/ (26 attributes)
peta:ROOT        PETA: ROOT/PETA.mat, images in ROOT/images/ (35 attributes, partition 0)
rap1:ROOT        RAPv1: ROOT/RAP_annotation/RAP_annotation.mat, ROOT/RAP_dataset/ (51; trainval/test only)
rap2:ROOT        RAPv2: ROOT/RAP_annotation/RAP_annotation.mat, ROOT/RAP_dataset/ (54, partition 0)
pkl:PATH         Rethinking-PAR / OpenPAR dataset_all.pkl or dataset_zs_run*.pkl (read without running code)
wider:ROOT       WIDER Attribute: ROOT/Anno/wider_attribute_*.json, ROOT/Image/ (14, person boxes cropped)
csv:PATH         CSV with header image,attr_1,...; paths relative to the CSV; optional split column
splits: train, val, trainval (train + val), test"""

_KINDS = ("synth", "pa100k", "peta", "rap1", "rap2", "pkl", "wider", "csv")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split 'kind:arg' into (kind, arg); UserError for unknown kinds or a missing argument."""
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in _KINDS:
        raise UserError(
            f"unknown dataset spec {spec!r}; use one of: {', '.join(k + ':…' for k in _KINDS[1:])} or synth"
        )
    if kind != "synth" and not arg:
        raise UserError(f"dataset spec {spec!r} needs a path: {kind}:PATH")
    if kind == "synth" and sep and not arg.isdigit():
        raise UserError(
            f"dataset spec {spec!r}: the synth size must be a positive whole number, e.g. synth:500"
        )
    if kind == "synth" and arg and int(arg) < 1:
        raise UserError(f"dataset spec {spec!r}: the synth size must be at least 1")
    return kind, os.path.expanduser(arg) if kind != "synth" else arg


def open_dataset(spec: str, split: str, transform: Callable[[Image.Image], Any] | None = None) -> PARDataset:
    """The `split` of the dataset named by `spec`, its images passed through `transform`."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    kind, arg = parse_spec(spec)
    if kind == "synth":
        from partool.data.synth import SynthPAR

        return SynthPAR(split, size=int(arg) if arg else None, transform=transform, spec=spec)
    from partool.data.formats import labels_csv, pa100k, peta, pkl, rap1, rap2, wider

    reader = {
        "pa100k": pa100k.load,
        "peta": peta.load,
        "rap1": rap1.load,
        "rap2": rap2.load,
        "pkl": pkl.load,
        "wider": wider.load,
        "csv": labels_csv.load,
    }[kind]
    table = reader(arg, split)
    return PARDataset(
        table.attributes,
        table.labels,
        table.image_paths,
        boxes=table.boxes,
        transform=transform,
        spec=spec,
        split=split,
    )


__all__ = ["DATASET_SPECS", "SPLITS", "UNKNOWN", "PARDataset", "open_dataset", "parse_spec"]
