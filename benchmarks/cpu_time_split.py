"""Where a Vim-S forward's time goes on the CPU: each libpartool_kernels entry (timed around the library
call, which is synchronous on the CPU) and the costliest PyTorch ops (torch.profiler), against the wall
time of the whole forward, on the `cpu` kernel backend.

    python benchmarks/cpu_time_split.py --out runs/bench/cpu_time_split.json [--batch 1 8] [--dtype float32]

It says which work a CPU-only edge box would gain from: the GEMMs (in_proj/out_proj as aten::mm, x_proj
and dt_proj as aten::bmm) or the scan, conv and norm kernels.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, print_table, watch_library_calls, write_json

from partool.cli.options import parse_size
from partool.models import create_model
from partool.ops import available_backends, set_backend


def split(model: torch.nn.Module, images: torch.Tensor, runs: int, library: collections.Counter[str]) -> dict:
    """Per-forward ms: the whole forward and each library entry (means of the same timed runs), and the
    top PyTorch ops (means of as many runs again, under the profiler)."""
    with torch.inference_mode():
        for _ in range(2):
            model(images)
        library.clear()
        start = time.perf_counter()
        for _ in range(runs):
            model(images)
        forward = (time.perf_counter() - start) / runs
        parts = {name: 1e3 * s / runs for name, s in library.items()}
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(images)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
    parts |= {e.key: e.self_cpu_time_total / 1e3 / runs for e in ops}
    return {"forward_ms": 1e3 * forward, "ms": parts}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vim-s")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--img-size", default="224x224", help="HxW")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", help="write results as JSON here")
    args = parser.parse_args()
    if not available_backends().get("cpu"):
        sys.exit("benchmarks/cpu_time_split.py needs libpartool_kernels: run `partool plugins build`")
    img_size = parse_size(args.img_size)
    dtype = getattr(torch, args.dtype)
    library: collections.Counter[str] = collections.Counter()
    watch_library_calls(lambda entry, seconds: library.update({entry: seconds}))
    set_backend("cpu")
    model = create_model(args.model, num_attrs=26, img_size=img_size).eval().to(dtype)
    rows = []
    for batch in args.batch:
        result = split(model, torch.randn(batch, 3, *img_size, dtype=dtype), args.runs, library)
        rows.append({"batch": batch, **result})
        print(rows[-1], flush=True)
    set_backend(None)
    print_table(
        f"{args.model} {args.dtype} forward on the CPU, `cpu` kernel backend ({torch.get_num_threads()} threads)",
        ["batch", "part", "ms per forward", "share"],
        [
            [r["batch"], part, f"{ms:.2f}", f"{100 * ms / r['forward_ms']:.0f}%"]
            for r in rows
            for part, ms in [
                ("(whole forward)", r["forward_ms"]),
                *sorted(r["ms"].items(), key=lambda kv: -kv[1]),
            ]
        ],
    )
    write_json(args.out, {"machine": machine_facts(), "model": args.model, "dtype": args.dtype, "rows": rows})


if __name__ == "__main__":
    main()
