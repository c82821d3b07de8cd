"""CPU selective-scan kernel (libpartool_kernels) vs the sequential and chunked PyTorch references at
Vim-S shapes (d = 768, n = 16, l = 197, fp32) with Vim's extras (z gating, D, delta_bias + softplus),
batch 1 and 8.

    python benchmarks/scan_kernels_cpu.py --out runs/bench/scan_kernels_cpu.json [--threads N]

Target (issue 4): the kernel >= 20x faster than the sequential reference at batch 1. Builds the
library first if it is missing.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, print_table, time_call, write_json

from partool.ops.scan_reference import scan_reference_fn


def vim_s_inputs(batch: int, d: int = 768, n: int = 16, length: int = 197) -> tuple:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, d, length, generator=g)
    delta = torch.randn(batch, d, length, generator=g) * 0.5 - 2.0  # softplus(delta + bias) ~ 0.1, as in Vim
    A = -torch.exp(torch.rand(d, n, generator=g) * 2.0)
    B = torch.randn(batch, 1, n, length, generator=g)
    C = torch.randn(batch, 1, n, length, generator=g)
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g) * 0.1
    z = torch.randn(batch, d, length, generator=g)
    return u, delta, A, B, C, D, z, bias, True, False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--threads", type=int, default=0, help="threads for torch and the kernel (0: torch's default)"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    import partool.ops.kernel_abi as kernel_abi
    import partool.ops.kernels as kernels
    from partool.plugins import build_plugins

    if not kernel_abi.cpu_available():
        build_plugins()
    rows, results = [], []
    with torch.inference_mode():
        for b in args.batch:
            inputs = vim_s_inputs(b)
            kernel_out = kernels.scan(*inputs)[0]
            reference_out = scan_reference_fn(*inputs, chunked=False)[0]
            err = float((kernel_out - reference_out).abs().max() / reference_out.abs().max())
            repeat = 3 if b > 1 else 5
            ms = {
                "kernel": time_call(functools.partial(kernels.scan, *inputs), repeat=max(repeat, 10)),
                "sequential": time_call(
                    functools.partial(scan_reference_fn, *inputs, chunked=False), repeat=repeat
                ),
                "chunked": time_call(
                    functools.partial(scan_reference_fn, *inputs, chunked=True), repeat=repeat
                ),
            }
            speedup = {k: ms[k] / ms["kernel"] for k in ("sequential", "chunked")}
            results.append(
                {"batch": b, "ms": ms, "kernel_speedup": speedup, "max_rel_err_vs_sequential": err}
            )
            rows.append(
                [
                    b,
                    ms["kernel"],
                    ms["sequential"],
                    ms["chunked"],
                    speedup["sequential"],
                    speedup["chunked"],
                    f"{err:.1e}",
                ]
            )
    print_table(
        "CPU selective scan, d=768 n=16 l=197 fp32, z + D + softplus(delta + bias) (ms, median)",
        ["batch", "kernel", "sequential", "chunked", "x vs seq", "x vs chunked", "rel err"],
        rows,
    )
    write_json(
        args.out, {"machine": machine_facts(), "shape": {"d": 768, "n": 16, "l": 197}, "results": results}
    )


if __name__ == "__main__":
    main()
