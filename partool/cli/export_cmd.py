"""`partool export RUN`: a trained run folder -> ONNX (FP32/FP16/INT8), a TensorRT engine or a Triton repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from partool.errors import UserError


def _pick(cli: Any, profile: Any, default: Any) -> Any:
    """The command line wins over the profile, the profile over the built-in default."""
    return cli if cli is not None else profile if profile is not None else default


def build_plan(
    *,
    profile: str | None,
    scan: str | None,
    fp16: bool,
    int8: bool,
    fmt: str | None,
    opset: int | None,
    calib: str | None,
    calib_count: int | None,
    eval_spec: str | None,
    min_batch: int | None,
    opt_batch: int | None,
    max_batch: int | None,
    plugin: Path | None,
    triton_platform: str | None,
    triton_name: str | None,
    weight_bits: int | None = None,
):
    """Merge the command line and `--profile` into an ExportPlan (validated)."""
    from partool.export.onnx_export import DEFAULT_OPSET
    from partool.export.pipeline import ExportPlan, TritonOptions
    from partool.export.profiles import FORMATS, SCANS, load_profile
    from partool.export.quantize import DEFAULT_CALIB_COUNT
    from partool.export.tensorrt_build import BatchProfile

    prof = load_profile(profile) if profile else None
    get = prof.get if prof else (lambda key, default=None: default)
    if fp16 and int8:
        raise UserError("--fp16 and --int8 exclude each other; pick one")
    precision = "fp16" if fp16 else "int8" if int8 else get("precision.mode", "fp32")
    weight_bits = _pick(weight_bits, get("precision.weight_bits"), None)
    if weight_bits not in (None, 7, 8):
        raise UserError(f"--int8-weight-bits {weight_bits}: choose 7 or 8")
    fmt = _pick(fmt, get("format"), "onnx")
    scan = _pick(scan, get("onnx.scan"), "plugin")
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if scan not in SCANS:
        raise UserError(f"unknown --scan {scan!r}; choose one of {', '.join(SCANS)}")
    if triton_platform not in (None, "onnxruntime", "tensorrt"):
        raise UserError(f"unknown --triton-platform {triton_platform!r}; choose onnxruntime or tensorrt")
    batch = BatchProfile(
        _pick(min_batch, get("tensorrt.min_batch"), 1),
        _pick(opt_batch, get("tensorrt.opt_batch"), 8),
        _pick(max_batch, get("tensorrt.max_batch"), 32),
    )
    triton = TritonOptions(
        platform=triton_platform or "onnxruntime",
        name=triton_name,
        preferred_batch_sizes=tuple(get("triton.preferred_batch_sizes", [4, 8])),
        max_queue_delay_us=get("triton.max_queue_delay_us", 1000),
        instance_count=get("triton.instance_count", 1),
    )
    return ExportPlan(
        scan=scan,
        precision=precision,
        format=fmt,
        opset=_pick(opset, get("onnx.opset"), DEFAULT_OPSET),
        calib=calib,
        calib_count=_pick(calib_count, get("precision.calib_count"), DEFAULT_CALIB_COUNT),
        weight_bits=weight_bits,
        eval=eval_spec,
        batch=batch,
        plugin=plugin,
        workspace_mib=get("tensorrt.workspace_mib"),
        triton=triton,
        profile=prof.name if prof else None,
    )


def export(
    run: Path = typer.Argument(..., help="Run folder written by `partool train` (holds partool.json)."),
    scan: str | None = typer.Option(
        None,
        "--scan",
        help="plugin: one partool::SelectiveScan node per scan (TensorRT, ORT custom op); "
        "portable: standard ONNX ops only (any runtime). Default: the profile's, else plugin.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default: RUN/onnx-SCAN[-PREC], RUN/engine-SCAN-PREC or RUN/triton)."
    ),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (18 or newer)."),
    fp16: bool = typer.Option(False, "--fp16", help="FP16: weight ops in float16 (engines: the FP16 builder flag)."),
    int8: bool = typer.Option(
        False, "--int8", help="INT8 by explicit quantization (Q/DQ); reports the mA/F1 drop vs FP32."
    ),
    calib: str | None = typer.Option(None, "--calib", help="Dataset spec to calibrate INT8 on (default: the run's; train split)."),
    calib_count: int | None = typer.Option(None, "--calib-count", help="Calibration images (default 256)."),
    weight_bits: int | None = typer.Option(
        None, "--int8-weight-bits", help="INT8 weight range: 8 (±127) or 7 (±64). Default: 8 for TensorRT "
        "engines; 7 for ONNX files, because ONNX Runtime on x86 CPUs without VNNI saturates full-range weights."
    ),
    eval_spec: str | None = typer.Option(None, "--eval", help="Dataset spec whose test split measures the drop (default: the run's)."),
    fmt: str | None = typer.Option(None, "--format", help="onnx, engine (TensorRT) or triton (model repository)."),
    profile: str | None = typer.Option(None, "--profile", help="Export profile: a shipped NAME (export/NAME.toml) or a PATH."),
    min_batch: int | None = typer.Option(None, "--min-batch", help="Smallest batch of the engine profile (default 1)."),
    opt_batch: int | None = typer.Option(None, "--opt-batch", help="Batch the engine is tuned for (default 8)."),
    max_batch: int | None = typer.Option(None, "--max-batch", help="Largest batch (engine profile, Triton max_batch_size; default 32)."),
    plugin: Path | None = typer.Option(
        None, "--plugin", help="Plugin library: TensorRT plugin for engines (default: the built one); for Triton "
        "onnxruntime models of plugin graphs, the ORT custom-op library's path in the Triton container."
    ),
    triton_platform: str | None = typer.Option(None, "--triton-platform", help="onnxruntime (default) or tensorrt."),
    triton_name: str | None = typer.Option(None, "--triton-name", help="Model name in the repository (default: RUN-SCAN-PREC)."),
) -> None:  # fmt: skip
    """Export a trained run to ONNX (dynamic batch, input `images`, output `logits`), optionally FP16/INT8, as a
    TensorRT engine or as a Triton model repository.

    Without TensorRT here, `--format engine` writes build_engine.sh, prints the trtexec command that builds the
    engine on the target and exits with status 2.

    Examples:

      partool export runs/vim-s-pa100k --scan portable

      partool export runs/vim-s-pa100k --int8 --calib pa100k:/data/PA100k --calib-count 512

      partool export runs/vim-s-pa100k --profile jetson-orin-nano-int8

      partool export runs/vim-s-pa100k --format triton --scan portable --fp16
    """
    from partool.export.pipeline import run_export

    plan = build_plan(
        profile=profile, scan=scan, fp16=fp16, int8=int8, fmt=fmt, opset=opset, calib=calib,
        calib_count=calib_count, eval_spec=eval_spec, min_batch=min_batch, opt_batch=opt_batch,
        max_batch=max_batch, plugin=plugin, triton_platform=triton_platform, triton_name=triton_name,
        weight_bits=weight_bits,
    )  # fmt: skip
    written = run_export(run, out, plan, typer.echo)
    for key, path in written.items():
        path = Path(path)
        detail = f" ({path.stat().st_size / 1e6:.1f} MB)" if path.is_file() else ""
        typer.echo(f"wrote {key}: {path}{detail}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
