"""The demo end to end at a tiny size, and the clip scoring and the search check against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from partool.cli.app import main
from partool.video import FrameResult, TrackView
from partool.video.event_store import EventStoreSink, open_store
from partool.video.query import find_tracks
from partool.video.scoring import score_clip
from partool.video.search_check import check_search, pick_query


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


def people(*attributes: list[str], names=("Female", "Backpack", "Hat", "Skirt&Dress")) -> dict:
    """A truth whose person k + 1 has attributes[k] on."""
    return {
        "tracks": {
            str(k + 1): {"attributes": {n: int(n in on) for n in names}} for k, on in enumerate(attributes)
        }
    }


def test_the_demo_query_comes_from_the_truth():
    names = ["Female", "Backpack", "Hat", "Skirt&Dress"]
    four = people(["Female", "Backpack"], ["Female"], ["Backpack"], ["Female", "Backpack", "Hat"])
    assert pick_query(four, names) == "Female & Backpack"  # 2 of 4 people: at most half
    assert pick_query(four, ["Hat", "Female", "Backpack"]) == "Hat & Female"  # the first pair that fits
    # no pair holds for anybody: the first single attribute that holds for one of the two
    assert pick_query(people(["Female"], ["Backpack"]), names) == "Female"
    # with each attribute's reliability, the fitting pair whose weaker attribute is the most reliable:
    # Female & Backpack (min 0.6) and Female & Hat (0.9) fit, Backpack & Hat holds for one person too (0.6)
    reliability = {"Female": 0.95, "Backpack": 0.6, "Hat": 0.9}
    assert pick_query(four, names, reliability) == "Female & Hat"
    # ties keep the attribute order; an attribute without a figure counts as unreliable
    assert pick_query(four, names, {"Female": 0.7, "Backpack": 0.7, "Hat": 0.7}) == "Female & Backpack"
    assert pick_query(four, names, {"Female": 0.9, "Backpack": 0.8}) == "Female & Backpack"
    # names holding an operator are quoted
    assert (
        pick_query(people(["Skirt&Dress", "Hat"], [], ["Hat"]), ["Skirt&Dress", "Hat"])
        == '"Skirt&Dress" & Hat'
    )


def test_a_search_checked_against_the_truth(tmp_path):
    truth = people(["Female", "Backpack"], ["Female"], ["Backpack"], ["Female", "Backpack", "Hat"])
    db = tmp_path / "events.db"
    sink = EventStoreSink(db)
    probs = {"Female": 0.9, "Backpack": 0.8, "Hat": 0.1, "Skirt&Dress": 0.2}
    # (stream, track, attributes given): 10 follows person 1, 11 person 2 (no backpack), 12 person 4 (its
    # backpack missed), 13 nobody (a false detection); 14 is on another stream
    tracks = [("street", 10, ["Female", "Backpack"]), ("street", 11, ["Female", "Backpack"]),
              ("street", 12, ["Female"]), ("street", 13, ["Female", "Backpack"]), ("other", 14, ["Female", "Backpack"])]  # fmt: skip
    for i, (stream, track, on) in enumerate(tracks):
        record = {"stream": stream, "track": track, "box": [0, 0, 10, 20], "attributes": on, "probs": probs}
        sink.event({**record, "event": "track_appeared", "time": float(i), "frame": i})
        sink.event({**record, "event": "track_left", "time": i + 1.0, "frame": i + 10, "reason": "lost"})
    sink.close()
    conn = open_store(db)

    def answer(query: str) -> list:
        return find_tracks(conn, query, ["street"]).tracks

    check = check_search(
        "Female & Backpack", answer("Female & Backpack"), truth, {10: 1, 11: 2, 12: 4, 14: 1}
    )
    nobody = check_search('"Skirt&Dress"', answer('"Skirt&Dress"'), truth, {10: 1})
    conn.close()
    assert (nobody.returned, nobody.expected, nobody.precision, nobody.recall) == ([], [], None, None)
    assert check.expected == [1, 4] and check.people == 4
    assert [(r.track, r.person, r.person_matches) for r in check.returned] == [
        (10, 1, True), (11, 2, False), (13, None, False)
    ]  # fmt: skip
    assert (check.found, check.missed) == ([1], [4])
    assert check.precision == pytest.approx(1 / 3) and check.recall == pytest.approx(1 / 2)


def test_the_demo_builds_missing_cpu_kernels_or_says_why_it_trains_without(monkeypatch):
    import partool.ops
    import partool.plugins
    from partool.demo import DemoConfig, _cpu_kernels
    from partool.errors import UserError

    messages: list[str] = []
    cfg = DemoConfig(log=messages.append)
    built: list[object] = []
    monkeypatch.setattr(partool.ops, "available_backends", lambda: {"cpu": bool(built)})
    monkeypatch.setattr(partool.plugins, "build_plugins", lambda **kw: built.append(kw))
    assert _cpu_kernels(cfg) == {"backend": "cpu", "built": True}
    assert built == [{"cuda_archs": None, "quiet": True}]  # CPU only: seconds, not the CUDA build's minutes
    assert _cpu_kernels(cfg) == {"backend": "cpu", "built": False}  # found: nothing to build
    assert len(built) == 1

    def no_cmake(**_kw):
        raise UserError("cmake not found on PATH")

    built.clear()
    monkeypatch.setattr(partool.plugins, "build_plugins", no_cmake)
    assert _cpu_kernels(cfg) == {"backend": "chunked", "built": False, "why": "cmake not found on PATH"}
    assert "training on the PyTorch scan" in messages[-1] and "cmake not found" in messages[-1]


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path, capsys):
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
        "events.db",
        "gallery.html",
        "onnx/model.onnx",
        "run/model.safetensors",
    ):
        assert (out / name).is_file(), name
    assert not (out / "events.db.partial").exists()
    text = (out / "report.md").read_text()
    assert "| Vim (ONNX Runtime, portable scan) |" in text and "detection recall" in text
    # the report's search is the one `partool search` answers over events.db
    search = report["video"]["search"]
    assert f"## Search: who walked by with `{search['query']}`?" in text
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(out / "events.db"), search["query"], "--json"])
    assert exit_info.value.code == 0
    answer = json.loads(capsys.readouterr().out)
    assert [t["track"] for t in answer["tracks"]] == [t["track"] for t in search["returned"]]
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
