"""What RAPv1 and RAPv2 share: the folder check and where `RAP_annotation.mat` lies in their two layouts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from partool.data.formats._common import check_split, first_file, require_dir
from partool.data.formats._mat import load_mat


def load_annotation(root: str, split: str, version: str, splits: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Check `root` and `split` for RAP `version`, then read `RAP_annotation.mat`: (its path, its variables).

    Both versions ship it in `ROOT/RAP_annotation/` or in `ROOT`; what it holds differs, so the readers
    check its contents themselves."""
    require_dir(root, version)
    check_split(split, splits, version)
    path = first_file(
        [
            os.path.join(root, "RAP_annotation", "RAP_annotation.mat"),
            os.path.join(root, "RAP_annotation.mat"),
        ],
        f"{version} RAP_annotation.mat",
        "it comes with the dataset; put it in the dataset root",
    )
    return path, load_mat(path)
