"""ONNX Runtime CPU latency at batch 1, 224x224: Vim-S (portable scan; plugin node + custom op) vs ViT-S/16.

Each model is exported by `partool.export.export_onnx` (untrained weights: latency does not depend on
them, except that onnxslim drops a ×1 or +0 with an init-time constant value, such as an RMSNorm weight of
ones, that a trained model keeps; so such tensors get a little noise first) and timed on the
CPUExecutionProvider with --threads intra-op threads, the models' runs interleaved in --rounds rounds.
Prints a table and writes JSON. Measures only; never passes or fails on time. `--profile` adds, per model, the node count by op type of the exported graph and
of ONNX Runtime's optimized graph, and ORT's profiler kernel time grouped by op type (per node, the
fastest of the timed runs, which a shared machine disturbs least).

    python benchmarks/onnx_cpu.py --threads 2 --runs 24 --rounds 4 --out benchmarks/results/onnx_cpu.json
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from partool.export import export_onnx
from partool.models import create_model
from partool.plugins import find_ort_custom_op_library
from partool.runtime.ort_session import create_session, kernel_backend

CASES = [("vit-s", "portable"), ("vim-s", "portable"), ("vim-s", "plugin")]


def _images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)


def perturb_constants(model: torch.nn.Module) -> torch.nn.Module:
    """Add N(0, 0.01) noise to every parameter whose entries are all equal (norm weights of ones, zero
    biases), so the exported graph keeps the ops a trained model's export has."""
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.add_(torch.randn_like(p) * 0.01)
    return model


def op_counts(proto: onnx.ModelProto) -> dict[str, int]:
    return dict(collections.Counter(n.op_type for n in proto.graph.node).most_common())


def profile_session(path: Path, threads: int, runs: int, tmp: Path) -> dict[str, object]:
    """Node counts (exported and ORT-optimized graphs) and profiled kernel ms per op type."""
    proto = onnx.load(str(path), load_external_data=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.optimized_model_filepath = str(tmp / f"{path.parent.name}-optimized.onnx")
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / f"{path.parent.name}-profile")
    options.log_severity_level = 3  # the note that an optimized model is hardware-specific
    if any(n.domain == "partool" for n in proto.graph.node):
        library = find_ort_custom_op_library()
        if library is None:
            return {"exported_ops": op_counts(proto)}
        options.register_custom_ops_library(str(library))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        session.run(None, {"images": _images()})
    fastest: dict[str, float] = {}
    op_of: dict[str, str] = {}
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"]
            fastest[name] = min(fastest.get(name, float("inf")), event["dur"] / 1e3)
            op_of[name] = event["args"]["op_name"]
    per_op: dict[str, float] = collections.defaultdict(float)
    for name, ms in fastest.items():
        per_op[op_of[name]] += ms
    optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    return {
        "exported_ops": op_counts(proto),
        "optimized_ops": op_counts(optimized),
        "kernel_ms_by_op": {k: round(v, 2) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])},
    }


def time_sessions(paths: list[Path], threads: int, runs: int, rounds: int, warmup: int = 3) -> list[dict]:
    """Latency of each model, its `runs` spread over `rounds` interleaved rounds (model 1, 2, 3, 1, 2, 3,
    ...), so that a slow phase of a shared machine falls on every model alike. Each round opens a fresh
    session and closes it after, so no other session's spinning intra-op threads compete with it."""
    images = _images()
    times: list[list[float]] = [[] for _ in paths]
    per_round = -(-runs // rounds)
    for _ in range(rounds):
        for i, path in enumerate(paths):
            session = create_session(path, threads=threads)
            for _ in range(warmup):
                session.run(None, {"images": images})
            for _ in range(per_round):
                start = time.perf_counter()
                session.run(None, {"images": images})
                times[i].append((time.perf_counter() - start) * 1e3)
            del session
    return [
        {"median_ms": float(np.median(t)), "min_ms": float(np.min(t)), "p90_ms": float(np.percentile(t, 90))}
        for t in times
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per model")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds the runs are spread over")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/onnx_cpu.json"))
    parser.add_argument("--profile", action="store_true", help="op counts and ORT kernel time per op type")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, paths = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, scan in CASES:
            model = perturb_constants(create_model(name, 26, img_size=(224, 224)).eval())
            start = time.perf_counter()
            path = export_onnx(model, Path(tmp) / f"{name}-{scan}" / "model.onnx", scan=scan, meta={})
            export_s = time.perf_counter() - start
            rows.append({"model": name, "scan": scan if name != "vit-s" else "-", "export_s": round(export_s, 1),
                         "file_mb": round(path.stat().st_size / 1e6, 1)})  # fmt: skip
            paths.append(path)
            print(f"exported {name} {rows[-1]['scan']} in {export_s:.1f} s", flush=True)
        for row, path, timing in zip(
            rows, paths, time_sessions(paths, args.threads, args.runs, args.rounds), strict=True
        ):
            row |= timing
            print(
                f"{row['model']:6s} {row['scan']:9s} median {row['median_ms']:8.1f} ms  "
                f"min {row['min_ms']:8.1f} ms",
                flush=True,
            )
            if args.profile:
                row |= profile_session(path, args.threads, args.runs, Path(tmp))
                for key in ("exported_ops", "optimized_ops", "kernel_ms_by_op"):
                    if key in row:
                        print(f"  {key}: {row[key]}", flush=True)
    vit = next(r["median_ms"] for r in rows if r["model"] == "vit-s")
    for row in rows:
        row["vs_vit_s"] = round(row["median_ms"] / vit, 2)
        print(f"{row['model']:6s} {row['scan']:9s} {row['median_ms']:8.1f} ms  {row['vs_vit_s']:5.2f}x ViT-S")
    result = {
        "threads": args.threads,
        "runs": args.runs,
        "rounds": args.rounds,
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
