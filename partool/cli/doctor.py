"""`partool doctor`: what this machine can do for partool, and what to install for the rest."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from pathlib import Path
from typing import Any

import typer

from partool.cli.output import console, print_json


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_version(tool: str, args: list[str], pick: str) -> str | None:
    """First output line of `tool args` that contains `pick` (None if the tool is not on PATH)."""
    path = shutil.which(tool)
    if not path:
        return None
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return f"{path} (did not answer)"
    line = next(
        (ln for ln in out.splitlines() if pick in ln), out.strip().splitlines()[0] if out.strip() else ""
    )
    return line.strip()


def _openmp_runtimes() -> list[str] | None:
    """OpenMP runtime files mapped into this process (Linux's /proc/self/maps; None elsewhere). The CPU
    kernels run on their caller's OpenMP team, so inside PyTorch there should be exactly one: PyTorch's."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    files = {line.split()[-1] for line in maps.read_text().splitlines() if "/" in line}
    return sorted(f for f in files if Path(f).name.startswith(("libgomp", "libomp", "libiomp")))


def collect() -> dict[str, Any]:
    """Everything doctor reports, as plain data."""
    import torch

    from partool.ops import available_backends, resolve_backend
    from partool.plugins import (
        find_kernels_library,
        find_ort_custom_op_library,
        find_trt_plugin_library,
        onnxruntime_include_dir,
        tensorrt_include_dirs,
    )

    cuda = torch.cuda.is_available()
    gpus = (
        [
            {
                "name": torch.cuda.get_device_name(i),
                "capability": "sm_{}{}".format(*torch.cuda.get_device_capability(i)),
            }
            for i in range(torch.cuda.device_count())
        ]
        if cuda
        else []
    )
    try:
        import onnxruntime

        ort_providers = onnxruntime.get_available_providers()
    except ImportError:
        ort_providers = []
    try:
        import tensorrt

        trt = tensorrt.__version__
    except Exception:  # stub packages raise at import; any failure means no usable TensorRT
        trt = None
    kernels, trt_plugin, ort_ops = (
        find_kernels_library(),
        find_trt_plugin_library(),
        find_ort_custom_op_library(),
    )
    ort_headers, trt_headers = onnxruntime_include_dir(), tensorrt_include_dirs()
    return {
        "partool": _version("partool"),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "gpus": gpus,
        "scan_backends": available_backends(),
        "scan_auto_cpu": resolve_backend("auto", torch.device("cpu")).name,
        "scan_auto_cuda": resolve_backend("auto", torch.device("cuda")).name if cuda else None,
        "mamba_ssm": _version("mamba-ssm") or _version("mamba_ssm"),
        "causal_conv1d": _version("causal-conv1d") or _version("causal_conv1d"),
        "timm": _version("timm"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "onnxruntime_providers": ort_providers,
        "tensorrt": trt,
        "nvcc": _tool_version("nvcc", ["--version"], "release"),
        "cmake": _tool_version("cmake", ["--version"], "version"),
        "kernels_library": str(kernels) if kernels else None,
        "trt_plugin_library": str(trt_plugin) if trt_plugin else None,
        "ort_custom_op_library": str(ort_ops) if ort_ops else None,
        "onnxruntime_headers": str(ort_headers) if ort_headers else None,
        "tensorrt_headers": [str(d) for d in trt_headers],
        "openmp_runtimes": _openmp_runtimes(),  # after available_backends() loaded the kernel library
    }


def _hints(info: dict[str, Any]) -> list[str]:
    hints = []
    if not info["kernels_library"]:
        hints.append(
            "no scan kernel library: `partool plugins build` compiles it (needs cmake and a C++ compiler)"
        )
    if info["cuda_available"] and not info["scan_backends"].get("cuda"):
        hints.append("a GPU but no CUDA scan kernels: `partool plugins build` (needs nvcc)")
    if info["openmp_runtimes"] and len(info["openmp_runtimes"]) > 1:
        hints.append(
            "two OpenMP runtimes in one process ("
            + ", ".join(info["openmp_runtimes"])
            + "): the CPU kernels' "
            "threads compete with PyTorch's; rebuild the kernels with GCC (`partool plugins build`)"
        )
    if info["tensorrt"] is None:
        hints.append("no TensorRT here: TensorRT engines are built on the target device")
    if not info["onnxruntime_headers"]:
        hints.append(
            "no ONNX Runtime C headers for the scan custom op: `bash plugins/fetch_ort_headers.sh` "
            "(Debian's libonnxruntime-dev, into ~/.cache/partool) or set ONNXRUNTIME_ROOT, then "
            "`partool plugins build`"
        )
    return hints


def doctor(json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Show what this machine can do: torch and CUDA, scan backends, ONNX Runtime, TensorRT, nvcc, plugins.

    Example: `partool doctor --json > doctor.json`
    """
    info = collect()
    if json_out:
        print_json(info)
        return
    yes, no = "[green]yes[/]", "[red]no[/]"
    console.print(
        f"[bold]partool[/] {info['partool']}   torch {info['torch']} (CUDA build {info['torch_cuda_build']})"
    )
    gpus = ", ".join(f"{g['name']} ({g['capability']})" for g in info["gpus"]) or "none"
    console.print(f"CUDA available: {yes if info['cuda_available'] else no}   GPUs: {gpus}")
    backends = "  ".join(f"{k}={'yes' if v else 'no'}" for k, v in info["scan_backends"].items())
    console.print(
        f"scan backends: {backends}   auto on CPU → [bold]{info['scan_auto_cpu']}[/]"
        + (f", on CUDA → [bold]{info['scan_auto_cuda']}[/]" if info["scan_auto_cuda"] else "")
    )
    for key in ("mamba_ssm", "causal_conv1d", "timm", "onnx", "onnxruntime", "tensorrt", "nvcc", "cmake"):
        console.print(f"{key}: {info[key] or '[dim]not found[/]'}")
    console.print(f"onnxruntime providers: {', '.join(info['onnxruntime_providers']) or '[dim]none[/]'}")
    console.print(f"kernel library: {info['kernels_library'] or '[dim]not built[/]'}")
    console.print(f"TensorRT plugin: {info['trt_plugin_library'] or '[dim]not built[/]'}")
    console.print(f"ONNX Runtime scan op: {info['ort_custom_op_library'] or '[dim]not built[/]'}")
    console.print(f"ONNX Runtime C headers: {info['onnxruntime_headers'] or '[dim]not found[/]'}")
    console.print(f"TensorRT headers: {', '.join(info['tensorrt_headers']) or '[dim]not found[/]'}")
    if info["openmp_runtimes"] is not None:
        console.print(f"OpenMP runtimes: {', '.join(info['openmp_runtimes']) or '[dim]none[/]'}")
    for hint in _hints(info):
        console.print(f"[yellow]hint:[/] {hint}")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
