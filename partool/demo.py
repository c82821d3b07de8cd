"""`partool demo`: the whole path offline on a CPU — SynthPAR data, a small Vim trained for a few minutes,
evaluation, portable ONNX export, and the video pipeline on a synthetic street clip scored against its
ground truth. Everything lands in one folder with a Markdown report.

Re-running reuses what is already there: a finished training run is kept (an interrupted one resumes),
so a second `partool demo` only redoes the fast steps.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from partool.artifacts import atomic_write_bytes, atomic_write_json
from partool.data import open_dataset
from partool.data.synth import ATTRIBUTES
from partool.errors import UserError
from partool.export import export_run
from partool.metrics import pedestrian_metrics
from partool.runtime.backend_eval import evaluate_run
from partool.train.loop import TrainConfig, train
from partool.video.query import parse_query, resolve_names
from partool.video.search_check import pick_query

METRIC_KEYS = ("ma", "acc", "prec", "recall", "f1", "f1_instance")
CLIP_STREAM = "street"  # the clip's stream name in events.jsonl and events.db


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    train_size: int = 4000  # synth training images; val and test get a quarter each
    epochs: int = 16
    img_size: tuple[int, int] = (128, 64)
    depth: int = 4  # a reduced Vim-T: 4 bidirectional Mamba layers of width 96
    embed_dim: int = 96
    batch_size: int = 32
    lr: float = 1e-3
    clip_seconds: float = 8.0
    clip_people: int = 5
    seed: int = 0
    # training crops framed like the motion detector's boxes for this share of the images (the rest as
    # SynthPAR draws them, which is what the test split holds); None trains on SynthPAR's own crops only
    detector_framing: dict[str, Any] | None = field(default_factory=lambda: {"share": 0.5})
    search: str | None = None  # the query checked against the clip's truth; None picks one from the truth
    retrain: bool = False
    log: Callable[[str], None] = field(default=print, repr=False)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every step and write `cfg.out/report.md` and `report.json`; returns the report data."""
    if cfg.search is not None:  # a bad query fails now, not after minutes of training
        resolve_names(parse_query(cfg.search), ATTRIBUTES)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = f"synth:{cfg.train_size}"
    report: dict[str, Any] = {"data": data, "config": _plain_config(cfg), "timings_s": {}}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        cfg.log(f"demo: {name}…")
        start = time.perf_counter()
        result = fn()
        report["timings_s"][name] = round(time.perf_counter() - start, 1)
        return result

    run_dir = out / "run"
    report["scan_kernels"] = step("CPU scan kernels", lambda: _cpu_kernels(cfg))
    report["training"] = step("train", lambda: _train(cfg, data, run_dir))
    report["baseline"] = step("baseline", lambda: _majority_baseline(data))
    report["eval_torch"] = step("evaluate (PyTorch)", lambda: _evaluate(run_dir, out, "torch"))
    onnx_path = step(
        "export ONNX (portable scan)", lambda: export_run(run_dir, out / "onnx", scan="portable")
    )
    report["onnx"] = str(onnx_path)
    # the test split's per-attribute mA: which attributes the demo's search can trust
    reliability = {a["attribute"]: a["ma"] for a in report["eval_torch"]["per_attribute"]}
    report["eval_onnx"] = step("evaluate (ONNX Runtime)", lambda: _evaluate(onnx_path, out, "onnx"))
    report["video"] = step(
        "video pipeline on the street clip", lambda: _video(cfg, onnx_path, out, reliability)
    )
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "report.md", render_markdown(report).encode())
    return report


def _plain_config(cfg: DemoConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items() if k != "log"}


def _cpu_kernels(cfg: DemoConfig) -> dict[str, Any]:
    """The native CPU scan kernels, built where they are missing and CMake and a C++ compiler exist (about
    10 s, CPU only): training on them is about 3x faster than on the chunked PyTorch scan, which the demo
    falls back to otherwise."""
    from partool.ops import available_backends
    from partool.plugins import build_plugins

    if available_backends().get("cpu"):
        return {"backend": "cpu", "built": False}
    cfg.log("demo: building the CPU scan kernels (`partool plugins build --cuda-archs none`)…")
    try:
        build_plugins(cuda_archs=None, quiet=True)
    except UserError as e:
        cfg.log(f"demo: training on the PyTorch scan, about 3x slower: the kernels could not be built ({e})")
        return {"backend": "chunked", "built": False, "why": str(e)}
    return {"backend": "cpu" if available_backends().get("cpu") else "chunked", "built": True}


def _train(cfg: DemoConfig, data: str, run_dir: Path) -> dict[str, Any]:
    finished = _finished(run_dir)
    if finished is not None and not cfg.retrain:
        cfg.log(f"demo: reusing the finished run in {run_dir} (--retrain to train again)")
        return finished
    config = TrainConfig(
        model="vim-t",
        data=data,
        out=run_dir,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        img_size=cfg.img_size,
        lr=cfg.lr,
        optimizer="adamw",  # from scratch, AdamW learns in a few epochs; SGD is the paper's fine-tuning choice
        weight_decay=0.05,
        warmup_epochs=1,
        model_kwargs={"depth": cfg.depth, "embed_dim": cfg.embed_dim},
        seed=cfg.seed,
        detector_framing=cfg.detector_framing,
        device="cpu",
        workers=0,
        resume=(run_dir / "last.pt").is_file() and not cfg.retrain,
        force=cfg.retrain,
    )
    result = train(config)
    return {
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "best_val_ma": result.best_ma,
        "history": result.history,
    }


def _finished(run_dir: Path) -> dict[str, Any] | None:
    """The training summary of a finished run in `run_dir`, or None."""
    try:
        meta = json.loads((run_dir / "partool.json").read_text())
        info = meta["training"]
    except (OSError, ValueError, KeyError):
        return None
    if not info.get("finished"):
        return None
    return {
        "best_epoch": info.get("best_epoch"),
        "epochs": info.get("epochs"),
        "best_val_ma": info.get("best_ma"),
        "history": info.get("history", []),
    }


def _majority_baseline(data: str) -> dict[str, float]:
    """Test metrics of answering every attribute with its training-split majority: mA 50 by construction."""
    prior = open_dataset(data, "train").pos_ratio()
    labels = open_dataset(data, "test").labels
    probs = (prior > 0.5).astype("float64")[None].repeat(len(labels), 0)
    m = pedestrian_metrics(probs, labels)
    return {k: getattr(m, k) for k in METRIC_KEYS}


def _evaluate(model: Path, out: Path, tag: str) -> dict[str, Any]:
    result = evaluate_run(
        model, split="test", device="cpu", workers=0, out=out / f"eval-{tag}", progress=False
    )
    return {k: result[k] for k in ("backend", "metrics", "per_attribute", "chart", "num_images")}


def _video(cfg: DemoConfig, onnx_path: Path, out: Path, reliability: dict[str, float]) -> dict[str, Any]:
    """The street clip through the pipeline into events.jsonl, annotated.mp4 and events.db, scored against
    its truth; then one search over events.db, checked against the truth too, and the gallery."""
    from partool.data.street_clip import render_clip
    from partool.runtime import load_backend
    from partool.video import FrameResult, PipelineOptions, run_pipeline
    from partool.video.box_stats import clip_box_stats
    from partool.video.detectors import make_detector
    from partool.video.event_store import EventStoreSink
    from partool.video.scoring import score_clip, track_people
    from partool.video.sinks import EventSink, VideoSink
    from partool.video.tracking import make_tracker

    truth = render_clip(str(out / "clip.mp4"), seconds=cfg.clip_seconds, fps=15.0, seed=cfg.seed,
                        num_people=cfg.clip_people)  # fmt: skip
    clip = out / truth["video"]
    backend = load_backend(onnx_path, device="cpu")
    frames: list[FrameResult] = []
    db, partial_db = out / "events.db", out / "events.db.partial"
    _remove_store(partial_db)  # left by a demo that was killed mid-clip
    summary = run_pipeline(
        str(clip),
        backend,
        make_detector("motion"),
        make_tracker("iou"),
        [EventSink(out / "events.jsonl"), VideoSink(out / "annotated.mp4"), EventStoreSink(partial_db)],
        PipelineOptions(on_frame=frames.append),
        name=CLIP_STREAM,
    )
    _remove_store(db)
    partial_db.replace(db)  # the sink has closed it, so SQLite has folded its WAL into the file
    score = score_clip(truth, frames, backend.threshold, list(backend.attributes))
    framing = clip_box_stats(truth, [(f.index, f.boxes) for f in frames])
    snapshot = _snapshot(out / "annotated.mp4", out / "annotated_frame.png", len(frames) * 2 // 3)
    query = cfg.search or pick_query(truth, list(backend.attributes), reliability)
    return {
        "clip": str(clip),
        "summary": summary.to_dict(),
        "score": score.to_dict(),
        "detector_framing": framing.to_dict(),
        "snapshot": str(snapshot) if snapshot else None,
        "search": {
            **_search(db, out, query, truth, track_people(truth, frames)),
            "picked": cfg.search is None,
        },
    }


def _remove_store(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


def _search(db: Path, out: Path, query: str, truth: dict[str, Any], people: dict[int, int]) -> dict[str, Any]:
    """`partool search events.db QUERY` checked against the truth, the answer's pictures in OUT/search/, and
    `partool report events.db --html gallery.html`."""
    from partool.video.event_store import open_store
    from partool.video.query import find_tracks
    from partool.video.report import gallery_page
    from partool.video.search_check import check_search

    conn = open_store(db)
    try:
        tracks = find_tracks(conn, query, [CLIP_STREAM], thumbnails=True).tracks
        check = check_search(query, tracks, truth, people)
        pictures = {}
        for old in (out / "search").glob("track-*.jpg"):
            old.unlink()
        for track in tracks:
            if track.thumbnail is not None:
                pictures[track.id] = out / "search" / f"track-{track.track}.jpg"
                atomic_write_bytes(pictures[track.id], track.thumbnail)
        page, _ = gallery_page(conn, "partool demo: the street clip")
    finally:
        conn.close()
    atomic_write_bytes(out / "gallery.html", page.encode())
    return {**check.to_dict(), "pictures": {str(k): str(v) for k, v in pictures.items()}}


def _snapshot(video: Path, png: Path, index: int) -> Path | None:
    """One annotated frame as PNG, for the report (None if the video cannot be read back)."""
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    if not ok:
        return None
    ok, encoded = cv2.imencode(".png", frame)
    if not ok:
        return None
    atomic_write_bytes(png, encoded.tobytes())
    return png


def render_markdown(report: dict[str, Any]) -> str:
    """The human report: metrics tables, pictures, the video's speed and its score against the truth."""
    out = Path(report["config"]["out"])

    def rel(path: str | None) -> str:
        return str(Path(path).resolve().relative_to(out.resolve())) if path else ""

    def pct(value: float) -> str:
        return f"{100 * value:.2f}"

    rows = [
        ("Vim (PyTorch)", report["eval_torch"]["metrics"]),
        ("Vim (ONNX Runtime, portable scan)", report["eval_onnx"]["metrics"]),
        ("majority baseline", report["baseline"]),
    ]
    video, score = report["video"], report["video"]["score"]
    summary = video["summary"]
    training = report["training"]
    lines = [
        "# partool demo",
        "",
        f"SynthPAR `{report['data']}`; model `vim-t` reduced to depth {report['config']['depth']}, width "
        f"{report['config']['embed_dim']}, trained from scratch on the CPU for {training['epochs']} epochs "
        f"(best validation mA {pct(training['best_val_ma'])} at epoch {training['best_epoch']}), its scan "
        f"{_scan_words(report.get('scan_kernels'))}.",
        "",
        f"## Test split ({report['eval_torch']['num_images']} images, %)",
        "",
        "| model | mA | Acc | Prec | Recall | F1 | F1 (instance) |",
        "|---|---|---|---|---|---|---|",
        *[f"| {name} | " + " | ".join(pct(m[k]) for k in METRIC_KEYS) + " |" for name, m in rows],
        "",
        "mA averages (TP/P + TN/N)/2 over attributes, so the majority answer scores exactly 50.",
        "",
        "![training loss](run/loss.png) ![validation mA](run/ma.png)",
        "",
        f"![per-attribute mA]({rel(report['eval_torch']['chart'])})",
        "",
        "## Video pipeline on the synthetic street clip",
        "",
        f"Motion detector → IoU tracker → PAR through ONNX Runtime → EMA + hysteresis smoothing. "
        f"{summary['frames']} frames at {summary['fps']:.1f} FPS end to end; {summary['par_calls']} PAR calls "
        f"for {summary['crops']} crops.",
        "",
        "| measured against the clip's ground truth | value |",
        "|---|---|",
        f"| detection recall (people ≥ 50 % visible, IoU ≥ 0.5) | {pct(score['detection_recall'])} % |",
        f"| detection precision (detections that are a person, IoU ≥ 0.5) | "
        f"{pct(score['detection_precision'])} % |",
        f"| people / matched tracks / extra tracks per person | {score['people']} / {score['tracks']} / "
        f"{score['id_switches']} |",
        f"| attribute accuracy per frame, raw | {pct(score['attribute_accuracy_raw'])} % |",
        f"| attribute accuracy per frame, smoothed | {pct(score['attribute_accuracy_smoothed'])} % |",
        f"| attribute flips, raw → smoothed | {score['flips_raw']} → {score['flips_smoothed']} |",
        "",
        *_framing_lines(video["detector_framing"]),
        "| stage | calls | mean ms | p50 ms | p95 ms |",
        "|---|---|---|---|---|",
        *[
            f"| {stage} | {s['calls']} | {s['mean_ms']:.2f} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} |"
            for stage, s in summary["stages"].items()
        ],
        "",
    ]
    if video["snapshot"]:
        lines += [f"![annotated frame]({rel(video['snapshot'])})", ""]
    lines += _search_lines(video["search"], out, rel)
    lines += [
        "Files: `annotated.mp4` (the clip with boxes and attributes), `events.jsonl` (track appeared, "
        "attribute changed, track left), `events.db` (the same as an event store: `partool search`, "
        "`partool report`), `gallery.html` (every track), `onnx/model.onnx` + `partool.json`, `run/` (the "
        "trained run: `partool eval runs/demo/run`, `partool predict runs/demo/run IMG`).",
        "",
        "Step timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()),
        "",
    ]
    return "\n".join(lines)


def _scan_words(kernels: dict[str, Any] | None) -> str:
    if not kernels or kernels["backend"] != "cpu":
        return "on the chunked PyTorch reference (`partool plugins build` makes training about 3x faster)"
    return "on partool's CPU kernels" + (" (built for this run)" if kernels["built"] else "")


def search_headline(search: dict[str, Any]) -> str:
    """'Precision 100 %, recall 50 %' of a search check ('-' where there was nothing to count)."""

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.0f} %"

    return f"Precision {percent(search['precision'])}, recall {percent(search['recall'])}"


def _search_lines(search: dict[str, Any], out: Path, rel: Callable[[str], str]) -> list[str]:
    """One `partool search` over events.db and its answer, each track set against the person it followed."""
    from partool.video.report import filter_fragment

    query, returned = search["query"], search["returned"]

    def people(ids: list[int]) -> str:
        return ", ".join(str(p) for p in ids) or "none"

    lines = [
        f"## Search: who walked by with `{query}`?",
        "",
        f"`partool search {out}/events.db '{query}'` returns {len(returned)} track"
        f"{'' if len(returned) == 1 else 's'}. From the clip's ground truth, the query holds for "
        f"{len(search['expected'])} of its {search['people']} people (person {people(search['expected'])}).",
        "",
    ]
    if search["picked"]:
        lines += [
            "The demo picked this query from the clip's truth and the test split, never from the pipeline's "
            "output: of the attribute pairs that hold for some but at most half of the people, the pair whose "
            "weaker attribute has the best test mA (`partool demo --search QUERY` checks another).",
            "",
        ]
    if returned:
        lines += [
            "| track | best picture | frames | attributes it was given | person it followed | the query holds for that person |",
            "|---|---|---|---|---|---|",
        ]
        for t in returned:
            picture = search["pictures"].get(str(t["id"]))
            image = f"![track {t['track']}]({rel(picture)})" if picture else "-"
            person = "nobody" if t["person"] is None else t["person"]
            lines.append(
                f"| {t['track']} | {image} | {t['first_frame']}–{t['last_frame']} | "
                f"{', '.join(t['attributes']) or '-'} | {person} | {'yes' if t['person_matches'] else '**no**'} |"
            )
        lines.append("")
    hits = sum(t["person_matches"] for t in returned)
    lines += [
        f"{search_headline(search)}: {hits} of {len(returned)} returned tracks follow such a person, "
        f"{len(search['found'])} of {len(search['expected'])} such people were found (missed: "
        f"{people(search['missed'])}).",
        "",
    ]
    fragment = filter_fragment(query)
    link = (
        f" — this search as the page's filter: [gallery.html#{fragment}](gallery.html#{fragment})"
        if fragment
        else ""
    )
    lines += [f"Every track with its best picture: [gallery.html](gallery.html){link}.", ""]
    return lines


def _framing_lines(stats: dict[str, Any]) -> list[str]:
    """How the detector frames people, against their true boxes: what the PAR model is shown."""
    return [
        f"Detector boxes against the true person boxes ({stats['count']} matched detections): centre "
        f"offset {stats['dx_mean']:+.3f} ± {stats['dx_std']:.3f} of the width, {stats['dy_mean']:+.3f} ± "
        f"{stats['dy_std']:.3f} of the height; width ×{math.exp(stats['log_sw_mean']):.3f} "
        f"(log spread {stats['log_sw_std']:.3f}), height ×{math.exp(stats['log_sh_mean']):.3f} (log spread "
        f"{stats['log_sh_std']:.3f}).",
        "",
    ]
