"""The demo end to end at a tiny size, and the clip scoring against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from partool.video import FrameResult, TrackView
from partool.video.scoring import score_clip


def view(track_id, box, raw, on):
    return TrackView(track_id, np.array(box, float), np.array(raw), np.array(raw), np.array(on, bool), True)


def test_score_clip_hand_computed():
    truth = {
        "tracks": {"1": {"attributes": {"Hat": 1, "Bag": 0}}, "2": {"attributes": {"Hat": 0, "Bag": 0}}},
        "frames": [
            {"index": 0, "objects": [{"track_id": 1, "box": [0, 0, 10, 20], "visible": 1.0},
                                     {"track_id": 2, "box": [50, 0, 60, 20], "visible": 0.2}]},
            {"index": 1, "objects": [{"track_id": 1, "box": [1, 0, 11, 20], "visible": 1.0},
                                     {"track_id": 2, "box": [50, 0, 60, 20], "visible": 0.9}]},
        ],
    }  # fmt: skip
    frames = [
        # frame 0: person 1 detected; person 2 is mostly hidden, so it does not count for recall
        FrameResult(0, 0.0, np.array([[0, 0, 10, 20]]), np.array([0.9]),
                    [view(7, [0, 0, 10, 20], [0.9, 0.8], [True, False])]),
        # frame 1: person 1 detected, person 2 missed (IoU with the only box is 0)
        FrameResult(1, 0.1, np.array([[1, 0, 11, 20]]), np.array([0.9]),
                    [view(7, [1, 0, 11, 20], [0.2, 0.1], [True, False])]),
    ]  # fmt: skip
    score = score_clip(truth, frames, threshold=0.5, attributes=["Hat", "Bag"])
    assert score.detection_recall == pytest.approx(2 / 3)  # 3 mostly-visible people-frames, 2 covered
    assert (score.people, score.tracks, score.id_switches) == (2, 1, 0)
    # raw decisions: frame 0 (1, 1) vs truth (1, 0) -> 1 of 2; frame 1 (0, 0) -> 1 of 2
    assert score.attribute_accuracy_raw == pytest.approx(0.5)
    # smoothed decisions (1, 0) both frames -> 4 of 4
    assert score.attribute_accuracy_smoothed == pytest.approx(1.0)
    assert (score.flips_raw, score.flips_smoothed) == (2, 0)
    assert score.scored_decisions == 4


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path):
    from partool.demo import DemoConfig, run_demo

    messages: list[str] = []
    cfg = DemoConfig(out=tmp_path / "demo", train_size=100, epochs=1, img_size=(64, 32), depth=1, embed_dim=48,
                     batch_size=25, clip_seconds=2.0, clip_people=2, log=messages.append)  # fmt: skip
    report = run_demo(cfg)
    out = tmp_path / "demo"
    for name in (
        "report.md",
        "report.json",
        "annotated.mp4",
        "events.jsonl",
        "onnx/model.onnx",
        "run/model.safetensors",
    ):
        assert (out / name).is_file(), name
    text = (out / "report.md").read_text()
    assert "| Vim (ONNX Runtime, portable scan) |" in text and "detection recall" in text
    # the same weights through PyTorch and ONNX Runtime give the same test metrics
    torch_ma, onnx_ma = report["eval_torch"]["metrics"]["ma"], report["eval_onnx"]["metrics"]["ma"]
    assert abs(torch_ma - onnx_ma) < 0.01
    assert report["baseline"]["ma"] == pytest.approx(0.5)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["frames"] == report["video"]["summary"]["frames"]
    # a second run keeps the finished training run instead of training again
    messages.clear()
    run_demo(cfg)
    assert any("reusing the finished run" in m for m in messages)
