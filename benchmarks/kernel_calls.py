"""Kernel calls per model forward, counted without a GPU: what a CUDA graph of an eager fp16 forward
replays, one kernel per call.

Every PyTorch op that reaches the dispatcher and writes new memory (views, aliases and allocations
launch nothing) counts once, and so does every call into libpartool_kernels. At batch 1 on a GPU each
kernel costs a few microseconds however small its work, so this count sets a floor under latency.

    python benchmarks/kernel_calls.py --out runs/bench/kernel_calls.json [--models vim-s vit-s] [--batch 1 8]

The `cpu` kernel backend stands in for `cuda` (the model code takes the same path on both), against
the `chunked` PyTorch scan.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, print_table, watch_library_calls, write_json

from partool.cli.options import parse_size
from partool.models import create_model
from partool.ops import available_backends, set_backend

NO_KERNEL = ("aten::empty", "aten::new_empty", "aten::detach", "aten::lift")


class KernelCounter(TorchDispatchMode):
    """Counts the ops of a forward that launch a kernel: their outputs are not views of their inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.name()
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
        }
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        aliases = bool(outputs) and all(t.untyped_storage().data_ptr() in inputs for t in outputs)
        if not aliases and not name.startswith(NO_KERNEL):
            self.counts[name] += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["vim-s", "vit-s"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--img-size", default="224x224", help="HxW")
    parser.add_argument("--out", help="write results as JSON here")
    args = parser.parse_args()
    if not available_backends().get("cpu"):
        sys.exit("benchmarks/kernel_calls.py needs libpartool_kernels: run `partool plugins build`")
    img_size = parse_size(args.img_size)
    library: collections.Counter[str] = collections.Counter()
    watch_library_calls(lambda entry, _seconds: library.update([entry]))
    rows = []
    for name in args.models:
        model = create_model(name, num_attrs=26, img_size=img_size).eval().half()
        for backend in ("chunked", "cpu") if name.startswith(("vim", "vmamba")) else ("-",):
            set_backend(None if backend == "-" else backend)
            for batch in args.batch:
                images = torch.randn(batch, 3, *img_size).half()
                with torch.inference_mode():
                    model(images)  # cached constants are made on the first call
                    library.clear()
                    with KernelCounter() as counter:
                        model(images)
                counts = counter.counts + library
                rows.append(
                    {"model": name, "scan": backend, "batch": batch, "kernel_calls": sum(counts.values()),
                     "top": dict(counts.most_common(8))}
                )  # fmt: skip
                print(rows[-1], flush=True)
    set_backend(None)
    print_table(
        "Kernel calls per fp16 forward (what a CUDA graph replays)",
        ["model", "scan", "batch", "kernel calls"],
        [[r["model"], r["scan"], r["batch"], r["kernel_calls"]] for r in rows],
    )
    write_json(args.out, {"machine": machine_facts(), "img_size": list(img_size), "rows": rows})


if __name__ == "__main__":
    main()
