"""A few-minute CPU training run on SynthPAR: does a small Vim learn, and by how much over trivial baselines?

Trains a reduced Vim-T (from scratch) with `partool.train.loop.train`, then reports validation mA per
epoch and the best epoch's test metrics next to two baselines computed on the same test split:
- majority: every attribute answered with its majority class on the training split (equivalently, the
  training prior thresholded at 0.5) — mA exactly 50 by construction;
- prior: every attribute answered positive with probability r_j (its training prior), seeded.

    python benchmarks/train_synth.py --out runs/bench/train_synth.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, print_table, write_json

from partool.cli.options import parse_size
from partool.data import open_dataset
from partool.data.transforms import build_transforms
from partool.evaluate import evaluate, torch_predict_fn
from partool.metrics import pedestrian_metrics
from partool.models.run_folder import load_run
from partool.train.loop import TrainConfig, train

_KEYS = ("ma", "acc", "prec", "recall", "f1", "f1_instance")


def baselines(data: str, test_labels: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
    """Test metrics of the two label-free predictors, from the training split's positive ratios."""
    prior = open_dataset(data, "train").pos_ratio()
    n = len(test_labels)
    majority = np.tile((prior > 0.5).astype(np.float64), (n, 1))
    random_prior = (np.random.default_rng(seed).random((n, len(prior))) < prior).astype(np.float64)
    out = {}
    for name, probs in (("majority", majority), ("prior", random_prior)):
        m = pedestrian_metrics(probs, test_labels)
        out[name] = {k: getattr(m, k) for k in _KEYS}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=1000, help="synth training images (val/test get a quarter)"
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--embed-dim", type=int, default=96)
    parser.add_argument("--img-size", default="128x64")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--optimizer", default="adamw", help="adamw suits training from scratch; sgd is the paper's"
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default=None, help="keep the run folder here (default: a temp folder)")
    parser.add_argument("--out", help="write results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = parse_size(args.img_size)
    data = f"synth:{args.size}"
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir or Path(tmp) / "run")
        config = TrainConfig(
            model="vim-t",
            data=data,
            out=run_dir,
            epochs=args.epochs,
            batch_size=args.batch_size,
            img_size=(h, w),
            lr=args.lr,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            warmup_epochs=args.warmup_epochs,
            model_kwargs={"depth": args.depth, "embed_dim": args.embed_dim},
            seed=args.seed,
            device="cpu",
            workers=args.workers,
            force=True,
        )
        began = time.perf_counter()
        result = train(config)
        train_seconds = time.perf_counter() - began
        model, meta = load_run(run_dir)
        test = open_dataset(data, "test", build_transforms(meta["input_size"], meta["mean"], meta["std"]))
        test_metrics = evaluate(torch_predict_fn(model), test, batch_size=64)
    params = sum(p.numel() for p in model.parameters())
    base = baselines(data, test.labels, args.seed)
    print_table(
        f"vim-t depth {args.depth} dim {args.embed_dim} ({params / 1e6:.2f} M) on {data}, {args.img_size}, CPU",
        ["epoch", "lr", "train loss", "val loss", "val mA", "val F1", "s"],
        [
            [
                int(r["epoch"]),
                f"{r['lr']:.2e}",
                r["train_loss"],
                r["val_loss"],
                100 * r["ma"],
                100 * r["f1"],
                r["seconds"],
            ]
            for r in result.history
        ],
    )
    rows = [["model (best val epoch)", *(100 * getattr(test_metrics, k) for k in _KEYS)]]
    rows += [[f"baseline: {name}", *(100 * v[k] for k in _KEYS)] for name, v in base.items()]
    print_table(
        f"test split ({len(test)} images), %",
        ["predictor", "mA", "Acc", "Prec", "Recall", "F1", "F1 inst"],
        rows,
    )
    write_json(
        args.out,
        {
            "machine": machine_facts(),
            "config": {k: v for k, v in vars(args).items() if k != "out"},
            "params": params,
            "train_seconds": train_seconds,
            "best_epoch": result.best_epoch,
            "history": result.history,
            "test": {k: getattr(test_metrics, k) for k in _KEYS},
            "baselines": base,
        },
    )


if __name__ == "__main__":
    main()
