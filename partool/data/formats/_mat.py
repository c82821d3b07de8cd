"""Read MATLAB .mat annotation files into one plain tree, whatever the file version.

scipy reads v4-v7.2 files; MATLAB v7.3 files are HDF5 and need h5py. Both are turned into the
same shape (scipy's `simplify_cells=True` form): struct -> dict in field order, cell -> numpy object
array, char -> str, numeric -> squeezed numpy array, 1x1 -> Python scalar. The format readers then
index one tree and do not care which library read it.
"""

from __future__ import annotations

import zlib
from typing import Any

import h5py
import numpy as np
import scipy.io

from partool.errors import UserError


def load_mat(path: str) -> dict[str, Any]:
    """Load a .mat file as {variable name: simplified value}; UserError when it is not a readable .mat."""
    try:
        data = scipy.io.loadmat(path, simplify_cells=True)
    except NotImplementedError:  # scipy's answer to v7.3 (HDF5) files
        return _load_hdf5(path)
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, EOFError, zlib.error) as exc:
        if h5py.is_hdf5(path):
            return _load_hdf5(path)
        raise UserError(
            f"cannot read {path} as a MATLAB .mat file ({exc}); is the download complete?"
        ) from exc
    return {k: v for k, v in data.items() if not k.startswith("__")}


def fields(struct: Any, path: str, what: str) -> list[Any]:
    """The values of a MATLAB struct in field order, for readers that index fields by position."""
    if not isinstance(struct, dict):
        raise UserError(f"{path}: {what} is not a MATLAB struct (got {type(struct).__name__}); wrong file?")
    return list(struct.values())


def strings(cell: Any, path: str, what: str) -> list[str]:
    """A cell array of strings as a list of str."""
    items = [cell] if isinstance(cell, str) else list(np.asarray(cell, dtype=object).ravel())
    if not all(isinstance(s, str) for s in items):
        raise UserError(f"{path}: {what} should be a cell array of strings; wrong file?")
    return [s.strip() for s in items]


def index_vector(value: Any, path: str, what: str) -> np.ndarray:
    """A MATLAB 1-based index vector as 0-based int64."""
    arr = np.atleast_1d(np.asarray(value))
    if arr.dtype == object or arr.ndim != 1 or not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"{path}: {what} should be a vector of image indices; wrong file?")
    return arr.astype(np.int64) - 1


def _load_hdf5(path: str) -> dict[str, Any]:
    try:
        with h5py.File(path, "r") as f:
            return {name: _h5_value(f, f[name]) for name in f if not name.startswith("#")}
    except OSError as exc:
        raise UserError(f"cannot read {path} as a MATLAB v7.3 (HDF5) file: {exc}") from exc


def _attr_str(obj: h5py.HLObject, name: str) -> str:
    value = obj.attrs.get(name, b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def _h5_value(f: h5py.File, obj: h5py.HLObject) -> Any:
    if isinstance(obj, h5py.Group):
        names = obj.attrs.get("MATLAB_fields")
        keys = [b"".join(np.asarray(n).ravel()).decode() for n in names] if names is not None else list(obj)
        return {k: _h5_value(f, obj[k]) for k in keys if k in obj}
    if obj.attrs.get("MATLAB_empty", 0):
        return np.zeros((0,))
    data = obj[()]
    cls = _attr_str(obj, "MATLAB_class")
    if obj.dtype == h5py.ref_dtype:
        out = np.empty(data.shape, dtype=object)
        for idx in np.ndindex(data.shape):
            out[idx] = _h5_value(f, f[data[idx]])
        return _squeeze(out.T)
    if cls == "char":
        rows = ["".join(chr(c) for c in row) for row in np.atleast_2d(data.T)]
        return rows[0] if len(rows) == 1 else np.array(rows, dtype=object)
    return _squeeze(np.asarray(data).T)


def _squeeze(arr: np.ndarray) -> Any:
    arr = np.squeeze(arr)
    if arr.ndim == 0:
        return arr.item() if arr.dtype != object else arr[()]
    return arr
