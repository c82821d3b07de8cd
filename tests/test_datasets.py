"""Dataset readers on tiny files in each real layout, written here with scipy / h5py / pickle / json."""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from partool.data import open_dataset, parse_spec
from partool.errors import UserError

PA100K_ATTRS = ["Female", "AgeOver60", "Age18-60", "Hat"]
PETA_35 = [
    "personalLess30", "personalLess45", "personalLess60", "personalLarger60", "carryingBackpack",
    "carryingOther", "lowerBodyCasual", "upperBodyCasual", "lowerBodyFormal", "upperBodyFormal",
    "accessoryHat", "upperBodyJacket", "lowerBodyJeans", "footwearLeatherShoes", "upperBodyLogo",
    "hairLong", "personalMale", "carryingMessengerBag", "accessoryMuffler", "accessoryNothing",
    "carryingNothing", "upperBodyPlaid", "carryingPlasticBags", "footwearSandals", "footwearShoes",
    "lowerBodyShorts", "upperBodyShortSleeve", "lowerBodyShortSkirt", "footwearSneaker",
    "upperBodyThinStripes", "accessorySunglasses", "lowerBodyTrousers", "upperBodyTshirt",
    "upperBodyOther", "upperBodyVNeck",
]  # fmt: skip
PETA_GROUP = [10, 18, 19, 30, 15, 7, 9, 11, 14, 21, 26, 29, 32, 33, 34, 6, 8, 12, 25, 27, 31, 13, 23, 24, 28,
              4, 5, 17, 20, 22, 0, 1, 2, 3, 16]  # fmt: skip


def _cell(items: list) -> np.ndarray:
    """An n x 1 MATLAB cell array."""
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def _images(folder: Path, names: list[str], size: tuple[int, int] = (8, 16)) -> None:
    for k, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (k * 20 % 256, 100, 50)).save(path)


# ----------------------------------------------------------------------------- PA-100K


def _pa100k_arrays() -> dict:
    rng = np.random.default_rng(0)
    names = {
        "train": ["000001.jpg", "000002.jpg", "000003.jpg"],
        "val": ["000004.jpg"],
        "test": ["000005.jpg", "000006.jpg"],
    }
    out: dict = {"attributes": _cell(PA100K_ATTRS)}
    for part, n in names.items():
        out[f"{part}_images_name"] = _cell(n)
        out[f"{part}_label"] = rng.integers(0, 2, size=(len(n), len(PA100K_ATTRS))).astype(np.uint8)
    return out


def write_pa100k(root: Path) -> dict:
    """A tiny PA-100K in its layout: annotation.mat and data/ (train 3, val 1, test 2); returns the arrays."""
    arrays = _pa100k_arrays()
    scipy.io.savemat(root / "annotation.mat", arrays)
    _images(root / "data", [f"{i:06d}.jpg" for i in range(1, 7)])
    return arrays


def test_pa100k(tmp_path: Path) -> None:
    arrays = write_pa100k(tmp_path)
    sizes = {"train": 3, "val": 1, "trainval": 4, "test": 2}
    for split, n in sizes.items():
        ds = open_dataset(f"pa100k:{tmp_path}", split)
        assert ds.attributes == PA100K_ATTRS
        assert len(ds) == n
    ds = open_dataset(f"pa100k:{tmp_path}", "test")
    np.testing.assert_array_equal(ds.labels, arrays["test_label"])
    assert ds.image_paths[1] == str(tmp_path / "data" / "000006.jpg")
    img, label = ds[1]
    assert isinstance(img, Image.Image) and img.size == (8, 16)
    assert label.dtype == torch.float32 and label.tolist() == arrays["test_label"][1].tolist()


def _write_v73(path: Path, variables: dict) -> None:
    """A MATLAB v7.3 file as MATLAB lays it out: HDF5 with a 512-byte header block, data transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")

        def char(name: str, text: str, parent: h5py.Group) -> h5py.Dataset:
            ds = parent.create_dataset(name, data=np.array([[ord(c) for c in text]], dtype=np.uint16).T)
            ds.attrs["MATLAB_class"] = np.bytes_("char")
            return ds

        for name, value in variables.items():
            if value.dtype == object:  # n x 1 cell of strings -> (1, n) references
                ref_arr = np.empty((1, len(value)), dtype=h5py.ref_dtype)
                for i, text in enumerate(value[:, 0]):
                    ref_arr[0, i] = char(f"{name}_{i}", text, refs).ref
                ds = f.create_dataset(name, data=ref_arr)
                ds.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                ds = f.create_dataset(name, data=np.asarray(value, dtype=np.float64).T)
                ds.attrs["MATLAB_class"] = np.bytes_("double")
    header = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    )
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")


def test_pa100k_matlab_v73_file_reads_the_same(tmp_path: Path) -> None:
    arrays = _pa100k_arrays()
    _write_v73(tmp_path / "annotation.mat", arrays)
    with pytest.raises(NotImplementedError):  # scipy alone cannot read it: the h5py path is exercised
        scipy.io.loadmat(tmp_path / "annotation.mat")
    _images(tmp_path / "data", [f"{i:06d}.jpg" for i in range(1, 7)])
    ds = open_dataset(f"pa100k:{tmp_path}", "train")
    assert ds.attributes == PA100K_ATTRS
    np.testing.assert_array_equal(ds.labels, arrays["train_label"])
    assert [os.path.basename(p) for p in ds.image_paths] == ["000001.jpg", "000002.jpg", "000003.jpg"]


def test_pa100k_label_name_mismatch(tmp_path: Path) -> None:
    arrays = _pa100k_arrays()
    arrays["val_label"] = np.zeros((3, 4), np.uint8)
    scipy.io.savemat(tmp_path / "annotation.mat", arrays)
    with pytest.raises(UserError, match="val_label has 3 rows"):
        open_dataset(f"pa100k:{tmp_path}", "train")


# ----------------------------------------------------------------------------- PETA


def write_peta(root: Path) -> np.ndarray:
    """A tiny PETA in its layout: PETA.mat (35 + 3 attributes) and images/ (train 3, val 1, test 2); returns
    the raw label columns."""
    n, extra = 6, ["extraA", "extraB", "extraC"]
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 2, size=(n, 35 + len(extra)))
    data = np.concatenate([np.arange(4 * n).reshape(n, 4), raw], axis=1)
    parts = _cell(
        [{"train": np.array([[1], [2], [3]]), "val": np.array([[4]]), "test": np.array([[5], [6]])}] * 5
    )
    peta = {
        "data": data.astype(np.float64),
        "attribute": _cell(PETA_35 + extra),
        "selected_attribute": np.arange(1, 36)[None, :],
        "partion_attribute": parts,
    }
    scipy.io.savemat(root / "PETA.mat", {"peta": peta})
    _images(root / "images", [f"{i:05d}.png" for i in range(1, n + 1)])
    return raw


def test_peta(tmp_path: Path) -> None:
    raw = write_peta(tmp_path)
    expected_names = [PETA_35[i] for i in PETA_GROUP]
    for split, size in {"train": 3, "val": 1, "trainval": 4, "test": 2}.items():
        ds = open_dataset(f"peta:{tmp_path}", split)
        assert ds.attributes == expected_names and len(ds) == size
    assert ds.attributes[0] == "accessoryHat" and ds.attributes[-1] == "personalMale"
    np.testing.assert_array_equal(ds.labels, raw[[4, 5]][:, PETA_GROUP])
    assert [os.path.basename(p) for p in ds.image_paths] == ["00005.png", "00006.png"]


# ----------------------------------------------------------------------------- RAP


RAP1_ATTRS = [f"attr{i}" for i in range(55)]
RAP2_ATTRS = [f"a{i}" for i in range(60)]
RAP2_SELECTED = np.arange(3, 57)  # 1-based: columns 2..55


def write_rap1(root: Path) -> np.ndarray:
    """A tiny RAPv1 in its layout: RAP_annotation/RAP_annotation.mat (55 attributes) and RAP_dataset/
    (trainval 3, test 2); returns the raw labels."""
    n, names = 5, [f"CAM01_2014-02-15_{i:08d}.png" for i in range(5)]
    raw = np.random.default_rng(2).integers(0, 2, size=(n, 55))
    attr = RAP1_ATTRS
    parts = _cell([{"trainval": np.array([[1, 2, 3]]), "test": np.array([[4, 5]])}] * 5)
    rap = {
        "partion": parts,
        "data": raw.astype(np.float64),
        "attribute_chinese": _cell(["x"] * 55),
        "attribute_eng": _cell(attr),
        "position": np.zeros((n, 4)),
        "imagesname": _cell(names),
        "attribute_exp": _cell(attr[:51]),
    }
    (root / "RAP_annotation").mkdir()
    scipy.io.savemat(root / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": rap})
    _images(root / "RAP_dataset", names)
    return raw


def test_rap1(tmp_path: Path) -> None:
    raw, attr = write_rap1(tmp_path), RAP1_ATTRS
    ds = open_dataset(f"rap1:{tmp_path}", "test")
    assert ds.attributes == attr[:51] and len(ds) == 2
    np.testing.assert_array_equal(ds.labels, raw[[3, 4], :51])
    assert len(open_dataset(f"rap1:{tmp_path}", "trainval")) == 3
    with pytest.raises(UserError, match="trainval, test"):
        open_dataset(f"rap1:{tmp_path}", "val")


def write_rap2(root: Path, annotation_folder: str = "") -> np.ndarray:
    """A tiny RAPv2: RAP_annotation.mat (60 attributes, 54 selected) in `annotation_folder` (the release's is
    RAP_annotation/) and RAP_dataset/ (train 3, val 1, test 2); returns the raw labels."""
    n, names = 6, [f"img{i}.png" for i in range(6)]
    raw = np.random.default_rng(3).integers(0, 2, size=(n, 60))
    raw[0, 5] = 2  # RAP uses 2 for "unknown"
    attr, selected = RAP2_ATTRS, RAP2_SELECTED
    parts = np.empty((1, 5), dtype=object)
    for k in range(5):
        parts[0, k] = {
            "train_index": np.array([[1, 2, 3]]),
            "val_index": np.array([[4]]),
            "test_index": np.array([[5, 6]]),
        }
    rap = {
        "name": _cell(names),
        "data": raw.astype(np.float64),
        "attribute": _cell(attr),
        "selected_attribute": selected[None, :],
        "partition_attribute": parts,
    }
    (root / annotation_folder).mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / annotation_folder / "RAP_annotation.mat", {"RAP_annotation": rap})
    _images(root / "RAP_dataset", names)
    return raw


def test_rap2(tmp_path: Path) -> None:
    raw, attr, selected = write_rap2(tmp_path), RAP2_ATTRS, RAP2_SELECTED
    group = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,
             36, 37, 38, 39, 40, 41, 42, 43, 44, 1, 2, 3, 4, 0, 5, 6, 7, 8, 9, 45, 46, 47, 48, 49, 50, 51, 52, 53]  # fmt: skip
    cols = (selected - 1)[group]
    ds = open_dataset(f"rap2:{tmp_path}", "train")
    assert len(ds.attributes) == 54 and ds.attributes == [attr[c] for c in cols]
    assert ds.attributes[0] == "a12"  # selected[10] = 13 (1-based)
    np.testing.assert_array_equal(ds.labels, raw[[0, 1, 2]][:, cols])
    assert ds.labels.max() == 2  # the unknown survives
    assert len(open_dataset(f"rap2:{tmp_path}", "test")) == 2


# ----------------------------------------------------------------------------- pickles


@pytest.fixture
def easydict_module(monkeypatch: pytest.MonkeyPatch) -> type:
    """The real `easydict.EasyDict` if installed, else a stand-in with its pickled shape (items + __dict__)."""
    try:
        import easydict

        return easydict.EasyDict
    except ImportError:
        pass
    mod = types.ModuleType("easydict")

    class EasyDict(dict):
        def __init__(self, d: dict | None = None) -> None:
            super().__init__()
            for k, v in (d or {}).items():
                setattr(self, k, v)

        def __setattr__(self, name: str, value: object) -> None:
            if isinstance(value, dict) and not isinstance(value, EasyDict):
                value = EasyDict(value)
            super().__setattr__(name, value)
            super().__setitem__(name, value)

        __setitem__ = __setattr__

    EasyDict.__module__ = "easydict"
    EasyDict.__qualname__ = "EasyDict"
    mod.EasyDict = EasyDict  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "easydict", mod)
    return EasyDict


def _rethinking_pkl(tmp_path: Path, EasyDict: type, protocol: int = 4) -> tuple[Path, np.ndarray]:
    n = 6
    raw = np.random.default_rng(4).integers(0, 2, size=(n, 40))
    raw[2, 30] = 2
    d = EasyDict()
    d.description = "peta"
    d.root = "/mnt/data1/someone/datasets/PETA/images"  # the author's path: not on this machine
    d.image_name = [f"{i + 1:05}.png" for i in range(n)]
    d.label = raw
    d.attr_name = PETA_35 + [f"extra{i}" for i in range(5)]
    d.label_idx = EasyDict()
    d.label_idx.eval = PETA_GROUP
    d.label_idx.extra = range(35, 40)
    d.partition = EasyDict()
    d.partition.train = [np.array([0, 1, 2])] * 5
    d.partition.val = [np.array([3])] * 5
    d.partition.trainval = [np.array([0, 1, 2, 3])] * 5
    d.partition.test = [np.array([4, 5])] * 5
    d.weight_train = [np.mean(raw[[0, 1, 2]], axis=0)]
    data = pickle.dumps(d, protocol=protocol)
    if protocol == 2:  # text GLOBALs: make it look like the numpy 1.x pickles Rethinking-PAR shipped
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray\n_reconstruct" in data
    path = tmp_path / "dataset_all.pkl"
    path.write_bytes(data)
    _images(tmp_path / "images", d.image_name)
    return path, raw


@pytest.mark.parametrize("protocol", [2, 4])
def test_rethinking_pkl(tmp_path: Path, easydict_module: type, protocol: int) -> None:
    path, raw = _rethinking_pkl(tmp_path, easydict_module, protocol)
    ds = open_dataset(f"pkl:{path}", "train")
    assert ds.attributes == [PETA_35[i] for i in PETA_GROUP]  # label_idx.eval applied
    np.testing.assert_array_equal(ds.labels, raw[[0, 1, 2]][:, PETA_GROUP])
    assert ds.labels.max() == 2  # Rethinking-PAR's 2 stays "unknown"
    assert ds.image_paths[0] == str(tmp_path / "images" / "00001.png")  # root found next to the pickle
    assert len(open_dataset(f"pkl:{path}", "test")) == 2
    assert len(open_dataset(f"pkl:{path}", "trainval")) == 4


def test_openpar_pkl_is_not_reindexed(tmp_path: Path, easydict_module: type) -> None:
    EasyDict = easydict_module
    raw = np.random.default_rng(5).integers(0, 2, size=(4, 35))
    d = EasyDict()
    d.root = str(tmp_path / "images")
    d.image_name = [f"{i + 1:05}.png" for i in range(4)]
    d.label = raw[:, PETA_GROUP]  # OpenPAR stores the reordered 35 columns ...
    d.attr_name = [PETA_35[i] for i in PETA_GROUP]
    d.attributes = ["head hat"] * 35  # ... with its text prompts
    d.label_idx = EasyDict()
    d.label_idx.eval = PETA_GROUP  # ... and a label_idx that must not be applied twice
    d.partition = EasyDict()
    d.partition.test = np.array([1, 3])
    path = tmp_path / "dataset.pkl"
    path.write_bytes(pickle.dumps(d))
    _images(tmp_path / "images", d.image_name)
    ds = open_dataset(f"pkl:{path}", "test")
    assert ds.attributes[0] == "accessoryHat"
    np.testing.assert_array_equal(ds.labels, raw[[1, 3]][:, PETA_GROUP])
    with pytest.raises(UserError, match="no split 'train'"):
        open_dataset(f"pkl:{path}", "train")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("make", ["os_system", "eval", "ndarray_subclass"])
def test_pkl_carrying_code_is_refused(tmp_path: Path, make: str) -> None:
    marker = tmp_path / "pwned"
    if make == "os_system":
        payload = {"image_name": [], "label": _Evil(marker)}
    elif make == "eval":
        payload = {"x": _EvalReduce(f"open({str(marker)!r}, 'w')")}
    else:
        payload = {"label": np.ma.masked_array([1, 2])}  # numpy, but not a plain ndarray
    path = tmp_path / "dataset_all.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UserError, match="refused"):
        open_dataset(f"pkl:{path}", "train")
    assert not marker.exists()


class _EvalReduce:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple:
        return (eval, (self.code,))


def test_truncated_pkl(tmp_path: Path, easydict_module: type) -> None:
    path, _ = _rethinking_pkl(tmp_path, easydict_module)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UserError, match=re.escape(str(path))):
        open_dataset(f"pkl:{path}", "train")


# ----------------------------------------------------------------------------- WIDER


WIDER_ATTRS = ["Male", "longHair", "sunglass", "Hat", "Tshiirt", "longSleeve", "formal", "shorts", "jeans",
               "longPants", "skirt", "faceMask", "logo", "stripe"]  # fmt: skip


def write_wider(root: Path) -> None:
    """A tiny WIDER Attribute in its layout: Anno/wider_attribute_{trainval,test}.json and Image/ (trainval: 3
    people in 2 images, test: 1)."""
    id_map = {str(i): name for i, name in enumerate(WIDER_ATTRS)}
    a = [1, -1, 0] + [-1] * 11
    b = [-1, 1, 1] + [0] * 11
    trainval = {
        "images": [
            {"file_name": "train/0--Parade/a.jpg", "scene_id": 0,
             "targets": [{"attribute": a, "bbox": [2, 3, 10, 20]}, {"attribute": b, "bbox": [30, 5, 8, 12]}]},
            {"file_name": "val/0--Parade/b.jpg", "scene_id": 0, "targets": [{"attribute": b, "bbox": [0, 0, 5, 5]}]},
        ],
        "attribute_id_map": id_map,
        "scene_id_map": {"0": "Parade"},
    }  # fmt: skip
    test = {"images": [{"file_name": "test/0--Parade/c.jpg", "targets": [{"attribute": a, "bbox": [35, 30, 20, 20]}]}],
            "attribute_id_map": id_map}  # fmt: skip
    (root / "Anno").mkdir()
    (root / "Anno" / "wider_attribute_trainval.json").write_text(json.dumps(trainval))
    (root / "Anno" / "wider_attribute_test.json").write_text(json.dumps(test))
    _images(
        root / "Image", ["train/0--Parade/a.jpg", "val/0--Parade/b.jpg", "test/0--Parade/c.jpg"], (40, 40)
    )


def test_wider(tmp_path: Path) -> None:
    write_wider(tmp_path)
    ds = open_dataset(f"wider:{tmp_path}", "train")
    assert ds.attributes == WIDER_ATTRS and len(ds) == 2
    np.testing.assert_array_equal(ds.labels[0], [1, 0, 2] + [0] * 11)  # 1 -> 1, -1 -> 0, 0 -> unknown
    np.testing.assert_array_equal(ds.labels[1], [0, 1, 1] + [2] * 11)
    assert ds[0][0].size == (10, 20) and ds[1][0].size == (8, 12)  # the person box, cropped
    assert len(open_dataset(f"wider:{tmp_path}", "val")) == 1
    assert len(open_dataset(f"wider:{tmp_path}", "trainval")) == 3
    crop = open_dataset(f"wider:{tmp_path}", "test")[0][0]
    assert crop.size == (5, 10)  # box [35, 30, 20, 20] clipped to the 40 x 40 image


# ----------------------------------------------------------------------------- CSV and bad input


def test_csv_with_split_column_and_unknowns(tmp_path: Path) -> None:
    _images(tmp_path / "imgs", ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "labels.csv").write_text(
        "image,Female,Hat,split\nimgs/a.jpg,1,0,train\nimgs/b.jpg,0,,train\nimgs/c.jpg,1,1,test\n"
    )
    ds = open_dataset(f"csv:{tmp_path / 'labels.csv'}", "train")
    assert ds.attributes == ["Female", "Hat"] and len(ds) == 2
    np.testing.assert_array_equal(ds.labels, [[1, 0], [0, 2]])
    np.testing.assert_allclose(ds.pos_ratio(), [0.5, 0.0])  # Hat: 0 positives of 1 known
    assert len(open_dataset(f"csv:{tmp_path / 'labels.csv'}", "test")) == 1
    with pytest.raises(UserError, match="no rows for split 'val'"):
        open_dataset(f"csv:{tmp_path / 'labels.csv'}", "val")


def test_csv_bad_label_names_line(tmp_path: Path) -> None:
    _images(tmp_path, ["a.jpg"])
    (tmp_path / "l.csv").write_text("image,Female\na.jpg,yes\n")
    with pytest.raises(UserError, match=r"l\.csv:2"):
        open_dataset(f"csv:{tmp_path / 'l.csv'}", "train")


def test_corrupt_image_is_skipped_and_counted(tmp_path: Path) -> None:
    _images(tmp_path, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg at all")
    good = (tmp_path / "d.jpg").read_bytes()
    (tmp_path / "d.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "l.csv").write_text("image,Female\na.jpg,1\nb.jpg,0\nc.jpg,1\nd.jpg,0\n")
    ds = open_dataset(f"csv:{tmp_path / 'l.csv'}", "train")
    assert ds[1][1].tolist() == [1.0]  # b is skipped: c (label 1) comes instead, image and label together
    assert ds[3][1].tolist() == [1.0]  # d is skipped: wraps around to a
    assert sorted(os.path.basename(p) for p in ds.skipped) == ["b.jpg", "d.jpg"]


def test_skips_in_dataloader_workers_reach_the_parent(tmp_path: Path) -> None:
    _images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    (tmp_path / "l.csv").write_text("image,Female\na.jpg,1\nb.jpg,0\nc.jpg,1\n")
    from partool.data.transforms import build_transforms

    ds = open_dataset(f"csv:{tmp_path / 'l.csv'}", "train", build_transforms((16, 8), train=False))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1)
    (images, labels), = list(loader)  # fmt: skip
    assert images.shape == (3, 3, 16, 8) and labels[:, 0].tolist() == [1.0, 1.0, 1.0]
    assert [os.path.basename(p) for p in ds.skipped] == ["b.jpg"]


@pytest.mark.parametrize("kind", ["pa100k", "peta", "rap1", "rap2", "wider"])
def test_missing_root_names_the_path(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "no" / "such" / "dir"
    with pytest.raises(UserError, match=re.escape(str(root))):
        open_dataset(f"{kind}:{root}", "test")


@pytest.mark.parametrize("kind", ["pa100k", "peta", "rap2"])
def test_missing_annotation_file_names_it(tmp_path: Path, kind: str) -> None:
    with pytest.raises(UserError, match=r"\.mat"):
        open_dataset(f"{kind}:{tmp_path}", "test")


def test_missing_images_name_the_folder(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "annotation.mat", _pa100k_arrays())
    with pytest.raises(UserError, match=r"000005\.jpg"):
        open_dataset(f"pa100k:{tmp_path}", "test")


def test_garbage_mat_file(tmp_path: Path) -> None:
    (tmp_path / "annotation.mat").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match=r"annotation\.mat"):
        open_dataset(f"pa100k:{tmp_path}", "test")


def test_specs() -> None:
    assert parse_spec("pa100k:/data/PA100k") == ("pa100k", "/data/PA100k")
    assert parse_spec("synth") == ("synth", "")
    for bad in ("imagenet:/x", "pa100k", "synth:abc", "synth:0", ""):
        with pytest.raises(UserError):
            parse_spec(bad)
    with pytest.raises(UserError, match="split"):
        open_dataset("synth", "validation")
