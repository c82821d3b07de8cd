"""`partool train --protocol paper`: trainval → test, threshold 0.45, best mA / Acc / F1 each over epochs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from test_train import TINY as TRAIN_TINY

from partool.artifacts import read_meta
from partool.cli.app import main
from partool.data import open_dataset
from partool.data.transforms import build_transforms
from partool.evaluate import evaluate, torch_predict_fn
from partool.models.run_folder import load_run
from partool.train.loop import TrainConfig, train
from partool.train.protocol import best_per_metric

# test_train's tiny Vim, smaller still. synth:16 has 16 train, 4 val and 4 test images (N, N/4, N/4): trainval is 20.
TINY = {
    **TRAIN_TINY,
    "data": "synth:16",
    "epochs": 2,
    "img_size": (32, 16),
    "model_kwargs": {"depth": 1, "embed_dim": 32},
}
TINY_ARGS = ("--model", "vim-t", "--model-arg", "depth=1", "--model-arg", "embed_dim=32", "--img-size", "32x16",
             "--epochs", "1", "--workers", "0", "--device", "cpu")  # fmt: skip


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_best_of_each_metric_comes_from_its_own_epoch() -> None:
    """mA peaks in epoch 2, Acc in 3, instance F1 in 1; Rethinking-PAR's f1 (peaking in 4) is not the paper's F1."""
    history = [
        {"epoch": 1, "ma": 0.70, "acc": 0.60, "f1": 0.70, "f1_instance": 0.81},
        {"epoch": 2, "ma": 0.75, "acc": 0.61, "f1": 0.71, "f1_instance": 0.78},
        {"epoch": 3, "ma": 0.72, "acc": 0.66, "f1": 0.72, "f1_instance": 0.79},
        {"epoch": 4, "ma": 0.75, "acc": 0.50, "f1": 0.90, "f1_instance": 0.60},  # ties epoch 2's mA
    ]
    assert best_per_metric(history, ("ma", "acc", "f1_instance")) == {
        "ma": {"value": 0.75, "epoch": 2},  # the first epoch to reach the best, as `>` over epochs keeps it
        "acc": {"value": 0.66, "epoch": 3},
        "f1_instance": {"value": 0.81, "epoch": 1},
    }
    assert best_per_metric([], ("ma",)) == {}


def test_paper_run_trains_on_trainval_reports_on_test_at_045(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stopped after epoch 1 and resumed by the CLI (which passes --protocol default): the run stays `paper`."""
    out = tmp_path / "paper"
    train(TrainConfig(out=out, protocol="paper", stop_after_epoch=1, **TINY))
    code, stdout, _ = _cli(capsys, "train", "--resume", "--out", str(out))
    assert code == 0

    _, meta = read_meta(out)
    info = meta["training"]
    assert meta["threshold"] == 0.45
    assert info["protocol"] == {
        "name": "paper",
        "train_split": "trainval",
        "val_split": "test",
        "threshold": 0.45,
    }
    assert (info["train_images"], info["val_images"]) == (20, 4)
    history = info["history"]
    assert [h["epoch"] for h in history] == [1, 2] and info["finished"]
    for key in ("ma", "acc", "f1_instance"):
        top = max(h[key] for h in history)
        first = next(h["epoch"] for h in history if h[key] == top)
        assert info["best_of_each"][key] == {"value": pytest.approx(top), "epoch": first}, key

    # The saved (best-mA) weights, evaluated on test at 0.45 by another code path, give that epoch's row.
    model, meta = load_run(out)
    test = open_dataset("synth:16", "test", build_transforms(meta["input_size"], meta["mean"], meta["std"]))
    metrics = evaluate(torch_predict_fn(model), test, threshold=0.45)
    best_row = next(h for h in history if h["epoch"] == info["best_epoch"])
    for key in ("ma", "acc", "f1_instance"):
        assert getattr(metrics, key) == pytest.approx(best_row[key], abs=1e-6), key

    lines = stdout.splitlines()
    for key, label in (("ma", "mA"), ("acc", "Acc"), ("f1_instance", "F1 (instance)")):
        best = info["best_of_each"][key]
        row = next(line for line in lines if f" {label} " in line)
        assert f"{100 * best['value']:.2f}" in row and row.split()[-2] == str(best["epoch"]), row
    assert "protocol: paper (trainval → test, threshold 0.45, best of each metric over epochs)" in stdout


def test_paper_protocol_refuses_what_it_cannot_honour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_test = tmp_path / "only_test.csv"
    only_test.write_text("image,hat,bag,split\na.png,0,1,test\nb.png,1,0,test\n")
    for name in ("a.png", "b.png"):
        Image.new("RGB", (16, 32)).save(tmp_path / name)
    cases = [
        (("--data", f"csv:{only_test}"), ("csv:", "no usable 'trainval' split", "with --protocol default")),
        (
            ("--data", "synth:8", "--val-split", "val"),
            ("fixes --val-split test, got val", "--protocol default"),
        ),
        (("--data", "synth:8", "--threshold", "0.5"), ("fixes --threshold 0.45, got 0.5",)),
        (("--data", "synth:8", "--protocol", "papers"), ("unknown --protocol 'papers'", "default, paper")),
    ]
    for extra, needles in cases:
        argv = ("train", *TINY_ARGS, "--protocol", "paper", "--out", str(tmp_path / "r"), *extra)
        code, _, err = _cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2, extra
        assert len(lines) == 1 and lines[0].startswith("partool: error:"), (extra, err)
        assert all(needle in lines[0] for needle in needles), (extra, err)
    assert not (tmp_path / "r").exists()  # a refused run leaves nothing behind


def test_default_protocol_lets_explicit_splits_and_threshold_win(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, _ = _cli(capsys, "train", *TINY_ARGS, "--data", "synth:8", "--val-split", "test",
                           "--threshold", "0.3", "--out", str(tmp_path / "r"), "--json")  # fmt: skip
    assert code == 0
    result = json.loads(stdout)
    assert result["protocol"] == {
        "name": "default",
        "train_split": "train",
        "val_split": "test",
        "threshold": 0.3,
    }
    assert read_meta(tmp_path / "r")[1]["threshold"] == 0.3
