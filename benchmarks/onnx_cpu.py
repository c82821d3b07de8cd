"""ONNX Runtime CPU latency at batch 1, 224x224: Vim-S (portable scan; plugin node + custom op) vs ViT-S/16.

Each model is exported by `partool.export.export_onnx` (untrained weights: latency does not depend on
them) and timed on the CPUExecutionProvider with --threads intra-op threads. Prints a table and writes
JSON. Measures only; never passes or fails on time.

    python benchmarks/onnx_cpu.py --threads 2 --runs 20 --out benchmarks/results/onnx_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from partool.export import export_onnx
from partool.export.ort_custom_op import create_session, kernel_backend
from partool.models import create_model

CASES = [("vit-s", "portable"), ("vim-s", "portable"), ("vim-s", "plugin")]


def time_session(path: Path, threads: int, runs: int, warmup: int = 3) -> dict[str, float]:
    session = create_session(path, threads=threads)
    images = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    for _ in range(warmup):
        session.run(None, {"images": images})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"images": images})
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "median_ms": float(np.median(times)),
        "min_ms": float(np.min(times)),
        "p90_ms": float(np.percentile(times, 90)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/onnx_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, scan in CASES:
            model = create_model(name, 26, img_size=(224, 224)).eval()
            start = time.perf_counter()
            path = export_onnx(model, Path(tmp) / f"{name}-{scan}" / "model.onnx", scan=scan, meta={})
            export_s = time.perf_counter() - start
            row = {"model": name, "scan": scan if name != "vit-s" else "-", "export_s": round(export_s, 1)}
            row |= time_session(path, args.threads, args.runs)
            row["file_mb"] = round(path.stat().st_size / 1e6, 1)
            rows.append(row)
            print(
                f"{name:6s} {row['scan']:9s} median {row['median_ms']:8.1f} ms  min {row['min_ms']:8.1f} ms  "
                f"export {export_s:6.1f} s",
                flush=True,
            )
    result = {
        "threads": args.threads,
        "runs": args.runs,
        "scan_custom_op": kernel_backend(),
        "onnxruntime": __import__("onnxruntime").__version__,
        "cpu": platform.processor() or platform.machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
