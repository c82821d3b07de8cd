"""`train(config)`: the MambaPAR recipe end to end, resumable, on one device or under torchrun (DDP).

Per epoch: set the learning rate from the schedule, one pass over the training split with weighted BCE
(AMP on CUDA), evaluation with the papers' metrics on the split the protocol names
(`partool.train.protocol`: val by default, test as the paper), the best-mA weights saved as a run folder
(`partool.models.run_folder.save_run`), `metrics.csv`, TensorBoard scalars, loss/mA curves as PNG, and the resume
state `last.pt`, all written atomically by rank 0 only.

Determinism: the data order and DataLoader worker seeds come from a generator reseeded from (seed, epoch)
at each epoch, and the global RNG states are saved with every `last.pt`; a run stopped after epoch k and
resumed ends, on CPU, with the same weights as one that never stopped.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from partool.artifacts import META, WEIGHTS, atomic_write_bytes, build_meta, write_meta
from partool.data import open_dataset
from partool.data.base import PARDataset
from partool.data.transforms import build_transforms
from partool.errors import UserError
from partool.evaluate import resolve_device
from partool.metrics import pedestrian_metrics
from partool.models import create_model, load_checkpoints, model_info
from partool.models.par import PAROutput
from partool.models.pretrained import checkpoint_records
from partool.models.run_folder import save_run
from partool.train.allocator import map_large_allocations
from partool.train.checkpoint import LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from partool.train.distill import Teacher, distillation_loss, load_teacher, teacher_summary
from partool.train.losses import WeightedBCELoss
from partool.train.protocol import PAPER_METRICS, best_per_metric, get_protocol
from partool.train.recipe import Recipe, build_optimizer, lr_at, recipe_for

CSV_NAME = "metrics.csv"
TB_DIR = "tensorboard"
PLOTS = ("loss.png", "ma.png")
_OWNED = (LAST, WEIGHTS, META, CSV_NAME, *PLOTS)  # what --force may delete
_HISTORY_KEYS = (
    "epoch",
    "lr",
    "train_loss",
    "val_loss",
    "ma",
    "acc",
    "prec",
    "recall",
    "f1",
    "f1_instance",
    "seconds",
)
_RESULT_KEYS = ("ma", "acc", "prec", "recall", "f1", "f1_instance")
_PAPER_KEYS = tuple(key for key, _ in PAPER_METRICS)


@dataclass
class TrainConfig:
    """What `partool train` asks for; None means "the recipe's / the model's / the protocol's default"."""

    model: str
    data: str
    out: str | Path
    epochs: int | None = None
    batch_size: int | None = None
    img_size: tuple[int, int] | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    warmup_epochs: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # None: the protocol's; "default" takes train + val when the dataset has them, else trainval + test.
    train_split: str | None = None
    val_split: str | None = None
    seed: int = 0
    threshold: float | None = None  # None: the protocol's (default 0.5, paper 0.45)
    protocol: str = "default"  # partool.train.protocol: "default" or "paper"
    pretrained: str | list[str] | None = None  # --pretrained values, FILE or ROLE=FILE (older runs: one str)
    device: str = "auto"
    workers: int = 2
    amp: bool = True
    resume: bool = False
    force: bool = False
    progress: bool = True
    stop_after_epoch: int | None = None  # stop (as if killed) once this epoch is saved
    teacher: str | None = None  # run folder to distil from (partool.train.distill)
    distill_weight: float = 1.0  # weight of the teacher MSE term (KDTM uses 1)
    # SynthPAR training crops framed like a detector's boxes (partool.data.synth.Framing): None = off,
    # {} = the measured motion-detector framing, {"share": 0.5, "dx_std": 0.1, ...} = with these fields changed
    detector_framing: dict[str, Any] | None = None

    # Fields that define the run; on --resume they come from last.pt, the rest from the new call.
    RUN_FIELDS = (
        "model", "data", "epochs", "batch_size", "img_size", "lr", "optimizer", "weight_decay", "warmup_epochs",
        "model_kwargs", "train_split", "val_split", "seed", "threshold", "protocol", "pretrained", "amp",
        "teacher", "distill_weight", "detector_framing",
    )  # fmt: skip


@dataclass
class TrainResult:
    out: Path
    epochs: int
    epochs_done: int
    finished: bool
    best_epoch: int
    best_ma: float
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    skipped_images: list[str]
    recipe: dict[str, Any]
    protocol: dict[str, Any]  # name, train_split, val_split, threshold
    best_of_each: dict[str, dict[str, float]]  # the paper's metrics, each {"value", "epoch"} at its own best

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


@dataclass
class _Dist:
    """Where this process sits in a torchrun job (world 1 when not launched by torchrun)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class _Run:
    """Everything the epoch loop works with, built once by `_set_up`."""

    config: TrainConfig
    ddp: _Dist
    console: Console
    device: torch.device
    recipe: Recipe
    model: nn.Module
    net: nn.Module  # the model, wrapped in DDP when there is more than one rank
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    teacher: Teacher | None
    datasets: tuple[PARDataset, PARDataset]  # training, validation
    loaders: tuple[DataLoader, DataLoader]
    train_gen: torch.Generator  # the training order is drawn from it, reseeded each epoch
    meta_base: dict[str, Any]
    run_info: dict[str, Any]

    @property
    def out(self) -> Path:
        return Path(self.config.out)


@dataclass
class _Record:
    """What the epochs so far left: the history and the best-mA epoch (from last.pt on --resume)."""

    start_epoch: int = 1
    best_ma: float = -math.inf
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) the run in `config.out`; returns the best epoch, its metrics and the history."""
    ddp = _init_distributed(config)
    try:
        return _train(config, ddp)
    finally:
        if ddp.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, ddp: _Dist) -> TrainResult:
    console = Console(stderr=True, quiet=not ddp.main)
    state = load_checkpoint(Path(config.out) / LAST) if config.resume else None
    config = _apply_protocol(config if state is None else _resumed_config(config, state, console))
    if state is None:
        _check_out(Path(config.out), config.force)  # on every rank, so a refusal stops all of them
    run, record = _set_up(config, ddp, console, state)
    writer = _tensorboard(run.out, record.start_epoch) if ddp.main else None
    if state is not None:  # last, so nothing in the set-up above shifts the random streams
        set_rng_state(state["rng"])
    try:
        _run_epochs(run, record, writer)
    finally:
        if writer is not None:
            writer.close()
    return _result(run, record)


def _resumed_config(config: TrainConfig, state: dict[str, Any], console: Console) -> TrainConfig:
    """`config` with the run-defining fields of the run in last.pt; a field newer than that file keeps its default."""
    saved = state["config"]
    _note_ignored(console, config, saved)
    defaults = asdict(TrainConfig(model="", data="", out=""))
    kept = {k: saved.get(k, defaults[k]) for k in TrainConfig.RUN_FIELDS}
    config = TrainConfig(**{**asdict(config), **kept})
    if config.img_size is not None:
        config.img_size = tuple(config.img_size)
    return config


def _apply_protocol(config: TrainConfig) -> TrainConfig:
    """`config` with the splits and threshold of its protocol filled in; UserError if the user's contradict it."""
    train_split, val_split, threshold = get_protocol(config.protocol).resolve(
        config.train_split, config.val_split, config.threshold
    )
    if not 0 < threshold < 1:
        raise UserError(f"--threshold must be between 0 and 1, got {threshold}")
    return replace(config, train_split=train_split, val_split=val_split, threshold=threshold)


def _set_up(
    config: TrainConfig, ddp: _Dist, console: Console, state: dict[str, Any] | None
) -> tuple[_Run, _Record]:
    """Data, teacher, model and optimiser, restored from `state` on --resume; the order keeps the seeded streams."""
    device = _device(config.device, ddp)
    if device.type == "cpu":
        map_large_allocations()  # activations' memory goes back to the OS when freed
    info = model_info(config.model)
    recipe = recipe_for(info.recipe).with_overrides(
        optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay, epochs=config.epochs,
        batch_size=config.batch_size, warmup_epochs=config.warmup_epochs,
    )  # fmt: skip
    img_size = tuple(config.img_size or info.input_size)
    train_ds, val_ds, splits = _open_splits(config, img_size, info.mean, info.std)
    teacher, teacher_meta = _load_teacher(config, train_ds.attributes, info, device, console)
    model = _build_model(config, info, img_size, train_ds.attributes, console, fresh=state is None)
    if state is None and ddp.main:
        _clear_out(Path(config.out))  # only now that data and model are known good: a bad call loses nothing
    model.to(device)
    optimizer = build_optimizer(model, recipe)
    amp_dtype = _amp_dtype(device, config.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    record = _Record() if state is None else _restore(state, model, optimizer, scaler)
    if state is not None:
        console.print(f"resuming {config.out} after epoch {state['epoch']} of {recipe.epochs}")
    train_loader, val_loader, train_gen = _loaders(train_ds, val_ds, recipe, config, ddp, device)
    run = _Run(
        config=config, ddp=ddp, console=console, device=device, recipe=recipe, model=model,
        net=_wrap_ddp(model, ddp, device), criterion=WeightedBCELoss(train_ds.pos_ratio()).to(device),
        optimizer=optimizer, scaler=scaler, amp_dtype=amp_dtype, teacher=teacher, datasets=(train_ds, val_ds),
        loaders=(train_loader, val_loader), train_gen=train_gen,
        meta_base=build_meta(model, train_ds.attributes, config.data, config.threshold),
        run_info=_run_info(
            config, recipe, ddp, (train_ds, val_ds), splits, teacher_meta,
            checkpoint_records(model, config.pretrained, config.model),
        ),
    )  # fmt: skip
    return run, record


def _device(spec: str, ddp: _Dist) -> torch.device:
    """The device asked for; under torchrun on CUDA, this rank's own GPU."""
    device = resolve_device(spec)
    if ddp.world > 1 and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    return device


def _load_teacher(
    config: TrainConfig, attributes: list[str], info: Any, device: torch.device, console: Console
) -> tuple[Teacher | None, dict[str, Any] | None]:
    """The run to distil from and its metadata, or (None, None) without --teacher."""
    if not config.teacher:
        return None, None
    if not config.distill_weight >= 0:
        raise UserError(f"--distill-weight must be 0 or more, got {config.distill_weight}")
    teacher, meta = load_teacher(config.teacher, attributes, info.mean, info.std, device)
    console.print(f"distilling from {config.teacher} ({meta['model']}), weight {config.distill_weight}")
    return teacher, meta


def _build_model(
    config: TrainConfig,
    info: Any,
    img_size: tuple[int, ...],
    attributes: list[str],
    console: Console,
    fresh: bool,
) -> nn.Module:
    """The seeded model, with the --pretrained files in their parts on a fresh run (a resumed one loads last.pt)."""
    _seed_everything(config.seed)
    model_kwargs = dict(config.model_kwargs)
    if "attributes" in inspect.signature(info.builder).parameters:  # text models encode the attribute names
        model_kwargs["attributes"] = list(attributes)
    model = create_model(config.model, len(attributes), img_size=img_size, **model_kwargs)
    if config.pretrained and fresh:
        for r in load_checkpoints(model, config.pretrained, config.model):
            console.print(
                f"loaded {r['file']} into {r['into']} ({r['role']} part): {r['missing']} keys missing, "
                f"{r['unexpected']} unexpected",
                markup=False,
            )
    return model


def _restore(
    state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> _Record:
    """Load model, optimiser and scaler state from last.pt; return where the run stood."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    return _Record(
        start_epoch=int(state["epoch"]) + 1,
        best_ma=float(state["best_ma"]),
        best_epoch=int(state["best_epoch"]),
        history=[dict(h) for h in state["history"]],
    )


def _wrap_ddp(model: nn.Module, ddp: _Dist, device: torch.device) -> nn.Module:
    """The model under DistributedDataParallel when there is more than one rank, else as it is."""
    if ddp.world == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _run_info(
    config: TrainConfig,
    recipe: Recipe,
    ddp: _Dist,
    datasets: tuple[PARDataset, PARDataset],
    splits: tuple[str, str],
    teacher_meta: dict[str, Any] | None,
    pretrained: list[dict[str, str]],
) -> dict[str, Any]:
    """What partool.json says about how the run was made (the protocol included, so it shows afterwards)."""
    info = {
        "config": {k: _plain(getattr(config, k)) for k in TrainConfig.RUN_FIELDS},
        "recipe": recipe.to_dict(),
        "protocol": {
            "name": config.protocol,
            "train_split": splits[0],
            "val_split": splits[1],
            "threshold": config.threshold,
        },
        "train_split": splits[0],
        "val_split": splits[1],
        "train_images": len(datasets[0]),
        "val_images": len(datasets[1]),
        "world_size": ddp.world,
    }
    if pretrained:
        info["pretrained"] = pretrained  # which file loaded into which part of the model
    if teacher_meta is not None:
        info["teacher"] = teacher_summary(config.teacher, teacher_meta, config.distill_weight)
    return info


def _run_epochs(run: _Run, record: _Record, writer: Any) -> None:
    """Epoch after epoch up to the last (or --stop-after-epoch); on Ctrl-C or SIGTERM, say how to resume."""
    epoch = record.start_epoch - 1
    try:
        with _sigterm_as_interrupt():
            for epoch in range(record.start_epoch, run.recipe.epochs + 1):
                began = time.perf_counter()
                row = _fit_epoch(run, epoch)
                if run.ddp.main:
                    _evaluate_and_log(run, record, row, writer, began)
                if run.ddp.world > 1:
                    dist.barrier()
                if run.config.stop_after_epoch is not None and epoch >= run.config.stop_after_epoch:
                    break
    except KeyboardInterrupt:
        done = record.history[-1]["epoch"] if record.history else record.start_epoch - 1
        run.console.print(
            f"[yellow]stopped during epoch {epoch}; {run.out / LAST} holds epoch {int(done)}. "
            f"Continue with: partool train --resume --out {run.out}[/yellow]"
        )
        raise


def _fit_epoch(run: _Run, epoch: int) -> dict[str, float]:
    """One training pass at this epoch's learning rate and data order; the start of the epoch's history row."""
    lr = lr_at(run.recipe, epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.train_gen.manual_seed(_epoch_seed(run.config.seed, epoch))
    train_loader = run.loaders[0]
    if isinstance(train_loader.sampler, DistributedSampler):
        train_loader.sampler.set_epoch(epoch)
    train_loss = _train_epoch(
        run.net, train_loader, run.criterion, run.optimizer, run.scaler, run.device, run.amp_dtype, run.console,
        run.config.progress, f"epoch {epoch}/{run.recipe.epochs}", run.teacher, run.config.distill_weight,
    )  # fmt: skip
    if not math.isfinite(train_loss):
        raise UserError(
            f"training diverged in epoch {epoch} (loss {train_loss}); lower --lr and start again with "
            f"--force, or --resume from the last good epoch with a lower --lr in a new --out"
        )
    return {"epoch": epoch, "lr": lr, "train_loss": train_loss}


def _evaluate_and_log(run: _Run, record: _Record, row: dict[str, float], writer: Any, began: float) -> None:
    """Validate, keep the best-mA weights, write partool.json, the logs and last.pt, print the epoch's line."""
    epoch = int(row["epoch"])
    val_loss, metrics = _validate(
        run.model, run.loaders[1], run.criterion, run.device, run.amp_dtype, run.config.threshold
    )
    row.update(val_loss=val_loss, **{k: getattr(metrics, k) for k in _RESULT_KEYS})
    row["seconds"] = time.perf_counter() - began
    record.history.append(row)
    improved = metrics.ma > record.best_ma
    if improved:
        record.best_ma, record.best_epoch = metrics.ma, epoch
    meta = {**run.meta_base, "training": _training_info(run.run_info, run.recipe, epoch, record)}
    if improved:
        save_run(run.out, run.model, meta)
    else:
        write_meta(run.out, meta)
    _write_logs(run.out, record.history, writer, row)
    _save_state(run, record, epoch)
    run.console.print(_epoch_line(row, improved))


def _save_state(run: _Run, record: _Record, epoch: int) -> None:
    """last.pt: what a resumed run needs to continue as if it had never stopped."""
    save_checkpoint(
        run.out / LAST,
        {
            "config": run.run_info["config"],
            "epoch": epoch,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),
            "best_ma": record.best_ma,
            "best_epoch": record.best_epoch,
            "history": record.history,
            "rng": rng_state(),
        },
    )


def _result(run: _Run, record: _Record) -> TrainResult:
    """The summary `partool train` reports, after a note on images that could not be read."""
    skipped = sorted(set(run.datasets[0].skipped) | set(run.datasets[1].skipped))
    if skipped:
        run.console.print(f"[yellow]skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}[/yellow]")
    done = int(record.history[-1]["epoch"]) if record.history else 0
    best_row = next((h for h in record.history if h["epoch"] == record.best_epoch), {})
    return TrainResult(
        out=run.out,
        epochs=run.recipe.epochs,
        epochs_done=done,
        finished=done >= run.recipe.epochs,
        best_epoch=record.best_epoch,
        best_ma=record.best_ma if record.best_epoch else float("nan"),
        best_metrics={k: float(best_row[k]) for k in _RESULT_KEYS if k in best_row},
        history=record.history,
        skipped_images=skipped,
        recipe=run.recipe.to_dict(),
        protocol=run.run_info["protocol"],
        best_of_each=best_per_metric(record.history, _PAPER_KEYS),
    )


def _train_epoch(
    net: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    console: Console,
    show: bool,
    title: str,
    teacher: Teacher | None = None,
    distill_weight: float = 0.0,
) -> float:
    """One pass over the training data; returns the mean batch loss (averaged over ranks under DDP).

    With a teacher the loss adds distill_weight · MSE(student logits, teacher logits). A hybrid's own
    training terms (its teacher head, layer-wise distillation) come from `PAROutput.aux_loss`.
    """
    net.train()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, batches
    with _progress(console, show) as bar:
        task = bar.add_task(title, total=len(loader))
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with _autocast(device, amp_dtype):
                out: PAROutput = net(images, with_aux=True)
                logits = out.logits
                teacher_logits = teacher(images) if teacher is not None else None
            loss = criterion(logits.float(), targets) + out.aux_loss(criterion, targets)
            if teacher_logits is not None:
                loss = distillation_loss(loss, logits, teacher_logits, distill_weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total[0] += loss.detach().double()
            total[1] += 1
            bar.update(task, advance=1, description=f"{title} loss {loss.item():.4f}")
    if dist.is_initialized():
        dist.all_reduce(total)
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


@torch.inference_mode()
def _validate(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    threshold: float,
) -> tuple[float, Any]:
    model.eval()
    probs, labels, losses = [], [], []
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        with _autocast(device, amp_dtype):
            logits = model(images).float()
        losses.append(float(criterion(logits, targets)) * len(targets))
        probs.append(torch.sigmoid(logits).cpu().numpy())
        labels.append(targets.cpu().numpy().astype(np.uint8))
    metrics = pedestrian_metrics(np.concatenate(probs), np.concatenate(labels), threshold)
    return sum(losses) / metrics.num_samples, metrics


def _loaders(
    train_ds: Dataset, val_ds: Dataset, recipe: Recipe, config: TrainConfig, ddp: _Dist, device: torch.device
) -> tuple[DataLoader, DataLoader, torch.Generator]:
    """Training and validation loaders, and the generator the training order is drawn from (reseeded per epoch).

    --batch-size is the global batch: under DDP each rank takes batch_size / world of it.
    """
    per_rank_batch = max(1, recipe.batch_size // ddp.world)
    train_gen = torch.Generator()
    sampler = (
        DistributedSampler(train_ds, ddp.world, ddp.rank, shuffle=True, seed=config.seed)
        if ddp.world > 1
        else RandomSampler(train_ds, generator=train_gen)
    )
    per_rank_len = math.ceil(len(train_ds) / ddp.world)
    lone_last = per_rank_len % per_rank_batch == 1 and per_rank_len > 1  # BatchNorm cannot train on 1 sample
    train_loader = DataLoader(
        train_ds,
        batch_size=per_rank_batch,
        sampler=sampler,
        num_workers=config.workers,
        generator=train_gen,
        pin_memory=device.type == "cuda",
        drop_last=lone_last,
    )
    val_loader = DataLoader(
        val_ds,
        batch_size=per_rank_batch,
        shuffle=False,
        num_workers=config.workers,
        generator=torch.Generator(),
    )
    return train_loader, val_loader, train_gen


def _open_splits(
    config: TrainConfig, img_size: tuple[int, ...], mean: Any, std: Any
) -> tuple[PARDataset, PARDataset, tuple[str, str]]:
    """Training and validation datasets and their split names, as the protocol says (see `_open_default_pair`)."""
    train_tf = build_transforms(img_size, mean, std, train=True)
    eval_tf = build_transforms(img_size, mean, std, train=False)
    if get_protocol(config.protocol).fixed:
        train_ds, val_ds = _open_protocol_pair(config, train_tf, eval_tf)
    else:
        train_ds, val_ds = _open_default_pair(config, train_tf, eval_tf)
    splits = (train_ds.split, val_ds.split)
    if list(train_ds.attributes) != list(val_ds.attributes):
        raise UserError(f"{config.data}: splits {splits[0]} and {splits[1]} name different attributes")
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise UserError(f"{config.data}: split {splits[0]!r} or {splits[1]!r} is empty; nothing to train on")
    return train_ds, val_ds, splits


def _open_default_pair(config: TrainConfig, train_tf: Any, eval_tf: Any) -> tuple[PARDataset, PARDataset]:
    """The splits the user named, else train/val, else trainval/test (RAPv1 has no val)."""
    if config.train_split or config.val_split:
        pairs = [(config.train_split or "train", config.val_split or "val")]
    else:
        pairs = [("train", "val"), ("trainval", "test")]
    first_error: UserError | None = None
    for train_split, val_split in pairs:
        try:
            train_ds = _open_split(config, train_split, train_tf, training=True)
            return train_ds, _open_split(config, val_split, eval_tf, training=False)
        except UserError as e:
            first_error = first_error or e
    assert first_error is not None
    raise first_error


def _open_split(config: TrainConfig, split: str, transform: Any, training: bool) -> PARDataset:
    """A split of the dataset; the training one as a detector frames people when `detector_framing` asks
    (validation keeps the dataset's own crops, so the best epoch and the test metrics stay comparable)."""
    if not training or config.detector_framing is None:
        return open_dataset(config.data, split, transform)
    from partool.data.synth import open_framed

    return open_framed(config.data, split, transform, config.detector_framing)


def _open_protocol_pair(config: TrainConfig, train_tf: Any, eval_tf: Any) -> tuple[PARDataset, PARDataset]:
    """The two splits a fixed protocol names. A dataset that opens but lacks one of them is told so.

    When neither opens, the dataset itself is missing or damaged, and its own error says where.
    """
    opened: list[PARDataset] = []
    failed: list[tuple[str, UserError]] = []
    for split, transform, training in (
        (config.train_split, train_tf, True),
        (config.val_split, eval_tf, False),
    ):
        try:
            opened.append(_open_split(config, str(split), transform, training))
        except UserError as e:
            failed.append((str(split), e))
    if not failed:
        return opened[0], opened[1]
    split, error = failed[0]
    if len(failed) == 2:
        raise error
    raise UserError(
        f"{config.data} has no usable {split!r} split ({error}); --protocol {config.protocol} trains on "
        f"{config.train_split} and evaluates on {config.val_split}, so train this dataset with --protocol default"
    )


def _note_ignored(console: Console, config: TrainConfig, saved: dict[str, Any]) -> None:
    """Say which options of a --resume call lose to the settings the run was started with."""
    defaults = TrainConfig(model="", data="", out="")
    for key in TrainConfig.RUN_FIELDS:
        given, default = _plain(getattr(config, key)), _plain(getattr(defaults, key))
        kept = saved.get(key, default)
        if given not in (None, "", default) and given != kept:
            console.print(f"[yellow]--resume keeps {key}={kept!r} of the run (ignoring {given!r})[/yellow]")


def _check_out(out: Path, force: bool) -> None:
    """Refuse to overwrite an existing run unless --force."""
    if any((out / name).exists() for name in _OWNED) and not force:
        what = "a finished run" if _finished(out) else "an unfinished run"
        raise UserError(
            f"{out} already holds {what}; pass --resume to continue it, --force to overwrite it, "
            "or choose another --out"
        )


def _clear_out(out: Path) -> None:
    """Remove what an earlier run wrote into `out` (checked by `_check_out` first) and create the folder."""
    for name in _OWNED:
        (out / name).unlink(missing_ok=True)
    if (out / TB_DIR).is_dir():
        shutil.rmtree(out / TB_DIR)
    out.mkdir(parents=True, exist_ok=True)


def _finished(out: Path) -> bool:
    """Whether the run in `out` says it completed all its epochs (False when unreadable)."""
    try:
        return bool(json.loads((out / META).read_text())["training"]["finished"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _training_info(run_info: dict[str, Any], recipe: Recipe, epoch: int, record: _Record) -> dict[str, Any]:
    """partool.json's `training`: how the run was made, the best-mA epoch, the paper's best of each, the history."""
    best = next(h for h in record.history if h["epoch"] == record.best_epoch)
    return {
        **run_info,
        "epochs": recipe.epochs,
        "epochs_done": epoch,
        "finished": epoch >= recipe.epochs,
        "best_epoch": record.best_epoch,
        "best_ma": best["ma"],
        "metrics": {k: best[k] for k in _RESULT_KEYS},
        "best_of_each": best_per_metric(record.history, _PAPER_KEYS),
        "history": record.history,
    }


def _write_logs(out: Path, history: list[dict[str, float]], writer: Any, row: dict[str, float]) -> None:
    """metrics.csv (whole history, atomically), TensorBoard scalars of this epoch, loss and mA curves."""
    lines = [",".join(_HISTORY_KEYS)]
    lines += [",".join(_fmt(h.get(k, "")) for k in _HISTORY_KEYS) for h in history]
    atomic_write_bytes(out / CSV_NAME, ("\n".join(lines) + "\n").encode())
    if writer is not None:
        step = int(row["epoch"])
        tags = {"lr": "train/lr", "train_loss": "loss/train", "val_loss": "loss/val"}
        for key in ("lr", "train_loss", "val_loss", *_RESULT_KEYS):
            writer.add_scalar(tags.get(key, f"val/{key}"), row[key], step)
        writer.flush()
    _plot_curves(out, history)


def _plot_curves(out: Path, history: list[dict[str, float]]) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    for name, series, ylabel in (
        ("loss.png", (("train_loss", "train"), ("val_loss", "validation")), "weighted BCE"),
        ("ma.png", (("ma", "mA"), ("f1", "F1"), ("acc", "Acc")), "validation score (%)"),
    ):
        fig = Figure(figsize=(6, 3.6))
        ax = fig.add_subplot()
        scale = 100.0 if name == "ma.png" else 1.0
        for key, label in series:
            ax.plot(epochs, [scale * h[key] for h in history], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        atomic_write_bytes(out / name, buf.getvalue())


def _tensorboard(out: Path, start_epoch: int) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run logged after its last saved epoch.
    return SummaryWriter(str(out / TB_DIR), purge_step=start_epoch if start_epoch > 1 else None)


def _epoch_line(row: dict[str, float], improved: bool) -> str:
    star = " [green]best[/green]" if improved else ""
    return (
        f"epoch {int(row['epoch'])}: lr {row['lr']:.3g}  loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
        f"mA {100 * row['ma']:.2f}  Acc {100 * row['acc']:.2f}  F1 {100 * row['f1']:.2f}  ({row['seconds']:.1f} s){star}"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _plain(value: Any) -> Any:
    """Config values as types `torch.load(weights_only=True)` and JSON both accept."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU has it (no loss scaling needed), else fp16 with a GradScaler; None on CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _progress(console: Console, show: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show,
    )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (e.g. a scheduler's kill) into KeyboardInterrupt so logs are closed cleanly.

    The resume state of the last finished epoch is already on disk (written atomically), so a stop
    mid-epoch loses only that epoch's progress.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _init_distributed(config: TrainConfig) -> _Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, Gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        use_cuda = config.device != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(
        world=dist.get_world_size(), rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", 0))
    )
