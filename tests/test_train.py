"""Training, resume, artifacts, eval and predict on a tiny SynthPAR run (CPU, seconds)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from partool.artifacts import META, WEIGHTS, read_meta
from partool.errors import UserError
from partool.models import create_model
from partool.models.run_folder import load_run, save_run
from partool.train.checkpoint import LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from partool.train.loop import TrainConfig, train
from partool.train.recipe import lr_at, recipe_for

# A Vim small enough to train 3 epochs on 32 images in a few seconds on 2 cores.
TINY = dict(
    model="vim-t",
    data="synth:32",
    epochs=3,
    batch_size=8,
    img_size=(64, 32),
    lr=1e-3,
    optimizer="adamw",
    warmup_epochs=1,
    model_kwargs={"depth": 2, "embed_dim": 64, "drop_path_rate": 0.1},
    workers=0,
    progress=False,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One uninterrupted 3-epoch run, and one stopped after epoch 1 then resumed to epoch 3."""
    root = tmp_path_factory.mktemp("runs")
    full = train(TrainConfig(out=root / "full", **TINY))
    first = train(TrainConfig(out=root / "resumed", stop_after_epoch=1, **TINY))
    rest = train(TrainConfig(out=root / "resumed", resume=True, **TINY))
    return {"full": full, "first": first, "rest": rest, "root": root}


@pytest.mark.slow
def test_loss_falls_and_run_folder_is_complete(runs: dict[str, object]) -> None:
    full = runs["full"]
    losses = [h["train_loss"] for h in full.history]
    assert [h["epoch"] for h in full.history] == [1, 2, 3]
    assert losses[-1] < losses[0] - 0.3, losses
    out = Path(full.out)
    for name in (WEIGHTS, META, LAST, "metrics.csv", "loss.png", "ma.png"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    csv = (out / "metrics.csv").read_text().splitlines()
    assert csv[0].startswith("epoch,lr,train_loss,val_loss,ma,") and len(csv) == 4
    _, meta = read_meta(out)
    assert meta["model"] == "vim-t" and meta["input_size"] == [64, 32] and meta["data"] == "synth:32"
    assert meta["model_kwargs"] == TINY["model_kwargs"] and len(meta["attributes"]) == 14
    assert meta["training"]["finished"] and meta["training"]["best_epoch"] == full.best_epoch
    assert meta["training"]["best_ma"] == pytest.approx(max(h["ma"] for h in full.history))
    # The default protocol: train -> val (synth:32 has 32 and 8 images), threshold 0.5.
    assert meta["threshold"] == 0.5 and full.protocol == meta["training"]["protocol"]
    assert full.protocol == {"name": "default", "train_split": "train", "val_split": "val", "threshold": 0.5}
    assert (meta["training"]["train_images"], meta["training"]["val_images"]) == (32, 8)


def test_kill_and_resume_ends_with_identical_weights(runs: dict[str, object]) -> None:
    first, rest, full = runs["first"], runs["rest"], runs["full"]
    assert first.epochs_done == 1 and not first.finished
    assert rest.epochs_done == 3 and rest.finished
    a = load_checkpoint(Path(full.out) / LAST)["model"]
    b = load_checkpoint(Path(rest.out) / LAST)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    drop = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [drop(h) for h in rest.history] == [drop(h) for h in full.history]


def test_last_pt_loads_weights_only_and_restores_rng(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    save_checkpoint(tmp_path / LAST, {"rng": rng_state(), "epoch": 7})
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    state = torch.load(tmp_path / LAST, weights_only=True)  # plain containers and tensors only
    assert state["epoch"] == 7
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    set_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def test_damaged_or_missing_resume_state_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nothing to resume"):
        load_checkpoint(tmp_path / LAST)
    (tmp_path / LAST).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read resume state"):
        load_checkpoint(tmp_path / LAST)


def test_refuses_to_overwrite_a_run(runs: dict[str, object]) -> None:
    with pytest.raises(UserError, match="already holds a finished run"):
        train(TrainConfig(out=runs["full"].out, **TINY))


def test_schedule_matches_timm_cosine_scheduler() -> None:
    """The authors step timm's CosineLRScheduler once per epoch; lr_at must give the same numbers."""
    from timm.scheduler import CosineLRScheduler

    recipe = recipe_for("vim").with_overrides(epochs=12)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.lr)
    sched = CosineLRScheduler(
        opt,
        t_initial=recipe.epochs,
        lr_min=0.002 * recipe.lr,
        warmup_t=5,
        warmup_lr_init=0.01 * recipe.lr,
        cycle_limit=1,
        t_in_epochs=True,
    )
    for epoch in range(1, recipe.epochs + 2):
        sched.step(epoch)
        assert lr_at(recipe, epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), epoch
    with pytest.raises(UserError, match="--epochs"):
        recipe.with_overrides(epochs=0)


def test_artifacts_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("vim-t", 5, img_size=(32, 16), depth=1, embed_dim=32).eval()
    with torch.no_grad():  # non-default BatchNorm statistics must survive too
        model.head.bn.running_mean.uniform_(-1, 1)
        model.head.bn.running_var.uniform_(0.5, 2)
    meta = {
        "model": "vim-t",
        "model_kwargs": {"depth": 1, "embed_dim": 32},
        "attributes": list("abcde"),
        "input_size": [32, 16],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "threshold": 0.5,
        "data": "synth",
        "partool_version": "test",
    }
    save_run(tmp_path, model, meta)
    loaded, meta2 = load_run(tmp_path / META, "cpu")
    x = torch.randn(3, 3, 32, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta2 == meta
    (tmp_path / META).write_text("{broken")
    with pytest.raises(UserError, match=r"cannot read .*partool\.json"):
        load_run(tmp_path)
    (tmp_path / META).write_text(json.dumps(meta))
    (tmp_path / WEIGHTS).unlink()
    with pytest.raises(UserError, match=r"model\.safetensors is missing"):
        load_run(tmp_path)


# --- CLI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli() -> object:
    """partool's `main`, with train/eval/predict registered if app.py does not register them yet."""
    from partool.cli import eval_cmd, predict_cmd, train_cmd
    from partool.cli.app import app, main

    have = {c.name for c in app.registered_commands}
    for module, name in ((train_cmd, "train"), (eval_cmd, "eval"), (predict_cmd, "predict")):
        if name not in have:
            module.register(app)
    return main


def _run(cli: object, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli(list(argv))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_eval_json_matches_the_training_validation(
    runs: dict[str, object], cli: object, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`partool eval --split val` recomputes, by another code path, the best epoch's validation metrics."""
    full = runs["full"]
    code, out, _ = _run(cli, capsys, "eval", str(full.out), "--split", "val", "--device", "cpu",
                        "--workers", "0", "--out", str(tmp_path), "--json")  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert report["num_images"] == 8 and report["split"] == "val"
    for key in ("ma", "acc", "prec", "recall", "f1", "f1_instance"):
        assert report["metrics"][key] == pytest.approx(full.best_metrics[key], abs=1e-6), key
    mas = [r["ma"] for r in report["per_attribute"]]
    assert mas == sorted(mas, reverse=True) and np.mean(mas) == pytest.approx(report["metrics"]["ma"])
    assert Path(report["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = _run(cli, capsys, "eval", str(full.out), "--split", "test", "--device", "cpu",
                        "--workers", "0", "--out", str(tmp_path))  # fmt: skip
    assert code == 0 and "mA" in out and "per attribute" in out and "Skirt&Dress" in out


def test_predict_json_lists_attributes_above_threshold(
    runs: dict[str, object], cli: object, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from partool.data import open_dataset
    from partool.data.synth import write_samples
    from partool.data.transforms import build_transforms

    write_samples(str(tmp_path), count=2)
    pngs = sorted(tmp_path.glob("*.png"))
    code, out, _ = _run(cli, capsys, "predict", str(runs["full"].out), *map(str, pngs),
                        "--threshold", "0.4", "--device", "cpu", "--json")  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert [r["image"] for r in report["images"]] == list(map(str, pngs))
    model, meta = load_run(runs["full"].out)
    data = open_dataset("synth", "train", build_transforms(meta["input_size"], meta["mean"], meta["std"]))
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.stack([data[0][0], data[1][0]]))).numpy()
    for row, probs in zip(report["images"], expected, strict=True):
        got = np.array([row["probs"][a] for a in meta["attributes"]])
        np.testing.assert_allclose(got, probs, atol=1e-5)
        above = [a["name"] for a in row["attributes"]]
        assert set(above) == {a for a, p in zip(meta["attributes"], probs, strict=True) if p > 0.4}
        assert [a["prob"] for a in row["attributes"]] == sorted(
            (a["prob"] for a in row["attributes"]), reverse=True
        )


def test_bad_input_exits_2_with_one_line(
    runs: dict[str, object], cli: object, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad_image = tmp_path / "broken.jpg"
    bad_image.write_bytes(b"not an image")
    run = str(runs["full"].out)
    cases = [
        (("train", "--model", "vim-t", "--data", f"pa100k:{tmp_path / 'nowhere'}", "--out", str(tmp_path / "r")), "nowhere"),
        (("train", "--model", "vim-t", "--data", "imagenet:/x", "--out", str(tmp_path / "r")), "unknown dataset spec"),
        (("train", "--model", "vim-t", "--data", "synth", "--img-size", "256by128"), "--img-size"),
        (("eval", str(tmp_path / "no-run"), "--data", "synth"), "does not exist"),
        (("eval", run, "--data", "peta:/missing/PETA"), "/missing/PETA"),
        (("predict", run, str(bad_image)), "broken.jpg"),
        (("predict", run, str(tmp_path / "missing.png")), "missing.png"),
    ]  # fmt: skip
    for argv, needle in cases:
        code, _, err = _run(cli, capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2, argv
        assert len(lines) == 1 and lines[0].startswith("partool: error:") and needle in lines[0], (argv, err)
    assert not (tmp_path / "r").exists()  # a refused run leaves nothing behind
