"""`partool export`'s steps after the FP32 ONNX: the FP16/INT8 variant and its report, the engine, Triton.

Folders (defaults, inside the run folder; `--out` replaces the last one):
  RUN/onnx-SCAN               the FP32 graph (always written: every variant is measured against it)
  RUN/onnx-SCAN-fp16|int8     --format onnx with --fp16/--int8
  RUN/engine-SCAN-PRECISION   --format engine: model.onnx (FP32, or Q/DQ for INT8), build_engine.sh,
                              model.engine when TensorRT is here, partool.json with the "engine" section
  RUN/triton                  --format triton: the model repository
Each folder is self-contained (model + partool.json), so it can be copied to the target as it is.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from partool.artifacts import META, atomic_path, atomic_write_json
from partool.errors import UserError
from partool.export.onnx_export import DEFAULT_OPSET, MODEL_FILE, export_run
from partool.export.quantize import (
    DEFAULT_CALIB_COUNT,
    accuracy_report,
    calibration_batches,
    convert_fp16,
    quantize_int8,
)
from partool.export.tensorrt_build import ENGINE_FILE, TIMING_CACHE, BatchProfile, EngineSpec, build_engine

Echo = Callable[[str], None]


@dataclass(frozen=True)
class TritonOptions:
    platform: str = "onnxruntime"  # or "tensorrt"
    name: str | None = None
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 1000
    instance_count: int = 1


@dataclass(frozen=True)
class ExportPlan:
    """What `partool export` makes, after the command line and the profile are merged."""

    scan: str = "plugin"
    precision: str = "fp32"
    format: str = "onnx"
    opset: int = DEFAULT_OPSET
    calib: str | None = None  # dataset spec; default: the run's data
    calib_count: int = DEFAULT_CALIB_COUNT
    weight_bits: int | None = None  # INT8 weight range, 7 or 8; None: by target (int8_weight_bits)
    eval: str | None = None  # dataset spec whose test split measures the drop; default: the run's data
    batch: BatchProfile = field(default_factory=BatchProfile)
    plugin: Path | None = None
    workspace_mib: int | None = None
    triton: TritonOptions = field(default_factory=TritonOptions)
    profile: str | None = None


def int8_weight_bits(plan: ExportPlan) -> int:
    """The plan's INT8 weight range: 8 bits for TensorRT engines (int32 accumulation), 7 for ONNX files,
    which ONNX Runtime may run on an x86 CPU whose int8 GEMM saturates full-range weights (quantize.py)."""
    if plan.weight_bits is not None:
        return plan.weight_bits
    tensorrt = plan.format == "engine" or (plan.format == "triton" and plan.triton.platform == "tensorrt")
    return 8 if tensorrt else 7


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _meta(folder: Path) -> dict[str, Any]:
    import json

    return json.loads((folder / META).read_text(encoding="utf-8"))


def _variant(fp32: Path, folder: Path, plan: ExportPlan, echo: Echo) -> Path:
    """FP16/INT8 ONNX of `fp32` in `folder` with partool.json (export.precision, quantization, accuracy)."""
    meta = _meta(fp32.parent)
    proto = onnx.load(str(fp32))
    if plan.precision == "int8":
        spec = plan.calib or meta["data"]
        echo(f"calibrating on {plan.calib_count} images of {spec} ...")
        batches = calibration_batches(spec, meta, plan.calib_count)
        out, info = quantize_int8(proto, batches, int8_weight_bits(plan))
        info = {**info, "calib": spec, "calib_count": plan.calib_count}
    else:
        out, info = convert_fp16(proto)
    onnx.checker.check_model(out)
    path = folder / MODEL_FILE
    with atomic_path(path) as tmp:
        onnx.save(out, tmp)
    export = {**meta["export"], "precision": plan.precision, "file": path.name, "conversion": info}
    atomic_write_json(folder / META, {**meta, "export": export})
    spec = plan.eval or meta["data"]
    echo(f"measuring {plan.precision} against fp32 on {spec} test ...")
    report = accuracy_report(fp32, path, plan.precision, spec, "test")
    atomic_write_json(folder / META, {**meta, "export": {**export, "accuracy": report}})
    echo(format_report(report, plan.precision))
    return path


def format_report(report: dict[str, Any], precision: str) -> str:
    ref, var = report["fp32"], report[precision]
    return (
        f"{precision} vs fp32 on {report['eval']['data']} {report['eval']['split']} "
        f"({report['eval']['num_images']} images): mA {100 * var['ma']:.2f} vs {100 * ref['ma']:.2f} "
        f"(drop {report['ma_drop_points']:.2f} points), F1 {100 * var['f1']:.2f} vs {100 * ref['f1']:.2f} "
        f"(drop {report['f1_drop_points']:.2f}); size {var['bytes'] / 1e6:.2f} MB vs {ref['bytes'] / 1e6:.2f} MB "
        f"({100 * report['size_ratio']:.1f}%)"
    )


def _engine_spec(onnx_path: Path, engine: Path, plan: ExportPlan, cache: Path) -> EngineSpec:
    from partool.export.triton import uses_plugin
    from partool.plugins import TRT_PLUGIN_LIB, default_build_dir, find_trt_plugin_library

    proto = onnx.load(str(onnx_path), load_external_data=False)
    value = proto.graph.input[0]
    dims = tuple(d.dim_value for d in value.type.tensor_type.shape.dim[1:])
    plugin = None
    if uses_plugin(proto):
        plugin = plan.plugin or find_trt_plugin_library() or default_build_dir() / "lib" / TRT_PLUGIN_LIB
        plugin = Path(plugin).expanduser().absolute()
    return EngineSpec(
        onnx=onnx_path.absolute(),
        engine=engine.absolute(),
        input_name=value.name,
        image_shape=dims,  # type: ignore[arg-type]
        precision=plan.precision,
        batch=plan.batch,
        plugin=plugin,
        timing_cache=cache.absolute(),
        workspace_mib=plan.workspace_mib,
    )


def _engine(folder: Path, onnx_path: Path, engine: Path, plan: ExportPlan) -> Path:
    """Build `engine` from `onnx_path` (or raise UserError with the trtexec command); records its metadata."""
    spec = _engine_spec(onnx_path, engine, plan, folder / TIMING_CACHE)
    info = build_engine(spec)
    meta = _meta(folder)
    atomic_write_json(folder / META, {**meta, "engine": info})
    return engine


def run_export(run: Path, out: Path | None, plan: ExportPlan, echo: Echo) -> dict[str, Any]:
    """All of `partool export RUN`; returns {"fp32": path, "model": path, ...} of what was written."""
    run = Path(run)
    precision_tag = "" if plan.precision == "fp32" else f"-{plan.precision}"
    plain_onnx = plan.format == "onnx" and plan.precision == "fp32"
    fp32_dir = out if plain_onnx and out is not None else run / f"onnx-{plan.scan}"
    fp32 = export_run(run, fp32_dir, scan=plan.scan, opset=plan.opset)
    written: dict[str, Any] = {"fp32": fp32}
    if plan.profile:
        atomic_write_json(fp32_dir / META, {**_meta(fp32_dir), "profile": plan.profile})
    if plan.format == "onnx":
        if plan.precision != "fp32":
            folder = out or run / f"onnx-{plan.scan}{precision_tag}"
            written["model"] = _variant(fp32, folder, plan, echo)
        else:
            written["model"] = fp32
        return written
    if plan.format == "engine":
        folder = out or run / f"engine-{plan.scan}-{plan.precision}"
        source = _source_onnx(fp32, folder, plan, echo)
        written["model"] = source
        written["engine"] = _engine(folder, source, folder / ENGINE_FILE, plan)
        return written
    if plan.format == "triton":
        return {**written, **_triton(run, out or run / "triton", fp32, plan, echo)}
    raise UserError(f"unknown --format {plan.format!r}; choose onnx, engine or triton")


def _source_onnx(fp32: Path, folder: Path, plan: ExportPlan, echo: Echo) -> Path:
    """The graph an engine is built from, in `folder`: the Q/DQ graph for INT8, else the FP32 graph."""
    if plan.precision == "int8":
        return _variant(fp32, folder, plan, echo)
    folder.mkdir(parents=True, exist_ok=True)
    _copy(fp32, folder / MODEL_FILE)
    meta = _meta(fp32.parent)
    atomic_write_json(folder / META, {**meta, "export": {**meta["export"], "precision": plan.precision}})
    return folder / MODEL_FILE


def _triton(run: Path, repo: Path, fp32: Path, plan: ExportPlan, echo: Echo) -> dict[str, Any]:
    from partool.export.triton import model_name, write_repository

    opts = plan.triton
    name = model_name(opts.name or f"{run.name}-{plan.scan}-{plan.precision}")
    if opts.platform == "onnxruntime":
        source = fp32
        if plan.precision != "fp32":
            source = _variant(fp32, run / f"onnx-{plan.scan}-{plan.precision}", plan, echo)
        folder = write_repository(
            repo, name, source, _meta(source.parent), "onnxruntime", plan.batch.max,
            opts.preferred_batch_sizes, opts.max_queue_delay_us, opts.instance_count,
            op_library=str(plan.plugin) if plan.plugin else None,
        )  # fmt: skip
        return {"repository": repo, "model": folder / "1" / MODEL_FILE}
    if plan.batch.min != 1:
        raise UserError(
            f"--min-batch {plan.batch.min}: Triton's dynamic batcher sends any batch from 1 to max_batch_size, "
            "so a Triton engine needs --min-batch 1"
        )
    build = repo / name / "engine-build"  # not a numeric folder: Triton does not read it as a version
    source = _source_onnx(fp32, build, plan, echo)
    folder = repo / name
    plan_file = folder / "1" / "model.plan"
    write_repository(
        repo, name, source, _meta(build), "tensorrt", plan.batch.max, opts.preferred_batch_sizes,
        opts.max_queue_delay_us, opts.instance_count,
    )  # fmt: skip
    engine = _engine(build, source, plan_file, plan)
    atomic_write_json(folder / META, {**_meta(folder), "engine": _meta(build)["engine"]})
    return {"repository": repo, "model": engine}
