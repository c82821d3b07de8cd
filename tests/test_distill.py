"""Distillation for deployment: the KDTM loss, the teacher wrapper, distilled runs, resume and bad teachers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from partool.artifacts import META, read_meta
from partool.models.run_folder import load_run
from partool.train.checkpoint import LAST, load_checkpoint
from partool.train.distill import Teacher, distillation_loss, load_teacher
from partool.train.loop import TrainConfig, train

TINY = dict(
    data="synth:60",
    batch_size=10,
    lr=1e-3,
    optimizer="adamw",
    warmup_epochs=0,
    workers=0,
    progress=False,
)
VIM1 = {"depth": 1, "embed_dim": 32, "drop_path_rate": 0.0}


def test_loss_is_bce_plus_weighted_mse_of_logits() -> None:
    student = torch.tensor([[1.0, -2.0], [0.0, 3.0]], requires_grad=True)
    teacher = torch.tensor([[0.5, 0.0], [1.0, 3.0]], requires_grad=True)
    base = torch.tensor(0.3)
    loss = distillation_loss(base, student, teacher, weight=2.0)
    # squared differences 0.25, 4, 1, 0 -> mean 5.25 / 4 = 1.3125; 0.3 + 2 * 1.3125 = 2.925
    assert loss.item() == pytest.approx(2.925)
    loss.backward()
    # d/ds of 2 * mean((s - t)^2) = 4 (s - t) / 4 = s - t; nothing flows into the teacher
    assert torch.allclose(student.grad, torch.tensor([[0.5, -2.0], [-1.0, 0.0]]))
    assert teacher.grad is None
    with pytest.raises(ValueError):
        distillation_loss(base, student, teacher[:, :1], 1.0)


class _Recorder(nn.Module):
    """Returns the mean of each image it is fed, remembers the batch; has BatchNorm and a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(1)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.bn(x.mean(dim=(1, 2, 3))[:, None])


def test_teacher_resizes_renormalises_and_stays_frozen() -> None:
    inner = _Recorder()
    teacher = Teacher(inner, (32, 16), (0.5,) * 3, (0.5,) * 3, (0.25, 0.5, 0.75), (0.5, 0.5, 0.25))
    teacher.train()  # the training loop's net.train() must not unfreeze it
    assert not inner.training and not any(p.requires_grad for p in teacher.parameters())
    student_batch = torch.full((2, 3, 64, 32), 0.2, requires_grad=True)  # pixel 0.5·0.2 + 0.5 = 0.6
    out = teacher(student_batch)
    assert inner.seen is not None and inner.seen.shape == (2, 3, 32, 16)
    expected = torch.tensor([(0.6 - 0.25) / 0.5, (0.6 - 0.5) / 0.5, (0.6 - 0.75) / 0.25])
    assert torch.allclose(inner.seen[0, :, 5, 5], expected, atol=1e-6)
    assert not out.requires_grad
    assert torch.equal(inner.bn.running_mean, torch.zeros(1))  # eval mode: statistics untouched


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A teacher at 32x16; a distilled 2-epoch student at 64x32, and the same stopped after 1 and resumed."""
    root = tmp_path_factory.mktemp("distill")
    teacher = root / "teacher"
    train(TrainConfig(model="vim-t", out=teacher, epochs=1, img_size=(32, 16), model_kwargs=VIM1, **TINY))
    student = dict(model="vim-t", epochs=2, img_size=(64, 32), model_kwargs=VIM1, **TINY)
    full = root / "full"
    train(TrainConfig(out=full, teacher=str(teacher), distill_weight=0.5, **student))
    resumed = root / "resumed"
    train(TrainConfig(out=resumed, teacher=str(teacher), distill_weight=0.5, stop_after_epoch=1, **student))
    train(TrainConfig(out=resumed, resume=True, **student))  # no teacher given: the run's own is kept
    return {"teacher": teacher, "full": full, "resumed": resumed}


def test_distilled_run_records_the_teacher(runs: dict[str, Path]) -> None:
    _, meta = read_meta(runs["full"])
    info = meta["training"]["teacher"]
    assert info["run"] == str(runs["teacher"]) and info["model"] == "vim-t"
    assert info["input_size"] == [32, 16] and info["weight"] == 0.5
    assert meta["training"]["config"]["teacher"] == str(runs["teacher"])
    assert meta["training"]["config"]["distill_weight"] == 0.5
    assert meta["input_size"] == [64, 32] and meta["training"]["finished"]


def test_resume_keeps_the_teacher(runs: dict[str, Path]) -> None:
    full = load_checkpoint(runs["full"] / LAST)
    resumed = load_checkpoint(runs["resumed"] / LAST)
    assert resumed["config"]["teacher"] == str(runs["teacher"]) and resumed["epoch"] == 2
    assert resumed["config"]["distill_weight"] == 0.5
    # Same weights as the uninterrupted distilled run: epoch 2 after --resume had the teacher's term
    # (its gradient is not zero, see test_the_teacher_term_moves_the_student).
    for key in full["model"]:
        assert torch.equal(full["model"][key], resumed["model"][key]), key
    _, meta = read_meta(runs["resumed"])
    assert meta["training"]["teacher"]["run"] == str(runs["teacher"])


def test_the_teacher_term_moves_the_student(runs: dict[str, Path]) -> None:
    student, meta = load_run(runs["full"])
    teacher, _ = load_teacher(runs["teacher"], meta["attributes"], meta["mean"], meta["std"], "cpu")
    images = torch.randn(4, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    student.train()
    distillation_loss(torch.tensor(0.0), student(images), teacher(images), 1.0).backward()
    grad = sum(float(p.grad.abs().sum()) for p in student.parameters() if p.grad is not None)
    assert grad > 1e-4


def test_teacher_with_other_attributes_is_exit_2(runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other-teacher"
    shutil.copytree(runs["teacher"], other)
    meta = json.loads((other / META).read_text())
    meta["attributes"][0] = "wears a crown"
    (other / META).write_text(json.dumps(meta))
    out = tmp_path / "student"
    result = subprocess.run(
        [sys.executable, "-m", "partool", "train", "--model", "vim-t", "--data", "synth:60", "--img-size", "64x32",
         "--model-arg", "depth=1", "--model-arg", "embed_dim=32", "--device", "cpu", "--out", str(out),
         "--teacher", str(other)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--teacher" in lines[0] and "wears a crown" in lines[0], result.stderr
    assert not out.exists()  # nothing written for a refused call
