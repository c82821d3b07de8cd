"""What the PAR model is shown in video: the detector's framing statistics, training crops drawn from
them, the motion detector keeping people who stand still or walk side by side, and the tracker keeping
who is who."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from partool.artifacts import read_meta
from partool.data.synth import Framing, Person, SynthPAR, draw_person, person_box
from partool.errors import UserError
from partool.train.loop import TrainConfig, train
from partool.video.box_stats import box_stats, clip_box_stats, match_boxes, relative_boxes
from partool.video.detectors import MotionDetector, split_blob
from partool.video.tracking import IoUTracker, iou_matrix

W, H = 320, 180


def test_box_stats_of_known_offsets_and_scales() -> None:
    true = np.array([[0, 0, 10, 20], [100, 50, 140, 130]], np.float32)
    w, h = true[:, 2] - true[:, 0], true[:, 3] - true[:, 1]
    cx, cy = (true[:, 0] + true[:, 2]) / 2 + 0.1 * w, (true[:, 1] + true[:, 3]) / 2 - 0.05 * h
    found = np.stack([cx - 0.6 * w, cy - 0.45 * h, cx + 0.6 * w, cy + 0.45 * h], axis=1)  # 1.2 wide, 0.9 tall
    np.testing.assert_allclose(relative_boxes(true, found), [[0.1, -0.05, 1.2, 0.9]] * 2, atol=1e-6)
    stats = box_stats(true, found)
    assert stats.count == 2
    assert (stats.dx_mean, stats.dy_mean) == pytest.approx((0.1, -0.05), abs=1e-6)
    assert (stats.log_sw_mean, stats.log_sh_mean) == pytest.approx((math.log(1.2), math.log(0.9)), abs=1e-6)
    assert (stats.dx_std, stats.log_sw_std) == pytest.approx((0.0, 0.0), abs=1e-6)
    # spreads: one box shifted right by 0.2 and twice as wide, the other shifted left by 0.2 and half as wide
    box = np.array([[0, 0, 100, 200]] * 2, np.float32)
    spread = box_stats(box, np.array([[-30, 0, 170, 200], [5, 0, 55, 200]], np.float32))
    assert (spread.dx_mean, spread.dx_std) == pytest.approx((0.0, 0.2), abs=1e-6)
    assert (spread.log_sw_mean, spread.log_sw_std) == pytest.approx((0.0, math.log(2)), abs=1e-6)
    assert box_stats(np.zeros((0, 4)), np.zeros((0, 4))).count == 0


def test_clip_box_stats_pairs_matched_detections_only() -> None:
    truth = {
        "frames": [
            {"index": 0, "objects": [{"box": [0, 0, 10, 20], "visible": 1.0},
                                     {"box": [50, 0, 60, 20], "visible": 1.0}]},
            {"index": 1, "objects": [{"box": [0, 0, 10, 20], "visible": 0.3}]},  # mostly hidden: left out
        ]
    }  # fmt: skip
    detections = [
        (0, np.array([[1, 0, 11, 20], [200, 0, 210, 20], [52, 0, 60, 20]], np.float32)),  # one false alarm
        (1, np.array([[0, 0, 10, 20]], np.float32)),
    ]
    stats = clip_box_stats(truth, detections)
    assert stats.count == 2
    assert stats.dx_mean == pytest.approx((0.1 + 0.1) / 2)
    assert stats.log_sw_mean == pytest.approx(math.log(0.8) / 2)
    assert match_boxes(np.array([[0, 0, 10, 20]]), np.array([[5, 0, 15, 20]])) == []  # IoU 1/3 < 0.5


def test_framing_draws_boxes_with_its_parameters() -> None:
    framing = Framing(dx_mean=0.05, dx_std=0.1, dy_mean=-0.02, dy_std=0.03, log_sw_mean=0.1, log_sw_std=0.15,
                      log_sh_mean=0.02, log_sh_std=0.05)  # fmt: skip
    rng = np.random.default_rng(0)
    tight = (10.0, 20.0, 50.0, 120.0)
    found = np.array([framing.box(tight, rng) for _ in range(4000)])
    stats = box_stats(np.array([tight] * len(found)), found)
    for name in ("dx", "dy", "log_sw", "log_sh"):
        mean, std = getattr(framing, f"{name}_mean"), getattr(framing, f"{name}_std")
        assert getattr(stats, f"{name}_mean") == pytest.approx(mean, abs=4 * std / math.sqrt(len(found)))
        assert getattr(stats, f"{name}_std") == pytest.approx(std, rel=0.05)
    # measured statistics turn back into the framing that reproduces them
    again = stats.framing(share=0.5)
    assert again.share == 0.5 and (again.dx_mean, again.log_sw_std) == (stats.dx_mean, stats.log_sw_std)


def _street() -> np.ndarray:
    """A static textured background: the detector must tell people from it."""
    rng = np.random.default_rng(1)
    img = np.full((H, W, 3), 110, np.uint8)
    img[: H // 3] = (170, 150, 120)
    for _ in range(12):
        x, y = int(rng.integers(0, W)), int(rng.integers(0, H // 3))
        cv2.rectangle(img, (x, y), (x + 20, y + 15), tuple(int(v) for v in rng.integers(60, 200, 3)), -1)
    return img


def _scene(walkers: list[tuple[Person, list[float]]], frames: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frames of people walking along x positions (one list per person, feet at y=170, 110 px tall),
    with sensor noise, and their true tight boxes."""
    background, rng = _street(), np.random.default_rng(2)
    for f in range(frames):
        img, boxes = background.copy(), []
        for person, xs in walkers:
            x = xs[f]
            phase = x / 12
            draw_person(img, person, x, 170, 110, phase)
            bx1, by1, bx2, by2 = person_box(person, 110, phase)
            boxes.append((x + bx1, 170 + by1, x + bx2, 170 + by2))
        noisy = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
        yield noisy, np.array(boxes, np.float32)


def _found(detector: MotionDetector, scene: Iterator[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per frame and person: was the person covered by a detection with IoU ≥ 0.5."""
    rows = []
    for index, (frame, truth) in enumerate(scene):
        boxes, _ = detector.detect(frame, index)
        overlap = iou_matrix(truth, boxes)
        rows.append(overlap.max(axis=1) >= 0.5 if overlap.size else np.zeros(len(truth), bool))
    return np.array(rows)


def test_detector_keeps_a_person_who_stops() -> None:
    person = SynthPAR.sample("train", 3)[0]
    empty, walk, stop = 10, 20, 60  # the street alone, walking in, standing still (4 s at 15 FPS), walking on
    xs = [-40.0] * empty + [40.0 + 4 * t for t in range(walk)]
    xs += [xs[-1]] * stop + [xs[-1] + 4 * (t + 1) for t in range(walk)]
    standing = slice(empty + walk, empty + walk + stop)
    found = _found(MotionDetector(), _scene([(person, xs)], len(xs)))[:, 0]
    assert found[standing].mean() > 0.95
    assert found[-walk:].mean() > 0.9  # walks on without a ghost taking their place
    forgetting = _found(MotionDetector(hold=0), _scene([(person, xs)], len(xs)))[:, 0]
    assert forgetting[standing][-20:].mean() < 0.2  # without the hold, the background swallows them


def test_detector_splits_two_people_walking_together() -> None:
    a, b = SynthPAR.sample("train", 3)[0], SynthPAR.sample("train", 8)[0]
    frames = 40
    xs_a = [20.0 + 5 * t for t in range(frames)]
    xs_b = [x + 30 for x in xs_a]  # shoulder to shoulder: one foreground blob
    found = _found(MotionDetector(), _scene([(a, xs_a), (b, xs_b)], frames))[10:]
    assert found.all(axis=1).mean() > 0.8
    unsplit = _found(MotionDetector(head_prominence=2.0), _scene([(a, xs_a), (b, xs_b)], frames))[10:]
    assert unsplit.all(axis=1).mean() < 0.2  # without the split, one box covers both


def test_split_blob_leaves_one_person_whole() -> None:
    for index in range(20):
        person, scene = SynthPAR.sample("val", index)
        mask = np.zeros((140, 120), np.uint8)
        draw_person(mask, person, 60, 130, 110, scene.phase, mask_value=255)
        ys, xs = np.nonzero(mask)
        blob = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] > 0
        assert split_blob(blob, person_aspect=2.7, prominence=0.05) == [(0, 0, blob.shape[1], blob.shape[0])]


def _figure(
    frame: np.ndarray, box: tuple[int, int, int, int], top: tuple[int, int, int], legs: tuple[int, int, int]
) -> None:
    """A person-sized block in two colours (shirt over trousers) at `box`."""
    x1, y1, x2, y2 = box
    frame[y1 : (y1 + y2) // 2, x1:x2] = top
    frame[(y1 + y2) // 2 : y2, x1:x2] = legs


def test_tracker_does_not_hand_a_track_to_someone_who_looks_different() -> None:
    def run(tracker: IoUTracker) -> list[list[int]]:
        ids = []
        for t in range(30):
            frame = np.full((H, W, 3), 90, np.uint8)
            box = (60 + 5 * t, 40, 100 + 5 * t, 140)
            if t < 10:  # someone in red and blue walks right, then behind a pillar ...
                _figure(frame, box, (0, 0, 200), (200, 0, 0))
            elif t >= 16:  # ... and someone in white and green comes out where they would be
                _figure(frame, box, (230, 230, 230), (0, 160, 0))
            seen = t < 10 or t >= 16
            boxes = np.array([box] if seen else np.zeros((0, 4)), np.float32)
            ids.append([tr.id for tr in tracker.update(boxes, np.ones(len(boxes), np.float32), frame)])
        return ids

    ids = run(IoUTracker())
    assert ids[9] == [1] and ids[20] == [2]  # a new person, a new track
    blind = run(IoUTracker(looks=0.0, alike=1.0))
    assert blind[9] == blind[20] == [1]  # by position alone, the newcomer takes over the track


def test_tracker_confirms_people_walking_in_once_they_are_in_view() -> None:
    tracker = IoUTracker(min_hits=3, edge_hits=30)
    frame = np.zeros((H, W, 3), np.uint8)
    confirmed = []
    for t in range(12):
        x = -30 + 6 * t  # cut by the frame's left edge until t = 5
        box = np.array([[max(0, x), 40, x + 40, 140]], np.float32)
        confirmed.append(bool(tracker.update(box, np.ones(1, np.float32), frame)))
    assert confirmed == [False] * 6 + [True] * 6


def test_training_on_detector_framed_crops_is_recorded(tmp_path: Path) -> None:
    tiny = dict(model="vim-t", epochs=1, batch_size=8, img_size=(64, 32), model_kwargs={"depth": 1, "embed_dim": 32},
                workers=0, progress=False, device="cpu")  # fmt: skip
    result = train(
        TrainConfig(data="synth:16", out=tmp_path / "run", detector_framing={"share": 1.0}, **tiny)
    )
    _, meta = read_meta(result.out)
    assert meta["training"]["config"]["detector_framing"] == {"share": 1.0}
    with pytest.raises(UserError, match="detector framing draws SynthPAR crops"):
        train(
            TrainConfig(
                data=f"csv:{tmp_path / 'labels.csv'}", out=tmp_path / "csv", detector_framing={}, **tiny
            )
        )


def test_train_cli_detector_framing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`partool train --detector-framing SHARE` records {"share": SHARE}; a share outside (0, 1] and a
    non-synth dataset exit 2 with one line."""
    from partool.cli.app import main

    tiny = ["train", "--model", "vim-t", "--epochs", "1", "--batch-size", "8", "--img-size", "64x32", "--model-arg",
            "depth=1", "--model-arg", "embed_dim=32", "--workers", "0", "--device", "cpu"]  # fmt: skip

    def exit_code(*argv: str) -> int:
        with pytest.raises(SystemExit) as exit_info:
            main([*tiny, *argv])
        return int(exit_info.value.code or 0)

    run = tmp_path / "run"
    assert exit_code("--data", "synth:16", "--out", str(run), "--detector-framing", "0.25") == 0
    assert read_meta(run)[1]["training"]["config"]["detector_framing"] == {"share": 0.25}
    for share in ("0", "1.5"):
        capsys.readouterr()
        assert (
            exit_code("--data", "synth:16", "--out", str(tmp_path / share), "--detector-framing", share) == 2
        )
        assert "--detector-framing is the share of framed crops" in capsys.readouterr().err
    csv = f"csv:{tmp_path / 'labels.csv'}"
    assert exit_code("--data", csv, "--out", str(tmp_path / "csv"), "--detector-framing", "0.5") == 2
    assert "detector framing draws SynthPAR crops" in capsys.readouterr().err
