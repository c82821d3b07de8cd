"""Rethinking-PAR / OpenPAR dataset descriptions: `dataset_all.pkl`, `dataset.pkl`, zero-shot `dataset_zs*.pkl`.

These are pickled `easydict.EasyDict`s with image_name, label, attr_name, partition (train / val /
trainval / test; a list of five partitions for PETA and RAP, of which partool takes the first, as
both code bases do) and root. Pickles can run code when loaded, so they are read with an
allow-list unpickler: plain containers, numpy arrays and dtypes, and EasyDict (read as a plain
dict). Anything else is refused before it is called.

Column choice: a Rethinking-PAR file keeps every raw column and lists the evaluated ones in
label_idx.eval (e.g. PETA's 35 of 105); OpenPAR files (recognised by their extra `attributes` /
`attr_words` keys) are already cut to the evaluated columns, and their label_idx must not be applied
again. Files without label_idx (Rethinking-PAR's zero-shot splits) are used whole. Labels equal to 2
stay "unknown" (Rethinking-PAR turns them into 0; partool masks them instead).
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
from typing import Any

import numpy as np

from partool.data.formats._common import Table, check_split, require_file, select, to_labels
from partool.errors import UserError

SPLITS = ("train", "val", "trainval", "test")


class _PlainDict(dict):
    """Stand-in for EasyDict: keeps the items, ignores the attribute mirror EasyDict pickles as state."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            for key, value in state.items():
                self.setdefault(key, value)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("easydict", "EasyDict"): _PlainDict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "range"): range,
    ("builtins", "slice"): slice,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("collections", "OrderedDict"): dict,
}


def _reconstruct(subtype: type, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's own pickle constructor, restricted to plain ndarrays."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays may be reconstructed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    """numpy's scalar unpickling helper, for plain (non-object) dtypes only."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("only plain numpy scalars may be unpickled")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode`, which protocol-2 pickles use for raw bytes; only to latin1."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError("only latin1 byte strings may be decoded")
    return text.encode("latin1")


def _copyreg_reconstructor(cls: type, base: type, state: Any) -> _PlainDict:
    """`copyreg._reconstructor`, which protocol-0/1 pickles use for dict subclasses; only for EasyDict."""
    if cls is not _PlainDict or base is not dict:
        raise pickle.UnpicklingError("only EasyDict may be rebuilt through copyreg")
    return _PlainDict(state or {})


for _core in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_core, "_reconstruct")] = _reconstruct
    _ALLOWED[(_core, "scalar")] = _scalar
_ALLOWED[("_codecs", "encode")] = _latin1
_ALLOWED[("copyreg", "_reconstructor")] = _copyreg_reconstructor
_ALLOWED[("builtins", "dict")] = dict


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocol < 3: __builtin__.xrange ...), mapped as pickle's own find_class does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def safe_load(path: str) -> Any:
    """Unpickle `path` with the allow-list above; UserError when it holds anything else or is broken."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path}: refused to load: {exc}. partool reads only dataset descriptions made of plain "
            "containers, numpy arrays and EasyDict; regenerate the file with Rethinking-PAR's or OpenPAR's script"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise UserError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def _partition(parts: dict, split: str, path: str) -> np.ndarray:
    value = parts[split]
    if isinstance(value, (list, tuple)):
        if not value:
            raise UserError(f"{path}: partition {split!r} is an empty list")
        value = value[0]
    return np.atleast_1d(np.asarray(value)).astype(np.int64)


def _image_roots(info: dict, path: str) -> list[str]:
    """The pickled root (often the author's absolute path), then the same folder name next to the pickle."""
    here = os.path.dirname(os.path.abspath(path))
    root = str(info.get("root", "") or "")
    candidates = [root] if root else []
    base = os.path.basename(os.path.normpath(root)) if root else ""
    if base:
        candidates.append(os.path.join(here, base))
    candidates.append(here)
    return list(dict.fromkeys(candidates))


def load(path: str, split: str) -> Table:
    """Read one split (partition 0) of a Rethinking-PAR / OpenPAR dataset pickle."""
    require_file(path, "dataset pickle", "give the path to dataset_all.pkl / dataset_zs_run0.pkl")
    info = safe_load(path)
    keys = ("image_name", "label", "attr_name", "partition")
    if not isinstance(info, dict) or any(k not in info for k in keys):
        found = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise UserError(f"{path}: a dataset pickle needs {', '.join(keys)}; found {found}")
    parts = info["partition"]
    if not isinstance(parts, dict):
        raise UserError(f"{path}: partition should be a dict of splits")
    check_split(split, [s for s in SPLITS if s in parts], path)
    names = [str(n) for n in info["image_name"]]
    attributes = [str(a) for a in info["attr_name"]]
    labels = to_labels(info["label"], path, "label")
    label_idx = info.get("label_idx")
    openpar = "attributes" in info or "attr_words" in info
    if isinstance(label_idx, dict) and "eval" in label_idx and not openpar:
        cols = np.asarray(list(label_idx["eval"]), dtype=np.int64)
        if cols.size == 0 or cols.max() >= min(labels.shape[1], len(attributes)):
            raise UserError(f"{path}: label_idx.eval points outside the {labels.shape[1]} label columns")
        labels = labels[:, cols]
        attributes = [attributes[i] for i in cols]
    table = {split: _partition(parts, split, path)}
    return select(attributes, labels, names, table, split, _image_roots(info, path), path)
