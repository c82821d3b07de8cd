"""End-to-end `partool video` throughput and per-stage latency on the SynthPAR street clip; optional soak run.

The clip is rendered by `render_clip` (or --clip FILE); the PAR model is an untrained registry model at
the given size (latency does not depend on the weights) or --model RUN|model.onnx|model.engine. The motion
detector and the built-in IoU tracker run as in `partool demo`. `--soak N` loops the clip to N frames and
samples the resident set size (psutil, else /proc/self/status) every 100 frames to show memory stays flat.
`--streams N` runs N streams in one process instead (a different street per stream, each looped, `--frames`
in all), as `partool video SRC… --save DIR --events FILE` does: aggregate and per-stream FPS, the PAR
batch sizes across streams, and the RSS slope (MB per 1000 frames, least squares after warm-up and over the
last half). `--python-heap` also traces the Python heap (tracemalloc, numpy arrays included), to tell a
Python-level leak (the heap grows with the RSS) from the native allocator settling (only the RSS grows,
and levels off). Measures only; never passes or fails on time.

    python benchmarks/video.py --threads 2 --out benchmarks/results/video_cpu.json
    python benchmarks/video.py --soak 3000 --out benchmarks/results/video_soak.json
    python benchmarks/video.py --streams 4 --frames 10000 --out benchmarks/results/video_streams.json
    python benchmarks/video.py --streams 4 --frames 10000 --python-heap --out benchmarks/results/video_heap.json
    python benchmarks/video.py --streams 4 --frames 20000 --segment 60 --out benchmarks/results/video_segments.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, print_table, write_json

from partool.artifacts import build_meta
from partool.cli.options import parse_size
from partool.data.street_clip import render_clip
from partool.data.synth import ATTRIBUTES
from partool.models import create_model
from partool.models.run_folder import save_run
from partool.runtime import load_backend
from partool.video.detectors import MotionDetector
from partool.video.pipeline import PipelineOptions, Stream, run_pipeline, run_streams
from partool.video.sinks import EventSink, VideoSink
from partool.video.sources import open_source
from partool.video.tracking import IoUTracker


def rss_mb() -> float:
    """Resident set size of this process in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return float("nan")


def memory_sample(frames: int) -> tuple[int, float, float | None]:
    """(frames so far, RSS MiB, traced Python heap MiB or None when tracemalloc is off)."""
    heap = tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing() else None
    return frames, rss_mb(), heap


class LoopCapture:
    """A video file read again from the start at its end, until `total` frames were delivered."""

    def __init__(self, path: str, total: int) -> None:
        self.path, self.total, self.done = path, total, 0
        self.capture = cv2.VideoCapture(path)

    def isOpened(self) -> bool:
        return self.capture.isOpened()

    def read(self):
        if self.done >= self.total:
            return False, None
        ok, image = self.capture.read()
        if not ok:
            self.capture.release()
            self.capture = cv2.VideoCapture(self.path)
            ok, image = self.capture.read()
        self.done += ok
        return ok, image

    def get(self, prop: int) -> float:
        return float(self.total) if prop == cv2.CAP_PROP_FRAME_COUNT else self.capture.get(prop)

    def release(self) -> None:
        self.capture.release()


def make_model(tmp: Path, name: str, size: tuple[int, int], depth: int | None) -> Path:
    kw = {"depth": depth} if depth else {}
    model = create_model(name, len(ATTRIBUTES), img_size=size, **kw).eval()
    return save_run(tmp / "run", model, build_meta(model, list(ATTRIBUTES), "synth"))


def run_once(clip: Path, model: Path, device: str, out: Path, frames: int | None, every: int) -> dict:
    backend = load_backend(model, device=device)
    target = str(clip)
    opener = (lambda _t: LoopCapture(target, frames)) if frames else cv2.VideoCapture
    samples: list[tuple[int, float, float | None]] = []

    def sample(result) -> None:
        if result.index % 100 == 0:
            samples.append(memory_sample(result.index))

    source = open_source(target, opener=opener)
    sinks = [EventSink(out / "events.jsonl"), VideoSink(out / "annotated.mp4")]
    summary = run_pipeline(source, backend, MotionDetector(), IoUTracker(), sinks,
                           PipelineOptions(every=every, on_frame=sample))  # fmt: skip
    return {"backend": backend.describe(), "summary": summary.to_dict(), "rss_samples": samples}


def run_streams_once(
    clips: list[Path],
    model: Path,
    device: str,
    out: Path,
    frames: int,
    every: int,
    segment: float | None = None,
) -> dict:
    """`frames` in all over len(clips) looped streams, one PAR backend; RSS sampled every 100 frames; each
    stream's video cut every `segment` seconds when given (`partool video --segment`)."""
    backend = load_backend(model, device=device)
    per_stream = frames // len(clips)
    samples: list[tuple[int, float, float | None]] = []
    done = [0]

    def sample(_result) -> None:
        done[0] += 1
        if done[0] % 100 == 0:
            samples.append(memory_sample(done[0]))

    streams = []
    for i, clip in enumerate(clips):
        target = str(clip)
        source = open_source(target, opener=lambda _t, target=target: LoopCapture(target, per_stream))
        own = [VideoSink(out / "videos" / f"cam{i}.mp4", segment)]
        streams.append(Stream(f"cam{i}", source, MotionDetector(), IoUTracker(), own))
    summary = run_streams(streams, backend, [EventSink(out / "events.jsonl")],
                          PipelineOptions(every=every, on_frame=sample))  # fmt: skip
    return {"backend": backend.describe(), "summary": summary.to_dict(), "rss_samples": samples}


def rss_report(samples: list[tuple[int, float, float | None]]) -> dict | None:
    """First / after warm-up / last / max RSS, its slope after warm-up (first quarter left out) and over the
    last half, and the same slopes of the traced Python heap when it was traced."""
    if len(samples) < 4:
        return None
    idx, mb = np.array([s[0] for s in samples], float), np.array([s[1] for s in samples])
    warm, half = len(samples) // 4, len(samples) // 2  # allocator, model and background models warming up

    def slope(values: np.ndarray, start: int) -> float:
        return round(float(np.polyfit(idx[start:], values[start:], 1)[0] * 1000), 3)

    report = {"first_mb": round(float(mb[0]), 1), "after_warmup_mb": round(float(mb[warm]), 1),
              "last_mb": round(float(mb[-1]), 1), "max_mb": round(float(mb.max()), 1),
              "slope_mb_per_1000_frames": slope(mb, warm),
              "slope_last_half_mb_per_1000_frames": slope(mb, half)}  # fmt: skip
    if samples[0][2] is not None:
        heap = np.array([s[2] for s in samples], float)
        report |= {"python_heap_after_warmup_mb": round(float(heap[warm]), 2),
                   "python_heap_last_mb": round(float(heap[-1]), 2),
                   "python_heap_slope_mb_per_1000_frames": slope(heap, warm)}  # fmt: skip
    return report


def streams_table(result: dict) -> None:
    """Per-stream and aggregate FPS, PAR batch sizes, stage latency and RSS of a --streams run."""
    s = result["summary"]
    rows = [[t["stream"], t["frames"], round(t["fps"], 1), t["dropped_frames"], t["tracks"], t["crops"]]
            for t in s["streams"]]  # fmt: skip
    rows.append(["ALL", s["frames"], round(s["fps"], 1), "-", s["tracks"], s["crops"]])
    print_table("partool video: streams", ["stream", "frames", "FPS", "dropped", "tracks", "crops"], rows)
    stages = [
        [stage, st["calls"], st["mean_ms"], st["p50_ms"], st["p95_ms"]] for stage, st in s["stages"].items()
    ]
    print_table("per-stage latency (ms)", ["stage", "calls", "mean", "p50", "p95"], stages)
    batches = s["par_batches"]
    print(f"PAR batches: {s['par_calls']} calls, mean {batches['mean']}, max {batches['max']}, "
          f"histogram {batches['histogram']}")  # fmt: skip
    print(f"RSS: {result['rss']}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, help="video to run on (default: render a SynthPAR clip)")
    parser.add_argument("--size", default="640x360", help="rendered clip size WxH")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--model", type=Path, help="run folder / model.onnx / model.engine (default: untrained)"
    )
    parser.add_argument("--model-name", default="vim-t")
    parser.add_argument("--img-size", default="128x64", help="HxW of the untrained model")
    parser.add_argument(
        "--depth", type=int, default=None, help="Vim depth of the untrained model (default: full)"
    )
    parser.add_argument(
        "--onnx", action="store_true", help="also export the untrained model and run onnxruntime"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--soak", type=int, default=0, help="loop the clip to N frames and track RSS")
    parser.add_argument("--streams", type=int, default=0, help="run N streams in one process (0: one)")
    parser.add_argument("--frames", type=int, default=10_000, help="with --streams: frames in all")
    parser.add_argument(
        "--segment", type=float, default=None, help="with --streams: cut each video every N seconds"
    )
    parser.add_argument(
        "--python-heap", action="store_true", help="also trace the Python heap (tracemalloc; slower)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/video.json"))
    return parser.parse_args()


def make_clips(args: argparse.Namespace, tmp: Path) -> list[Path]:
    """--clip, or one rendered street per stream (seeds 0, 1, …: different people in each)."""
    if args.clip is not None:
        return [args.clip] * max(1, args.streams)
    w, h = parse_size(args.size, "--size", "WIDTHxHEIGHT", "640x360")
    return [
        tmp
        / render_clip(str(tmp / f"clip{i}.mp4"), seconds=args.seconds, fps=15, size=(w, h), seed=i)["video"]
        for i in range(max(1, args.streams))
    ]


def make_models(args: argparse.Namespace, tmp: Path) -> dict[str, Path]:
    if args.model is not None:
        return {args.model.suffix or "run": args.model}
    models = {"torch": make_model(tmp, args.model_name, parse_size(args.img_size), args.depth)}
    if args.onnx:
        from partool.export import export_run

        models["onnxruntime"] = export_run(models["torch"], tmp / "onnx", scan="portable")
    return models


def single_table(results: dict[str, dict]) -> None:
    rows = []
    for label, r in results.items():
        s = r["summary"]
        for stage, st in s["stages"].items():
            rows.append([label, stage, st["calls"], st["mean_ms"], st["p50_ms"], st["p95_ms"]])
        rows.append([label, "END-TO-END FPS", s["frames"], round(s["fps"], 1), "-", "-"])
    print_table(
        "partool video: per-stage latency (ms)", ["backend", "stage", "calls", "mean", "p50", "p95"], rows
    )
    for label, r in results.items():
        if r.get("rss"):
            print(f"{label}: RSS {r['rss']}")


def main() -> None:
    args = parse_args()
    if args.python_heap:
        tracemalloc.start()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clips = make_clips(args, tmp)
        results = {}
        for label, model in make_models(args, tmp).items():
            out = tmp / f"out-{label}"
            out.mkdir()
            if args.streams:
                results[label] = run_streams_once(
                    clips, model, args.device, out, args.frames, args.every, args.segment
                )
            else:
                results[label] = run_once(clips[0], model, args.device, out, args.soak or None, args.every)
            results[label]["rss"] = rss_report(results[label]["rss_samples"])
    if args.streams:
        for result in results.values():
            streams_table(result)
    else:
        single_table(results)
    payload = {
        "machine": machine_facts(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "results": results,
    }
    write_json(str(args.out) if args.out else None, payload)


if __name__ == "__main__":
    main()
