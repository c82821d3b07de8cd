"""GPU: Vim-S PAR vs timm ViT-S/16 (or --model vmamba-b --baseline vit-b), fp16, CUDA graphs, same input
and batches, in one run.

For each scan backend that runs here (our `cuda` kernels, with the default and the state-split row
kernel, and `mamba_ssm` when installed; `--backends chunked` adds the reference as the floor), time the
Vim-S PAR forward at batch 1, 8 and 64 against ViT-S/16 with the same
PAR head, each captured in a CUDA graph and replayed (CUDA events, median of repeats). Prints a table and
writes JSON:

    python benchmarks/gpu_model.py --out $OUT/gpu_model.json [--img-size 224x224] [--batch 1 8 64] [--profile] [--compile-batches 64]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, print_table, write_json

from partool.cli.options import parse_size
from partool.models import create_model
from partool.ops import available_backends, set_backend
from partool.ops.kernel_abi import scan_tuner, use_scan_variant


def _replay_ms(graph: torch.cuda.CUDAGraph, repeat: int) -> float:
    """Mean ms per replay of `repeat` back-to-back replays (CUDA events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def cuda_graph_ms(fn: Callable[[], torch.Tensor], round_s: float = 0.2, rounds: int = 5) -> float:
    """Capture `fn` in a CUDA graph, replay it in rounds of about `round_s` seconds (5 to 50 replays);
    median ms per replay. Slow configurations get fewer replays, so a short GPU session fits them all."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up outside the graph (allocations, autotuning, lazy init)
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    repeat = max(5, min(50, round(1e3 * round_s / _replay_ms(graph, 3))))
    return statistics.median(_replay_ms(graph, repeat) for _ in range(rounds))


def model_ms(name: str, batch: int, img_size: tuple[int, int], compiled: bool = False) -> dict[str, float]:
    """{"ms": forward ms}. `compiled` runs the model through torch.compile first, then captures the result
    in the CUDA graph as well: the kernels are custom ops, so a Vim-S on them should trace as one graph
    (`graphs` counts them; more than 1 means graph breaks) with Inductor fusing the RMSNorms, residual adds
    and casts between the kernels."""
    model = create_model(name, num_attrs=26, img_size=img_size).cuda().half().eval()
    graphs: list[torch.fx.GraphModule] = []

    def counting_inductor(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
        from torch._inductor.compile_fx import compile_fx

        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    torch._dynamo.reset()
    forward = torch.compile(model, backend=counting_inductor) if compiled else model
    images = torch.randn(batch, 3, *img_size, device="cuda", dtype=torch.half)
    with torch.inference_mode():
        ms = cuda_graph_ms(lambda: forward(images))
    return {"ms": ms, "graphs": len(graphs)} if compiled else {"ms": ms}


def _timed_row(
    model: str, scan: str, batch: int, fn: Callable[[], dict[str, float]], vit: float
) -> dict[str, object]:
    """One table row; a configuration that fails to run is recorded with its error, not fatal."""
    row: dict[str, object] = {"model": model, "scan": scan, "batch": batch}
    try:
        timing = fn()
    except Exception as exc:  # a benchmark row, e.g. torch.compile unavailable: keep the other rows
        return {**row, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {**row, **timing, "vs_vit_s": timing["ms"] / vit}


def kernel_profile(
    name: str, batch: int, img_size: tuple[int, int], top: int = 25
) -> list[dict[str, object]]:
    """GPU time per forward of the `top` costliest kernels of an eager fp16 forward (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    model = create_model(name, num_attrs=26, img_size=img_size).cuda().half().eval()
    images = torch.randn(batch, 3, *img_size, device="cuda", dtype=torch.half)
    runs = 5
    with torch.inference_mode():
        for _ in range(3):
            model(images)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(runs):
                model(images)
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    total = sum(e.device_time_total for e in events) / runs
    return [
        {"kernel": "(all)", "us_per_forward": total, "calls_per_forward": sum(e.count for e in events) / runs}
    ] + [
        {
            "kernel": e.key[:120],
            "us_per_forward": e.device_time_total / runs,
            "calls_per_forward": e.count / runs,
        }
        for e in events[:top]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--img-size", default="224x224", help="HxW, e.g. 224x224 or 256x128")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="scan backends (default: cuda and mamba_ssm where they run)",
    )
    parser.add_argument(
        "--compile-batches", type=int, nargs="*", default=[],
        help="batches at which to also time torch.compile'd models (each compile takes ~0.5-1 min)",
    )  # fmt: skip
    parser.add_argument("--model", default="vim-s", help="the Mamba model to time (vim-s, vmamba-b, ...)")
    parser.add_argument("--baseline", default="vit-s", help="the Transformer it is compared with")
    parser.add_argument("--out", help="write results as JSON here")
    parser.add_argument(
        "--profile", action="store_true", help="also list the costliest GPU kernels of eager forwards"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu_model.py needs a CUDA GPU")
    img_size = parse_size(args.img_size)
    backends = args.backends or [
        name for name, ok in available_backends().items() if ok and name in ("cuda", "mamba_ssm")
    ]
    facts = {**machine_facts(), "gpu": torch.cuda.get_device_name(), "img_size": list(img_size)}
    rows: list[dict[str, object]] = []
    result: dict[str, object] = {
        "machine": facts,
        "model": args.model,
        "baseline": args.baseline,
        "rows": rows,
    }
    for batch in args.batch:
        vit = model_ms(args.baseline, batch, img_size)["ms"]
        rows.append({"model": args.baseline, "scan": "-", "batch": batch, "ms": vit, "vs_vit_s": 1.0})
        compile_here = batch in args.compile_batches
        if compile_here:
            compiled_vit = functools.partial(model_ms, args.baseline, batch, img_size, True)
            rows.append(_timed_row(args.baseline, "- + compile", batch, compiled_vit, vit))
        for backend in backends:
            # our cuda backend as it ships (each scan shape's variant timed on its first call), with the
            # library's default kernel and with the row kernel forced, and tuned with the glue around the
            # kernels compiled (Inductor); other backends once
            variants = [(backend, None, False)]
            if backend == "cuda":
                variants += [("cuda default kernel", "auto", False), ("cuda rows", "rows", False)]
                variants += [("cuda + compile", None, True)] if compile_here else []
            for label, variant, compiled in variants:
                set_backend(backend)
                try:
                    with use_scan_variant(variant) if backend == "cuda" else contextlib.nullcontext():
                        row = _timed_row(
                            args.model,
                            label,
                            batch,
                            functools.partial(model_ms, args.model, batch, img_size, compiled),
                            vit,
                        )
                finally:
                    set_backend(None)
                rows.append(row)
                print(row, flush=True)
        if "cuda" in backends:
            result["tuned_scan_variants"] = [[*key, name] for key, name in scan_tuner().chosen().items()]
        write_json(args.out, result)  # partial results survive a timeout
    print_table(
        f"PAR forward, fp16, CUDA graphs, {args.img_size}, {torch.cuda.get_device_name()}",
        ["model", "scan", "batch", "ms", f"× {args.baseline} time", "compiled graphs"],
        [
            [
                r["model"],
                r["scan"],
                r["batch"],
                r.get("ms", r.get("error")),
                r.get("vs_vit_s", "-"),
                r.get("graphs", "-"),
            ]
            for r in rows
        ],
    )
    if args.profile:
        profiles = result["profile"] = {}
        profiled = "cuda" if "cuda" in backends else backends[0]  # our kernels when they run here
        for batch in (1, args.batch[-1]):
            profiles[f"{args.baseline} b={batch}"] = kernel_profile(args.baseline, batch, img_size)
            set_backend(profiled)
            try:
                profiles[f"{args.model} {profiled} b={batch}"] = kernel_profile(args.model, batch, img_size)
            finally:
                set_backend(None)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
