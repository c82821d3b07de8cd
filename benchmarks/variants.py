"""Every registered model in one run: parameters, FLOPs, ONNX Runtime CPU latency and SynthPAR mA.

- parameters and GFLOPs: the full-size model at 224x224 (`partool.models.count_parameters`,
  `partool.models.complexity.count_flops`; a multiply-add is one FLOP, scans as mamba_ssm counts them);
- latency: the full-size model exported at 224x224 (untrained weights: speed does not depend on them) and
  timed on ONNX Runtime's CPU provider at batch 1, with the plugin lowering and partool's C++ scan op
  when it is built, else the portable lowering (the column says which); every model's runs are spread
  over interleaved rounds (`onnx_cpu.time_sessions`), so a slow phase of a shared machine hits all alike;
- synth mA: a REDUCED model of the same design (width ~96, 4 mixing layers, see REDUCED) trained from
  scratch on SynthPAR at 128x64 on the CPU, evaluated on the test split: whether the design learns, not
  how it ranks at full size on a real dataset.

Prints a table, writes JSON, and with --markdown writes the table as Markdown (benchmarks/variants.md):

    python benchmarks/variants.py --out runs/bench/variants.json --markdown benchmarks/variants.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, print_table, write_json
from onnx_cpu import perturb_constants, time_sessions

from partool.artifacts import build_meta
from partool.data import open_dataset
from partool.data.transforms import build_transforms
from partool.evaluate import evaluate, torch_predict_fn
from partool.export import export_onnx
from partool.models import count_parameters, create_model, list_models
from partool.models.complexity import count_flops
from partool.models.run_folder import load_run
from partool.plugins import find_ort_custom_op_library

_VIM = {"embed_dim": 96, "depth": 4}
_VMAMBA = {"depths": [1, 1, 1, 1], "dims": 48}
_TEXT = {"text_dim": 32, "text_depth": 2, "fusion_dim": 96}
_HYBRID = {"vit_dim": 96, "vit_depth": 2, "vit_heads": 3, "embed_dim": 48, "depth": 4}
REDUCED: dict[str, dict[str, Any]] = {  # builder kwargs of the models trained on SynthPAR
    "vim-t": _VIM,
    "vim-s": _VIM,
    "vit-s": {"embed_dim": 96, "depth": 4, "num_heads": 3},
    "vit-b": {"embed_dim": 96, "depth": 4, "num_heads": 3},
    "vmamba-t": _VMAMBA,
    "vmamba-s": _VMAMBA,
    "vmamba-b": _VMAMBA,
    "vim-s-text": {**_VIM, **_TEXT},
    "vmamba-b-text": {**_VMAMBA, **_TEXT},
    "pafusion": _HYBRID,
    "nasf": _HYBRID,
    "asf": {**_HYBRID, "groups": 2},
    "mahdft": _HYBRID,
    "maformer": _HYBRID,
    "adamtf": _HYBRID,
    "kdtm": _HYBRID,
    "makdf": _HYBRID,
}


def _design(name: str) -> str:
    """The backbone class the registered name builds (vim-t and vim-s are both a VimBackbone)."""
    with torch.device("meta"):
        return type(create_model(name, 26, img_size=(128, 64), **REDUCED[name]).backbone).__name__


def export_full_size(name: str, tmp: Path) -> tuple[Path, str]:
    """The full-size model at 224x224 as ONNX under `tmp`, and the scan lowering used."""
    scan = "plugin" if find_ort_custom_op_library() is not None else "portable"
    torch.manual_seed(0)
    model = perturb_constants(create_model(name, 26, img_size=(224, 224)).eval())
    meta = build_meta(model, [f"attr{i}" for i in range(26)], "synth")
    return export_onnx(model, tmp / name / "model.onnx", scan=scan, meta=meta), scan


def synth_ma(name: str, size: int, epochs: int, seed: int, tmp: Path) -> float:
    """Test mA (%) of the reduced model after `epochs` on synth:`size` (AdamW, 128x64, CPU)."""
    from partool.train.loop import TrainConfig, train

    data = f"synth:{size}"
    run_dir = tmp / f"{name}-run"
    config = TrainConfig(
        model=name, data=data, out=run_dir, epochs=epochs, batch_size=32, img_size=(128, 64), lr=1e-3,
        optimizer="adamw", weight_decay=0.05, warmup_epochs=1, model_kwargs=dict(REDUCED[name]),
        seed=seed, device="cpu", workers=0, force=True, progress=False,
    )  # fmt: skip
    train(config)
    model, meta = load_run(run_dir)
    test = open_dataset(data, "test", build_transforms(meta["input_size"], meta["mean"], meta["std"]))
    return 100 * evaluate(torch_predict_fn(model), test, batch_size=64).ma


def markdown(rows: list[dict[str, Any]], facts: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Model variants: size, cost, CPU latency and SynthPAR mA",
        "",
        f"Measured by `python benchmarks/variants.py` on {facts['processor']} with {args.threads} ONNX Runtime "
        f"threads (torch {facts['torch']}). Parameters and GFLOPs: full-size models at 224×224 (a multiply-add "
        "is one FLOP; scans as mamba_ssm counts them). Latency: the full-size model on ONNX Runtime CPU, "
        "batch 1, 224×224, median of "
        f"{args.runs} runs spread over {args.rounds} rounds that interleave all models. Synth mA: a reduced model of the same design (`REDUCED` in the script) trained "
        f"from scratch for {args.epochs} epochs on synth:{args.size} at 128×64, test split; majority "
        "baseline 50. Sizes of one design share a reduced configuration (vim-t/vim-s, vit-s/vit-b, "
        "vmamba-t/s/b), which is trained once.",
        "",
        "| model | params (M) | GFLOPs | ORT CPU ms (lowering) | synth mA |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        latency = f"{r['latency_ms']:.1f} ({r['lowering']})" if "latency_ms" in r else "–"
        ma = f"{r['synth_ma']:.2f}" if "synth_ma" in r else "–"
        lines.append(f"| {r['model']} | {r['params_m']:.2f} | {r['gflops']:.2f} | {latency} | {ma} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--runs", type=int, default=8, help="timed runs per model")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds the runs are spread over")
    parser.add_argument("--size", type=int, default=1000, help="synth training images")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument(
        "--synth-ma-from",
        help="take synth mA from an earlier --out JSON instead of training (when only export or runtime "
        "code changed since)",
    )
    parser.add_argument("--out", help="write results as JSON here")
    parser.add_argument("--markdown", help="write the table as Markdown here")
    args = parser.parse_args()
    names = args.models or list_models()
    missing = sorted(set(names) - set(REDUCED))
    if missing and not args.skip_train:
        sys.exit(f"variants.py: no reduced configuration for {', '.join(missing)}; add it to REDUCED")
    facts = machine_facts()
    config = {
        k: v for k, v in vars(args).items() if k not in ("out", "markdown")
    }  # no local paths in results
    rows: list[dict[str, Any]] = []
    trained: dict[tuple[str, str], float] = {}
    exported: dict[str, Path] = {}
    earlier = {}
    if args.synth_ma_from:
        earlier = {
            r["model"]: r["synth_ma"] for r in json.loads(Path(args.synth_ma_from).read_text())["rows"]
        }
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row: dict[str, Any] = {
                "model": name,
                "params_m": count_parameters(name)["total"] / 1e6,
                "gflops": count_flops(name)["total"],
            }
            if not args.skip_latency:
                exported[name], row["lowering"] = export_full_size(name, Path(tmp))
            if name in earlier:
                row["synth_ma"] = earlier[name]
            elif not args.skip_train:
                # sizes of one design (vim-t/vim-s, ...) reduce to the same model: train it once
                key = (_design(name), json.dumps(REDUCED[name], sort_keys=True))
                if key not in trained:
                    trained[key] = synth_ma(name, args.size, args.epochs, args.seed, Path(tmp))
                row["synth_ma"] = trained[key]
            rows.append(row)
            print(row, flush=True)
            write_json(args.out, {"machine": facts, "config": config, "rows": rows})
        if exported:  # every model's runs interleaved: a slow phase of a shared machine hits all alike
            timings = time_sessions(list(exported.values()), args.threads, args.runs, args.rounds)
            for row, timing in zip((r for r in rows if r["model"] in exported), timings, strict=True):
                row["latency_ms"] = timing["median_ms"]
            write_json(args.out, {"machine": facts, "config": config, "rows": rows})
    print_table(
        "model variants",
        ["model", "params M", "GFLOPs", "ORT CPU ms", "synth mA"],
        [
            [r["model"], r["params_m"], r["gflops"], r.get("latency_ms", "-"), r.get("synth_ma", "-")]
            for r in rows
        ],
    )
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, facts, args))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
