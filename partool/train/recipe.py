"""The MambaPAR training recipe per backbone family, and its learning-rate schedule.

Source: the authors' code, Event-AHU/OpenPAR `MambaPAR_Empirical_Study` (arXiv 2407.10374):
- `solver/make_optimizer.py`: SGD, momentum 0.9, weight decay 1e-4 on every parameter.
- `solver/scheduler_factory.py` + `train.py`: timm's CosineLRScheduler stepped once per epoch
  (`scheduler.step(i)` before epoch i = 1..E), warm-up 5 epochs (`warmup_t=5`) from 0.01·lr,
  cosine to 0.002·lr over E epochs, counted from epoch 0 (no warm-up prefix).
- `train.sh` (Vim): batch 64, lr 2.5e-4, 60 epochs, 224×224.
- `config.py` defaults (the VMamba run, `--use_Vis_model VMamba`): batch 128, lr 8e-3, 20 epochs.
  No script sets ViT hyper-parameters; the ViT baseline gets the same defaults.
- `train_hybrid.sh` (the eight hybrids, `--hybrid 1..8`): batch 64, lr 2.5e-4, 60 epochs, 224×224; the
  same optimiser and scheduler (`train_hybrid.py`). A model picks its recipe in the registry
  (`ModelInfo.recipe`, the family's unless it names another).
- Train on `trainval`, evaluate every epoch on `test` at threshold 0.45 (`config.py`, `function.py`), keep
  the best-mA epoch (`train.py`) and report the best mA, Acc and F1 over epochs, each on its own. partool
  does this under `--protocol paper` (`partool.train.protocol`); by default it trains on `train` and picks
  the best-mA epoch on `val` (trainval and test when a dataset has no val).
The loss is CEL_Sigmoid (`partool.train.losses.WeightedBCELoss`); transforms are in
`partool.data.transforms`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from partool.errors import UserError

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class Recipe:
    """Optimiser and schedule hyper-parameters of one training run."""

    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    epochs: int
    batch_size: int
    warmup_epochs: int
    warmup_lr_ratio: float = 0.01  # warm-up starts at this fraction of lr
    min_lr_ratio: float = 0.002  # cosine ends at this fraction of lr
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with the non-None overrides applied and checked."""
        chosen = {k: v for k, v in overrides.items() if v is not None}
        recipe = replace(self, **chosen)
        if chosen:
            recipe = replace(recipe, source=f"{self.source}; overridden: {', '.join(sorted(chosen))}")
        recipe.check()
        return recipe

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0:
            raise UserError(f"--warmup-epochs must be 0 or more, got {self.warmup_epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"--lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be 0 or more, got {self.weight_decay}")


_CODE = "OpenPAR/MambaPAR_Empirical_Study"
RECIPES: dict[str, Recipe] = {
    "vim": Recipe("sgd", 2.5e-4, 1e-4, 0.9, 60, 64, 5, source=f"{_CODE} train.sh (Vim)"),
    "vmamba": Recipe("sgd", 8e-3, 1e-4, 0.9, 20, 128, 5, source=f"{_CODE} config.py defaults (VMamba)"),
    "vit": Recipe("sgd", 8e-3, 1e-4, 0.9, 20, 128, 5, source=f"{_CODE} config.py defaults (no ViT script)"),
    "hybrid": Recipe("sgd", 2.5e-4, 1e-4, 0.9, 60, 64, 5, source=f"{_CODE} train_hybrid.sh (hybrids)"),
}


def recipe_for(name: str) -> Recipe:
    """The paper's recipe by name ("vim", "vmamba", "vit", "hybrid"): a model's `ModelInfo.recipe`."""
    if name not in RECIPES:
        raise UserError(f"no training recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def lr_at(recipe: Recipe, epoch: int) -> float:
    """Learning rate of 1-based `epoch`, as timm's CosineLRScheduler configured by the authors gives it."""
    lr, t = recipe.lr, epoch
    if t < recipe.warmup_epochs:
        start = recipe.warmup_lr_ratio * lr
        return start + t * (lr - start) / recipe.warmup_epochs
    if t >= recipe.epochs:  # past the single cycle (cycle_limit=1): the floor
        return recipe.min_lr_ratio * lr
    low = recipe.min_lr_ratio * lr
    return low + 0.5 * (lr - low) * (1 + math.cos(math.pi * t / recipe.epochs))


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW, weight decay on every trainable parameter as the paper does."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
