"""Memory and time of one training step: Vim-S, VMamba-B and ViT-S, one row per selective-scan backend.

Each (model, backend) runs in a process of its own, with glibc's mmap threshold fixed as `partool train`
fixes it on the CPU (`partool.train.allocator`; `--default-malloc` leaves it): build the model (random
weights), AdamW, then `--steps` training steps (forward, BCE loss, backward, AdamW step) on random images
at `--batch` × `--img-size`. Reported per row: the peak resident memory of that process on the CPU
(the kernel's VmHWM: weights, optimizer state and the step's activations), or
`torch.cuda.max_memory_allocated` on a GPU, and the median step time after the first (warm-up) step. ViT-S
has no scan, so it has one row. A process that passes `--max-rss-gb` is stopped by the watchdog and reported
as over the limit instead of taking the machine down (the `chunked` backend keeps every scan's
(batch, d, length, d_state) states for its backward: Vim-S at batch 16 needs more than 24 GB).
Measures only; never passes or fails on time or memory.

    python benchmarks/train_memory.py --device cpu --batch 16 --out benchmarks/results/train_memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, print_table, write_json

MODELS = {"vim-s": ("cpu", "chunked"), "vmamba-b": ("cpu", "chunked"), "vit-s": ("none",)}
CUDA_BACKENDS = {"cpu": "cuda", "chunked": "chunked", "none": "none"}


def one_run(
    model_name: str,
    backend: str,
    device: str,
    batch: int,
    img_size: tuple[int, int],
    steps: int,
    default_malloc: bool,
) -> dict:
    """The measurement itself, inside the child process: JSON-able results."""
    import torch
    import torch.nn.functional as F

    from partool.models import create_model
    from partool.ops import set_backend
    from partool.train.allocator import map_large_allocations

    if backend != "none":
        set_backend(backend)
    if device == "cpu" and not default_malloc:
        map_large_allocations()  # as `partool train` does on the CPU
    torch.manual_seed(0)
    model = create_model(model_name, 26, img_size=img_size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, *img_size, device=device)
    labels = torch.randint(0, 2, (batch, 26), device=device).float()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {"step_s": statistics.median(times[1:] or times), "first_step_s": times[0]}
    if device == "cuda":
        result["cuda_max_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def peak_rss_gb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def measure(args: argparse.Namespace, model_name: str, backend: str) -> dict:
    """Run one (model, backend) in a child process under a memory watchdog."""
    spec = json.dumps(
        [model_name, backend, args.device, args.batch, list(args.img), args.steps, args.default_malloc]
    )
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", spec], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak, over = 0.0, False
    while child.poll() is None:
        try:
            peak = max(peak, peak_rss_gb(child.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        if args.max_rss_gb and peak > args.max_rss_gb:
            child.kill()
            over = True
        time.sleep(0.05)
    out, err = child.communicate()
    row = {"model": model_name, "backend": backend, "peak_rss_gb": peak}
    if over:
        return row | {"status": f"stopped above {args.max_rss_gb} GB"}
    if child.returncode < 0:  # the kernel's OOM killer, or another signal
        return row | {"status": f"killed by signal {-child.returncode} (out of memory?)"}
    if child.returncode != 0:
        return row | {"status": f"failed ({child.returncode}): {err.strip().splitlines()[-1] if err else ''}"}
    result = json.loads(out.strip().splitlines()[-1])
    return row | {"status": "ok", "peak_rss_gb": max(peak, result.pop("peak_rss_gb", 0.0))} | result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--img-size", default="224x224", help="HEIGHTxWIDTH")
    parser.add_argument("--steps", type=int, default=3, help="training steps per run (the first is warm-up)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of " + ", ".join(MODELS))
    parser.add_argument(
        "--max-rss-gb", type=float, default=20.0, help="stop a run above this peak RSS (0: never)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in each run (0: torch's default)"
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's mmap threshold as it is (partool train fixes it)",
    )
    parser.add_argument("--out", help="JSON results file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model_name, backend, device, batch, img, steps, default_malloc = json.loads(args.child)
        result = one_run(model_name, backend, device, batch, tuple(img), steps, default_malloc)
        result["peak_rss_gb"] = peak_rss_gb(os.getpid())
        print(json.dumps(result))
        return
    from partool.cli.options import parse_size

    args.img = parse_size(args.img_size)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    rows = []
    for model_name in args.models.split(","):
        for backend in MODELS[model_name]:
            backend = CUDA_BACKENDS[backend] if args.device == "cuda" else backend
            rows.append(measure(args, model_name, backend))
            print(json.dumps(rows[-1]), flush=True)
    memory_key = "cuda_max_allocated_gb" if args.device == "cuda" else "peak_rss_gb"
    table = [
        [
            r["model"],
            r["backend"],
            r.get(memory_key, r["peak_rss_gb"]),
            r.get("step_s", float("nan")),
            r["status"],
        ]
        for r in rows
    ]
    title = f"One training step, batch {args.batch}, {args.img_size}, {args.device}"
    print_table(title, ["model", "backend", memory_key, "step s", "status"], table)
    write_json(
        args.out, {"machine": machine_facts(), "args": vars(args) | {"img": list(args.img)}, "rows": rows}
    )


if __name__ == "__main__":
    main()
