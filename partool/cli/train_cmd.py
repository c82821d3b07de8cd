"""`partool train`: train a PAR model with the MambaPAR recipe into a run folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from partool.cli.options import parse_size
from partool.cli.output import console, print_json, print_table
from partool.errors import UserError
from partool.train.protocol import PAPER_METRICS, get_protocol

if TYPE_CHECKING:
    from partool.train.loop import TrainResult


def parse_model_args(items: list[str]) -> dict[str, object]:
    """['depth=2', 'drop_path_rate=0.0'] -> {'depth': 2, 'drop_path_rate': 0.0}; values read as JSON when they parse."""
    kwargs: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--model-arg {item!r} is not KEY=VALUE; e.g. --model-arg depth=12")
        try:
            kwargs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key.strip()] = value
    return kwargs


def default_out(model: str, data: str) -> Path:
    """runs/MODEL-DATASET, e.g. runs/vim-s-pa100k."""
    kind = data.partition(":")[0].lower() or "data"
    return Path("runs") / f"{model}-{kind}"


def train(
    model: str | None = typer.Option(None, "--model", help="Model name from `partool models` (vim-t, vim-s, vmamba-b, vit-s…)."),
    data: str | None = typer.Option(None, "--data", help="Dataset spec: synth[:N], pa100k:ROOT, peta:ROOT, rap1:ROOT, rap2:ROOT, pkl:PATH, wider:ROOT, csv:PATH."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs (default: the paper's, Vim and hybrids 60, VMamba/ViT 20)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per step, over all GPUs (default: Vim and hybrids 64, VMamba/ViT 128)."),
    img_size: str | None = typer.Option(None, "--img-size", help="Input HEIGHTxWIDTH, e.g. 256x128 (default: the model's, 224x224)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default: Vim and hybrids 2.5e-4, VMamba/ViT 8e-3)."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="sgd (the paper's, momentum 0.9) or adamw."),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help="Weight decay (default: 1e-4)."),
    warmup_epochs: int | None = typer.Option(None, "--warmup-epochs", help="Linear warm-up epochs from 1% of --lr (default: 5)."),
    model_arg: list[str] = typer.Option([], "--model-arg", metavar="KEY=VALUE", help="Extra model option KEY=VALUE (repeatable), e.g. depth=12."),
    protocol: str = typer.Option("default", "--protocol", help="default: train on train, pick the best-mA epoch on val (trainval and test when there is no val), threshold 0.5, report that epoch. paper: as the MambaPAR authors ran it, train on trainval, evaluate each epoch on test, threshold 0.45, report the best mA, Acc and F1 (instance) over epochs, each on its own. paper fixes the splits and threshold: --train-split/--val-split/--threshold that differ are refused (exit 2)."),
    train_split: str | None = typer.Option(None, "--train-split", help="Split to train on (default: train, or trainval if there is no val; paper: trainval)."),
    val_split: str | None = typer.Option(None, "--val-split", help="Split to pick the best epoch on (default: val, or test; paper: test)."),
    threshold: float | None = typer.Option(None, "--threshold", help="Decision threshold for the epoch metrics, saved in partool.json for eval, predict and export (default: 0.5; paper: 0.45)."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, data order and augmentation."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default: runs/MODEL-DATASET)."),
    pretrained: list[str] = typer.Option([], "--pretrained", metavar="[ROLE=]PATH", help="Official checkpoint (.pth/.safetensors) for the backbone; repeatable as ROLE=PATH for the parts of a hybrid: vim=vim_s_midclstok_ft_81p6acc.pth, vit=jx_vit_base_p16_224-80ecf9dd.pth, or vit=RUN (a vit-b run folder, the frozen ViT of maformer/mahdft/kdtm/makdf). `partool models` lists what each model expects."),
    teacher: Path | None = typer.Option(None, "--teacher", help="Trained run folder to distil into --model (same dataset attributes; any model and input size), e.g. runs/vit-b-pa100k."),
    distill_weight: float | None = typer.Option(None, "--distill-weight", help="Weight of the MSE between student and teacher logits added to the weighted BCE (default: 1, as MambaPAR's KDTM)."),
    detector_framing: float | None = typer.Option(None, "--detector-framing", metavar="SHARE", help="SynthPAR only: draw this share (0 to 1] of the training crops framed like the motion detector's boxes (tight, a little off-centre, stretched to the input; measured on the street clip) instead of SynthPAR's loose centred crops, for models that will see detector crops in `partool video`. Validation and test keep SynthPAR's crops. The demo uses 0.5."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run in --out."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes (0 = load in the main process)."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="Mixed precision on CUDA (bf16, or fp16 with loss scaling)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:  # fmt: skip
    """Train a pedestrian-attribute model; the best-mA epoch is saved as a run folder.

    Defaults follow MambaPAR (arXiv 2407.10374, Event-AHU/OpenPAR): weighted BCE, SGD momentum 0.9, weight decay 1e-4, 5 warm-up epochs then cosine decay, Resize + Pad(10) + RandomCrop + flip, mean/std 0.5. The run folder gets model.safetensors + partool.json (what eval, predict and export read), last.pt (resume state), metrics.csv, loss.png, ma.png and tensorboard/.

    Examples:

      partool train --model vim-s --data pa100k:/data/PA100k --img-size 256x128 --pretrained vim_s_midclstok_80p5acc.pth

      partool train --model vim-t --data synth --epochs 10 --optimizer adamw --lr 1e-3 --device cpu

      partool train --model vim-s --data pa100k:/data/PA100k --protocol paper   (the paper's numbers: trainval → test, threshold 0.45, best of each metric)

      partool train --resume --out runs/vim-s-pa100k          (after a crash or Ctrl-C)

      partool train --model vim-s --data pa100k:/data/PA100k --teacher runs/vit-b-pa100k --distill-weight 1   (distil a trained ViT-B into a Vim-S for deployment)

      partool train --model makdf --data pa100k:/data/PA100k --pretrained vim=vim_s_midclstok_ft_81p6acc.pth --pretrained vit=runs/vit-b-pa100k   (a hybrid from both checkpoints, its frozen ViT from a vit-b PAR run)

      partool train --model vim-t --data synth:4000 --detector-framing 0.5 --device cpu   (for video: half the crops framed like detections)

      torchrun --nproc-per-node 4 -m partool train --model vmamba-b --data peta:/data/PETA   (multi-GPU)
    """
    from partool.train.loop import TrainConfig
    from partool.train.loop import train as run_training

    if not resume and (not model or not data):
        raise UserError("--model and --data are required (e.g. --model vim-s --data pa100k:/data/PA100k)")
    if out is None:
        if not (model and data):
            raise UserError("--resume needs --out (the run folder to continue), or --model and --data")
        out = default_out(model, data)
    if distill_weight is not None and teacher is None and not resume:
        raise UserError("--distill-weight needs --teacher RUN (the trained run to distil from)")
    if distill_weight is not None and distill_weight < 0:
        raise UserError(f"--distill-weight must be 0 or more, got {distill_weight}")
    if workers < 0:
        raise UserError(f"--workers must be 0 or more, got {workers}")
    if detector_framing is not None and not 0 < detector_framing <= 1:
        raise UserError(
            f"--detector-framing is the share of framed crops, above 0 and at most 1; got {detector_framing}"
        )
    config = TrainConfig(
        model=model or "",
        data=data or "",
        out=out,
        epochs=epochs,
        batch_size=batch_size,
        img_size=parse_size(img_size) if img_size else None,
        lr=lr,
        optimizer=optimizer.lower() if optimizer else None,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        model_kwargs=parse_model_args(model_arg),
        train_split=train_split,
        val_split=val_split,
        seed=seed,
        threshold=threshold,
        protocol=protocol.lower(),
        pretrained=list(pretrained) or None,
        teacher=str(teacher.resolve()) if teacher else None,
        distill_weight=1.0 if distill_weight is None else distill_weight,
        detector_framing=None if detector_framing is None else {"share": detector_framing},
        device=device,
        workers=workers,
        amp=amp,
        resume=resume,
        force=force,
    )
    result = run_training(config)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    if json_out:
        print_json(result.as_dict())
        return
    _print_summary(result)


def _print_summary(result: TrainResult) -> None:
    """The results table the run's protocol reports, and under it the line that says which protocol made it."""
    status = "finished" if result.finished else f"stopped after epoch {result.epochs_done}"
    protocol = get_protocol(result.protocol["name"])
    if protocol.best_of_each:
        _print_best_of_each(result, status)
    else:
        _print_best_epoch(result, status)
    p = result.protocol
    console.print(
        f"protocol: {p['name']} ({p['train_split']} → {p['val_split']}, threshold {p['threshold']:g}, "
        f"{protocol.reports})",
        markup=False,
        soft_wrap=True,
    )


def _print_best_of_each(result: TrainResult, status: str) -> None:
    """The paper's table: best mA, Acc and F1 (instance) over epochs, each with the epoch it came from."""
    rows = [
        [label, f"{100 * best['value']:.2f}", best["epoch"]]
        for key, label in PAPER_METRICS
        if (best := result.best_of_each.get(key))
    ]
    print_table(f"{result.out} ({status}, {result.epochs} epochs)", ["metric", "best (%)", "epoch"], rows)


def _print_best_epoch(result: TrainResult, status: str) -> None:
    """The default table: every metric of the best-mA epoch."""
    m = result.best_metrics
    keys = ("ma", "acc", "prec", "recall", "f1", "f1_instance")
    print_table(
        f"{result.out} ({status}, best epoch {result.best_epoch} of {result.epochs})",
        ["metric", "value (%)"],
        [[k, f"{100 * m[k]:.2f}"] for k in keys if k in m],
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
