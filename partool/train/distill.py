"""Distillation for deployment: a trained run (e.g. a ViT-B) teaches a faster student (e.g. a Vim-S).

The loss follows the KDTM hybrid of MambaPAR (arXiv 2407.10374; Event-AHU/OpenPAR, models/hybrid_7.py):
the student's own weighted BCE plus the mean squared error between student and teacher logits
(`mse_loss` over all batch × attribute elements, no temperature). KDTM adds the MSE with weight 1;
`weight` scales it here. The teacher is frozen, so its own loss term of KDTM drops out.

The teacher may have been trained at another input size or normalisation: each batch (already
normalised for the student) is mapped back to pixels in [0, 1], resized with bilinear interpolation to
the teacher's input size and normalised with the teacher's mean and std.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.run_folder import load_run


def distillation_loss(base: Tensor, student_logits: Tensor, teacher_logits: Tensor, weight: float) -> Tensor:
    """`base` (the student's label loss) + weight · mean((student − teacher)²) over every logit."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    mse = F.mse_loss(student_logits.float(), teacher_logits.detach().float(), reduction="mean")
    return base + weight * mse


class Teacher(nn.Module):
    """A frozen run in eval mode; forward(student batch) -> teacher logits (no gradient)."""

    mean_in: Tensor
    std_in: Tensor
    mean_out: Tensor
    std_out: Tensor

    def __init__(
        self,
        model: nn.Module,
        input_size: Sequence[int],
        student_mean: Sequence[float],
        student_std: Sequence[float],
        teacher_mean: Sequence[float],
        teacher_std: Sequence[float],
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        for name, values in (
            ("mean_in", student_mean),
            ("std_in", student_std),
            ("mean_out", teacher_mean),
            ("std_out", teacher_std),
        ):
            self.register_buffer(
                name, torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
            )

    def train(self, mode: bool = True) -> Teacher:
        """Stays in eval mode (BatchNorm statistics and dropout of the teacher are fixed)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = images.float() * self.std_in + self.mean_in
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        x = (x - self.mean_out) / self.std_out
        return self.model(x.to(images.dtype))


def load_teacher(
    run: str | Path,
    attributes: Sequence[str],
    student_mean: Sequence[float],
    student_std: Sequence[float],
    device: torch.device | str,
) -> tuple[Teacher, dict[str, Any]]:
    """The teacher of run folder `run` on `device`, with its metadata; UserError if its attributes differ."""
    model, meta = load_run(run, device="cpu")
    theirs, ours = [str(a) for a in meta["attributes"]], [str(a) for a in attributes]
    if theirs != ours:
        if len(theirs) != len(ours):
            detail = f"{len(theirs)} attributes, the dataset has {len(ours)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(theirs, ours, strict=True)) if a != b)
            detail = f"attribute {i + 1} is {theirs[i]!r}, the dataset's is {ours[i]!r}"
        raise UserError(
            f"--teacher {run}: its outputs do not match the dataset's attributes ({detail}); "
            "distil from a run trained on the same dataset"
        )
    teacher = Teacher(model, meta["input_size"], student_mean, student_std, meta["mean"], meta["std"]).to(
        device
    )
    return teacher, meta


def teacher_summary(run: str | Path, meta: dict[str, Any], weight: float) -> dict[str, Any]:
    """What `partool.json` records about the teacher of a distilled run."""
    training = meta.get("training") or {}
    return {
        "run": str(run),
        "model": meta["model"],
        "model_kwargs": meta["model_kwargs"],
        "input_size": meta["input_size"],
        "data": meta["data"],
        "best_ma": training.get("best_ma"),
        "loss": "weighted BCE + weight * MSE(student logits, teacher logits)",
        "weight": float(weight),
    }
