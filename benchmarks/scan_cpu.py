"""CPU selective scan at Vim-S shapes: sequential vs chunked (eager and torch.compile) vs the C++ kernel,
plus a Vim-S PAR forward at 224×224, batch 1, per scan backend.

    python benchmarks/scan_cpu.py --out runs/bench/scan_cpu.json
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, print_table, time_call, write_json

from partool.ops import available_backends, selective_scan
from partool.ops.scan_reference import scan_chunked

CPU_BACKENDS = ("reference", "chunked", "cpu")  # sequential reference, chunked reference, C++ kernel


def scan_rows(batches: list[int], compile_too: bool) -> list[dict[str, object]]:
    d, n, length = 768, 16, 197
    rows = []
    for b in batches:
        g = torch.Generator().manual_seed(0)
        u, delta = torch.randn(b, d, length, generator=g), torch.randn(b, d, length, generator=g)
        A = -torch.rand(d, n, generator=g) * 8
        B, C = torch.randn(b, n, length, generator=g), torch.randn(b, n, length, generator=g)
        D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g)
        timings = {}
        with torch.inference_mode():
            for backend in CPU_BACKENDS:
                if available_backends().get(backend):
                    args = (u, delta, A, B, C, D, None, bias, True)
                    timings[backend] = time_call(functools.partial(selective_scan, *args, backend=backend))
            if compile_too:
                dt = torch.nn.functional.softplus(delta + bias[:, None])
                compiled = functools.partial(scan_chunked, u, dt, A, B[:, None], C[:, None], compiled=True)
                timings["chunked+compile"] = time_call(compiled, warmup=2)
        base = timings["reference"]
        for name, ms in timings.items():
            rows.append({"batch": b, "impl": name, "ms": ms, "speedup_vs_sequential": base / ms})
    return rows


def model_rows() -> list[dict[str, object]]:
    from partool.models import create_model

    model = create_model("vim-s", num_attrs=26).eval()
    x = torch.randn(1, 3, 224, 224)
    rows = []
    with torch.inference_mode():
        for backend in CPU_BACKENDS:
            if available_backends().get(backend):
                from partool.ops import set_backend

                set_backend(backend)
                try:
                    ms = time_call(lambda: model(x), repeat=3)
                finally:
                    set_backend(None)
                rows.append({"model": "vim-s", "scan": backend, "batch": 1, "ms": ms})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile variant (~30 s compile)"
    )
    parser.add_argument("--no-model", action="store_true", help="skip the Vim-S forward")
    parser.add_argument("--out", help="write results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scans = scan_rows(args.batch, compile_too=not args.no_compile)
    print_table(
        "selective scan, d=768 n=16 l=197 (Vim-S), fp32, CPU",
        ["batch", "impl", "ms", "× vs sequential"],
        [[r["batch"], r["impl"], r["ms"], r["speedup_vs_sequential"]] for r in scans],
    )
    models = [] if args.no_model else model_rows()
    if models:
        print_table(
            "Vim-S PAR forward, 224×224, fp32, CPU",
            ["model", "scan", "batch", "ms"],
            [[r["model"], r["scan"], r["batch"], r["ms"]] for r in models],
        )
    write_json(args.out, {"machine": machine_facts(), "scan": scans, "model": models})


if __name__ == "__main__":
    main()
