"""`partool plugins build | path | check`: build the native kernels (and the TensorRT plugin and ONNX Runtime
custom op), say where they are, and check the kernels against references."""

from __future__ import annotations

from pathlib import Path

import typer

from partool.cli.output import print_json, print_table
from partool.plugins import DEFAULT_CUDA_ARCHS

plugins_app = typer.Typer(
    help="Native kernels (libpartool_kernels), the TensorRT plugin and the ONNX Runtime custom op: build them, "
    "find them, check them.",
    no_args_is_help=True,
)


@plugins_app.command("build")
def build(
    cuda_archs: str = typer.Option(
        DEFAULT_CUDA_ARCHS,
        "--cuda-archs",
        help="CUDA compute capabilities, ';'-separated (CMAKE_CUDA_ARCHITECTURES); 'none' for CPU only.",
    ),
    tensorrt_include: Path | None = typer.Option(
        None,
        "--tensorrt-include",
        help="TensorRT include/ directory (holds NvInfer.h) to build the plugin (default: "
        "$TENSORRT_INCLUDE_DIR, else the newest ~/.cache/partool/tensorrt/<version>/include, else system paths).",
    ),
    ort_include: Path | None = typer.Option(
        None,
        "--ort-include",
        help="ONNX Runtime include/ directory (holds onnxruntime_c_api.h) to build the custom-op library "
        "(default: $ONNXRUNTIME_ROOT/include, else the newest ~/.cache/partool/onnxruntime/<version>/include, "
        "which `bash plugins/fetch_ort_headers.sh` fills from Debian's libonnxruntime-dev, else "
        "/usr/include/onnxruntime).",
    ),
    build_dir: Path | None = typer.Option(
        None,
        "--build-dir",
        help="CMake build directory (default <repo>/build/plugins, or ~/.cache/partool/plugins when the "
        "checkout is read-only).",
    ),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Parallel compile jobs."),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Configure and build plugins/ with CMake (CUDA kernels when nvcc is found).

    Example: `partool plugins build --cuda-archs "87" --tensorrt-include ~/TensorRT/include` (Jetson Orin);
    `partool plugins build --cuda-archs none --ort-include ~/onnxruntime/include` (CPU-only edge device).
    """
    from partool.plugins import build_plugins

    archs = None if cuda_archs.strip().lower() in ("", "none", "off") else cuda_archs
    result = build_plugins(build_dir, archs, tensorrt_include, jobs, quiet=json_out, ort_include=ort_include)
    payload = {
        "build_dir": str(result.build_dir),
        "kernels": str(result.kernels),
        "cuda": result.cuda,
        "trt_plugin": str(result.trt_plugin) if result.trt_plugin else None,
        "ort_ops": str(result.ort_ops) if result.ort_ops else None,
        "seconds": round(result.seconds, 1),
    }
    if json_out:
        print_json(payload)
        return
    rows = _rows(result.kernels, result.trt_plugin, result.ort_ops, result.cuda)
    print_table("partool plugins", ["library", "path"], rows)
    typer.echo(f"built in {result.seconds:.0f} s ({result.build_dir})")


@plugins_app.command("path")
def path(json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Print where the built libraries are; exit 2 when the kernels library is not built.

    Example: `trtexec --onnx=model.onnx --dynamicPlugins=$(partool plugins path --json | jq -r .trt_plugin)`;
    in Python, `SessionOptions().register_custom_ops_library(<ort_ops path>)` runs plugin graphs on ONNX Runtime.
    """
    from partool.plugins import find_kernels_library, find_ort_custom_op_library, find_trt_plugin_library

    kernels, trt, ort_ops = find_kernels_library(), find_trt_plugin_library(), find_ort_custom_op_library()
    if json_out:
        print_json(
            {
                name: str(lib) if lib else None
                for name, lib in [("kernels", kernels), ("trt_plugin", trt), ("ort_ops", ort_ops)]
            }
        )
    elif kernels is not None:
        print_table("partool plugins", ["library", "path"], _rows(kernels, trt, ort_ops, None))
    if kernels is None:
        typer.secho(
            "partool: libpartool_kernels is not built; run `partool plugins build`", err=True, fg="red"
        )
        raise typer.Exit(2)


@plugins_app.command("check")
def check(
    cpu_only: bool = typer.Option(
        False, "--cpu-only", help="Skip the CUDA kernels even where a GPU is present."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="List every case, not only the failing ones."),
) -> None:
    """Check every kernel against double-precision references: scan, bidirectional scan, conv1d and add +
    RMSNorm, in float32, float16 and bfloat16, strided layouts included; on the CPU (each code path this CPU
    can take) and on the GPU, each scan kernel variant, when the library has CUDA and a GPU is present. The
    program, partool_kernels_check beside the library, needs no Python: run it on a Jetson after
    `partool plugins build --cuda-archs 87`. Exit status 1 when a case fails.
    """
    from partool.plugins import run_kernels_check

    failed = False
    for run in run_kernels_check(cpu_only, verbose):
        typer.echo(f"== {run.label}")
        typer.echo(run.output.rstrip())
        failed = failed or run.returncode != 0
    if failed:
        typer.secho("partool: a kernel check failed (the FAIL lines above)", err=True, fg="red")
        raise typer.Exit(1)


def _rows(kernels: Path, trt: Path | None, ort_ops: Path | None, cuda: bool | None) -> list[list[str]]:
    label = "kernels" if cuda is None else f"kernels ({'CPU + CUDA' if cuda else 'CPU only'})"
    return [
        [label, str(kernels)],
        ["tensorrt plugin", str(trt) if trt else "not built (no TensorRT headers)"],
        ["onnxruntime custom op", str(ort_ops) if ort_ops else "not built (no onnxruntime_c_api.h)"],
    ]


def register(app: typer.Typer) -> None:
    app.add_typer(plugins_app, name="plugins")
