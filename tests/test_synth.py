"""SynthPAR: determinism, labels that match what is drawn, and the street clip's ground truth."""

from __future__ import annotations

import colorsys
import json
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from partool.data import open_dataset
from partool.data.street_clip import render_clip
from partool.data.synth import (
    ATTRIBUTES,
    Framing,
    SynthPAR,
    draw_person,
    open_framed,
    person_box,
    render,
    write_samples,
)
from partool.data.transforms import build_transforms
from partool.errors import UserError


def test_deterministic_per_seed_and_disjoint_splits() -> None:
    a = SynthPAR("val", size=40, seed=3)
    b = SynthPAR("val", size=40, seed=3)
    assert len(a) == 10  # val is a quarter of N
    np.testing.assert_array_equal(a.labels, b.labels)
    for i in (0, 7):
        np.testing.assert_array_equal(np.asarray(a.load_image(i)), np.asarray(b.load_image(i)))
    other = SynthPAR("val", size=40, seed=4)
    assert not np.array_equal(np.asarray(a.load_image(0)), np.asarray(other.load_image(0)))
    train = SynthPAR("train", size=40, seed=3)
    assert not np.array_equal(np.asarray(train.load_image(0)), np.asarray(a.load_image(0)))
    tv = SynthPAR("trainval", size=40, seed=3)
    assert len(tv) == 50
    np.testing.assert_array_equal(tv.labels, np.concatenate([train.labels, a.labels]))


def test_spec_sizes_and_transform() -> None:
    assert [len(open_dataset("synth", s)) for s in ("train", "val", "test")] == [2000, 500, 500]
    ds = open_dataset("synth:8", "train", build_transforms((64, 32), train=True))
    img, label = ds[0]
    assert tuple(img.shape) == (3, 64, 32) and float(img.min()) >= -1.0 and float(img.max()) <= 1.0
    assert ds.attributes == list(ATTRIBUTES) and label.tolist() == ds.labels[0].tolist()


def test_labels_are_consistent() -> None:
    labels = SynthPAR("train", size=400).labels
    col = {name: labels[:, i] for i, name in enumerate(ATTRIBUTES)}
    np.testing.assert_array_equal(col["Trousers"] + col["Shorts"] + col["Skirt&Dress"], 1)
    assert not (col["UpperDark"] & col["UpperRed"]).any()
    # every attribute occurs, none always: the task is not degenerate
    assert ((labels.mean(0) > 0.05) & (labels.mean(0) < 0.95)).all()


def _hsv(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    return h * 360, s, v


def test_colour_labels_match_colour_categories() -> None:
    for i in range(300):
        p, _ = SynthPAR.sample("train", i)
        h, s, v = _hsv(p.upper_rgb)
        red = (h <= 10 or h >= 348) and s >= 0.6 and v >= 0.5
        assert red == (p.upper_kind == "red"), (i, p.upper_rgb)
        assert (v <= 0.3) == (p.upper_kind == "dark"), (i, p.upper_rgb)
        assert (_hsv(p.lower_rgb)[2] <= 0.3) == p.lower_dark


def test_colour_labels_show_in_the_image() -> None:
    ds = SynthPAR("train", size=200)
    red_col, dark_col = ATTRIBUTES.index("UpperRed"), ATTRIBUTES.index("UpperDark")
    redness: dict[int, list[float]] = {0: [], 1: []}
    value: dict[int, list[float]] = {0: [], 1: []}
    for i, (_, sc) in enumerate(ds.items):
        img = np.asarray(ds.load_image(i)).astype(np.float64)
        top = sc.foot_y - sc.height
        y1, y2 = round(top + 0.2 * sc.height), round(top + 0.3 * sc.height)
        x1, x2 = round(sc.cx - 0.05 * sc.height), round(sc.cx + 0.05 * sc.height)
        r, g, b = np.median(img[y1:y2, x1:x2].reshape(-1, 3), axis=0)
        redness[int(ds.labels[i, red_col])].append(r - (g + b) / 2)
        value[int(ds.labels[i, dark_col])].append(max(r, g, b))
    assert np.median(redness[1]) > 80 and np.median(redness[0]) < 20
    assert np.mean(np.array(redness[1]) > 50) > 0.8
    assert np.median(value[1]) < 80 and np.median(value[0]) > 140


@pytest.mark.parametrize(
    ("field", "value", "columns"),
    [
        ("female", None, ["Female"]),
        ("long_hair", None, ["LongHair"]),
        ("hat", None, ["Hat"]),
        ("glasses", None, ["Glasses"]),
        ("backpack", None, ["Backpack"]),
        ("handbag", None, ["HandBag"]),
        ("long_sleeve", None, ["LongSleeve"]),
        ("stripes", None, ["UpperStride"]),
        ("lower_dark", None, ["LowerDark"]),
        ("lower", "skirt", ["Trousers", "Skirt&Dress"]),
        ("lower", "shorts", ["Trousers", "Shorts"]),
        ("upper_kind", "red", ["UpperRed"]),
        ("upper_kind", "dark", ["UpperDark"]),
    ],
)
def test_each_person_field_drives_its_named_label(field: str, value: object, columns: list[str]) -> None:
    base = replace(SynthPAR.sample("train", 0)[0], lower="trousers", upper_kind="other")
    flipped = replace(base, **{field: (not getattr(base, field)) if value is None else value})
    changed = [ATTRIBUTES[j] for j in np.nonzero(base.labels() != flipped.labels())[0]]
    assert changed == columns


def _diff_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 0


def test_hat_changes_only_the_head_region() -> None:
    changed = 0
    for i in range(30):
        p, sc = SynthPAR.sample("test", i)
        with_hat, without = render(replace(p, hat=True), sc), render(replace(p, hat=False), sc)
        diff = _diff_mask(with_hat, without)
        x1, y1, x2, y2 = sc.head_box()
        outside = diff.copy()
        outside[max(0, y1 - 2) : y2 + 2, max(0, x1 - 2) : x2 + 2] = False  # 2 px for the optional blur
        assert not outside.any(), f"sample {i}: the hat changed pixels outside the head box"
        changed += int(diff[max(0, y1) : y2, max(0, x1) : x2].sum() >= 4)
    assert changed >= 25  # all but the few whose head an occluder hides


@pytest.mark.parametrize(
    ("field", "on", "off", "region"),
    [
        ("glasses", True, False, "head"),
        ("long_hair", True, False, "upper"),
        ("backpack", True, False, "upper"),
        ("long_sleeve", True, False, "upper"),
        ("stripes", True, False, "upper"),
        ("handbag", True, False, "any"),
        ("female", True, False, "any"),
        ("lower", "skirt", "trousers", "lower"),
        ("lower", "shorts", "trousers", "lower"),
    ],
)
def test_each_attribute_is_drawn_where_it_belongs(field: str, on: object, off: object, region: str) -> None:
    visible = 0
    for i in range(12):
        p, sc = SynthPAR.sample("val", i)
        diff = _diff_mask(render(replace(p, **{field: on}), sc), render(replace(p, **{field: off}), sc))
        top = sc.foot_y - sc.height
        ys = np.nonzero(diff)[0]
        if ys.size < 3:
            continue  # hidden by an occluder
        visible += 1
        if region == "head":
            assert ys.max() <= top + 0.14 * sc.height + 2
        elif region == "upper":
            assert (
                ys.max() <= top + 0.62 * sc.height + 2
            )  # hair, straps, sleeves, stripes stay above the hips
        elif region == "lower":
            assert ys.min() >= top + 0.40 * sc.height - 2  # garments below the waist
    assert visible >= 9


def test_clip_ground_truth(tmp_path: Path) -> None:
    truth = render_clip(
        str(tmp_path / "street.mp4"), seconds=3.0, fps=8, size=(320, 180), seed=5, num_people=3
    )
    files = sorted(os.listdir(tmp_path))
    assert files == sorted([truth["video"], "street.json"])  # no temporary files left behind
    assert json.loads((tmp_path / "street.json").read_text()) == truth
    assert truth["num_frames"] == 24 and len(truth["frames"]) == 24
    cap = cv2.VideoCapture(str(tmp_path / truth["video"]))
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    assert len(decoded) == 24 and decoded[0].shape == (180, 320, 3)

    labels = SynthPAR("train", size=1).attributes
    assert truth["attributes"] == labels and set(truth["tracks"]) == {"1", "2", "3"}
    centres: dict[int, list[float]] = {}
    seen_occlusion = False
    for fr in truth["frames"]:
        for obj in fr["objects"]:
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 180
            assert 0.0 <= obj["visible"] <= 1.0
            seen_occlusion |= obj["visible"] < 0.9
            centres.setdefault(obj["track_id"], []).append((x1 + x2) / 2)
            # the person is really there: the box differs from the empty street of frame 0
            patch = np.abs(
                decoded[fr["index"]][y1:y2, x1:x2].astype(int) - decoded[0][y1:y2, x1:x2].astype(int)
            )
            if obj["visible"] > 0.5 and (x2 - x1) * (y2 - y1) > 200 and not truth["frames"][0]["objects"]:
                assert patch.mean() > 10
    assert seen_occlusion, "tracks 1 and 2 walk towards each other and must cross"
    for track, xs in centres.items():
        steps = np.diff(xs)
        assert (steps >= -1).all() or (steps <= 1).all(), f"track {track} must walk one way"
        assert len(xs) >= 4
    again = render_clip(
        str(tmp_path / "again.mp4"), seconds=3.0, fps=8, size=(320, 180), seed=5, num_people=3
    )
    assert again["frames"] == truth["frames"] and again["tracks"] == truth["tracks"]


def test_write_samples_round_trips_through_csv(tmp_path: Path) -> None:
    csv_path = write_samples(str(tmp_path), count=4)
    ds = open_dataset(f"csv:{csv_path}", "test")
    np.testing.assert_array_equal(ds.labels, SynthPAR("train", size=4).labels)
    assert ds.attributes == list(ATTRIBUTES)
    np.testing.assert_array_equal(np.asarray(ds[2][0]), np.asarray(SynthPAR("train", size=4).load_image(2)))


def test_detector_framing_is_opt_in_and_keeps_the_people() -> None:
    person, scene = SynthPAR.sample("train", 4)
    plain = render(person, scene)
    np.testing.assert_array_equal(render(person, scene, framing=None), plain)
    np.testing.assert_array_equal(render(person, scene, framing=Framing(share=0.0)), plain)
    framed = render(person, scene, framing=Framing())
    assert framed.shape == plain.shape and not np.array_equal(framed, plain)
    np.testing.assert_array_equal(render(person, scene, framing=Framing()), framed)  # deterministic
    ds, framed_ds = SynthPAR("train", size=8), SynthPAR("train", size=8, framing=Framing(share=0.5))
    np.testing.assert_array_equal(framed_ds.labels, ds.labels)
    same = [
        np.array_equal(np.asarray(ds.load_image(i)), np.asarray(framed_ds.load_image(i))) for i in range(8)
    ]
    assert 0 < sum(same) < 8  # about half the samples framed, the others exactly as before


def test_framing_without_jitter_crops_the_tight_box() -> None:
    person, scene = SynthPAR.sample("val", 2)
    exact = Framing(dx_mean=0, dx_std=0, dy_mean=0, dy_std=0, log_sw_mean=0, log_sw_std=0, log_sh_mean=0,
                    log_sh_std=0)  # fmt: skip
    x1, y1, x2, y2 = exact.box(person_box(person, 180.0, scene.phase), np.random.default_rng(0))
    mask = np.zeros((round(y2 - y1), round(x2 - x1)), np.uint8)
    draw_person(mask, person, -x1, -y1, 180.0, scene.phase, mask_value=255)
    ys, xs = np.nonzero(mask)  # the silhouette touches all four sides of the crop
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, mask.shape[1], mask.shape[0])


def test_open_framed_refuses_other_datasets_and_unknown_fields(tmp_path: Path) -> None:
    ds = open_framed("synth:8", "train", None, {"share": 0.25, "zoom": [1.0, 1.2]})
    assert ds.framing == Framing(share=0.25, zoom=(1.0, 1.2)) and len(ds) == 8
    with pytest.raises(UserError, match="not synth"):
        open_framed(f"csv:{tmp_path / 'labels.csv'}", "train", None, {})
    with pytest.raises(UserError, match="unknown detector framing field"):
        open_framed("synth:8", "train", None, {"jitter": 0.1})
