"""TensorRT engines from partool ONNX graphs: built here when `tensorrt` imports, else an exact trtexec command.

Engines are tied to the TensorRT release and the GPU that built them, so the usual place to build one is
the target itself. Every engine export therefore writes `build_engine.sh` next to the ONNX file: the
trtexec command with the batch profile, the precision flags, the plugin library and a timing cache, with
paths relative to the script's folder so the folder can be copied to the device. Where `tensorrt` imports,
the same build runs through its Python API and the engine's metadata — TensorRT version, GPU compute
capability, precision, batch profile — goes into partool.json["engine"], which the runtime checks
(`partool.runtime.tensorrt_backend.check_engine_meta`).

Precision: FP16 builds the FP32 graph with the FP16 flag (TensorRT picks per layer; the scan plugin offers
FP16 I/O with A, D, delta_bias in FP32). INT8 builds the Q/DQ graph of `partool.export.quantize` —
explicit quantization, no calibrator — with the INT8 and FP16 flags, so the layers outside Q/DQ pairs may
run in FP16 rather than FP32. The network stays weakly typed: a STRONGLY_TYPED network would keep every
unquantized layer in the graph's FP32.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from partool.errors import UserError

ENGINE_FILE = "model.engine"
TIMING_CACHE = "timing.cache"
BUILD_SCRIPT = "build_engine.sh"
PRECISION_FLAGS = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}


@dataclass(frozen=True)
class BatchProfile:
    """The optimisation profile's batch range: the engine accepts min..max rows and is tuned for opt."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise UserError(
                f"batch profile min={self.min} opt={self.opt} max={self.max}: need 1 <= min <= opt <= max "
                "(--min-batch/--opt-batch/--max-batch)"
            )


@dataclass(frozen=True)
class EngineSpec:
    """Everything one engine build needs; paths are absolute, the script makes them relative."""

    onnx: Path
    engine: Path
    input_name: str
    image_shape: tuple[int, int, int]  # (3, H, W)
    precision: str
    batch: BatchProfile
    plugin: Path | None  # the TensorRT plugin library, for graphs with SelectiveScan nodes
    timing_cache: Path
    workspace_mib: int | None = None

    def shape(self, rows: int) -> str:
        return f"{self.input_name}:{rows}x" + "x".join(str(d) for d in self.image_shape)


def trtexec_command(spec: EngineSpec, relative_to: Path | None = None) -> list[str]:
    """trtexec's arguments for `spec`; file paths relative to `relative_to` when given (the plugin stays as is)."""
    if spec.precision not in PRECISION_FLAGS:
        raise UserError(f"unknown precision {spec.precision!r}; choose one of {', '.join(PRECISION_FLAGS)}")

    def where(path: Path) -> str:
        return os.path.relpath(path, relative_to) if relative_to is not None else str(path)

    cmd = [
        "trtexec",
        f"--onnx={where(spec.onnx)}",
        f"--saveEngine={where(spec.engine)}",
        f"--minShapes={spec.shape(spec.batch.min)}",
        f"--optShapes={spec.shape(spec.batch.opt)}",
        f"--maxShapes={spec.shape(spec.batch.max)}",
        *PRECISION_FLAGS[spec.precision],
    ]
    if spec.plugin is not None:
        cmd += [f"--dynamicPlugins={spec.plugin}", f"--setPluginsToSerialize={spec.plugin}"]
    cmd.append(f"--timingCacheFile={where(spec.timing_cache)}")
    if spec.workspace_mib:
        cmd.append(f"--memPoolSize=workspace:{spec.workspace_mib}M")
    return cmd


def write_build_script(spec: EngineSpec) -> Path:
    """`build_engine.sh` beside the ONNX file: runs trtexec from its own folder; PARTOOL_TRT_PLUGIN_LIB overrides
    the plugin library's path (it is where `partool plugins build` put it on the machine that exported)."""
    from partool.artifacts import atomic_write_bytes

    folder = spec.onnx.parent
    args = trtexec_command(spec, relative_to=folder)
    plugin_line = ""
    if spec.plugin is not None:
        plugin_line = f'PLUGIN="${{PARTOOL_TRT_PLUGIN_LIB:-{spec.plugin}}}"\n'
        args = [
            f'{a.split("=", 1)[0]}="$PLUGIN"' if a.startswith(("--dynamicPlugins=", "--setPluginsToSerialize="))
            else shlex.quote(a)
            for a in args
        ]  # fmt: skip
    else:
        args = [shlex.quote(a) for a in args]
    text = (
        "#!/bin/sh\n"
        "# Builds the TensorRT engine for this model ON THE TARGET (engines are tied to TensorRT and the GPU).\n"
        "# Written by `partool export --format engine`; needs trtexec (JetPack: /usr/src/tensorrt/bin).\n"
        "set -e\n"
        'cd "$(dirname "$0")"\n'
        f"{plugin_line}" + " \\\n    ".join(args) + "\n"
    )
    path = folder / BUILD_SCRIPT
    atomic_write_bytes(path, text.encode())
    path.chmod(0o755)
    return path


def engine_metadata(
    tensorrt_version: str, capability: tuple[int, int], spec: EngineSpec, builder: str
) -> dict[str, Any]:
    """partool.json["engine"]: the keys `check_engine_meta` reads, plus how it was built."""
    return {
        "tensorrt_version": tensorrt_version,
        "compute_capability": f"{capability[0]}.{capability[1]}",
        "precision": spec.precision,
        "profile": asdict(spec.batch),
        "input": spec.input_name,
        "file": spec.engine.name,
        "plugin": spec.plugin.name if spec.plugin is not None else None,
        "builder": builder,
    }


def _gpu_capability() -> tuple[int, int]:
    """Compute capability of GPU 0, through cuda-python (as the runtime does) or else PyTorch."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            cudart = None
    if cudart is not None:
        attr = cudart.cudaDeviceAttr
        major = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, 0)
        minor = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, 0)
        if int(major[0]) == 0 and int(minor[0]) == 0:
            return int(major[1]), int(minor[1])
    import torch

    if not torch.cuda.is_available():
        raise UserError("building a TensorRT engine needs a visible CUDA GPU; none was found")
    return tuple(torch.cuda.get_device_capability(0))  # type: ignore[return-value]


def build_with_tensorrt(trt: Any, spec: EngineSpec) -> dict[str, Any]:
    """Build and save the engine with TensorRT's Python API (TensorRT 10); returns its metadata."""
    from partool.artifacts import atomic_write_bytes

    logger = trt.Logger(trt.Logger.WARNING)
    if spec.plugin is not None:
        trt.get_plugin_registry().load_library(str(spec.plugin))
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {spec.onnx}: {errors}")
    config = builder.create_builder_config()
    if spec.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if spec.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit: the scales come from the graph's Q/DQ nodes
    if spec.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mib << 20)
    if spec.plugin is not None:
        config.set_plugins_to_serialize([str(spec.plugin)])
    profile = builder.create_optimization_profile()
    shapes = [(rows, *spec.image_shape) for rows in (spec.batch.min, spec.batch.opt, spec.batch.max)]
    profile.set_shape(spec.input_name, *shapes)
    config.add_optimization_profile(profile)
    cached = spec.timing_cache.read_bytes() if spec.timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cached), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT could not build an engine from {spec.onnx} (see its log above)")
    atomic_write_bytes(spec.engine, bytes(serialized))
    atomic_write_bytes(spec.timing_cache, bytes(config.get_timing_cache().serialize()))
    return engine_metadata(trt.__version__, _gpu_capability(), spec, builder="tensorrt-python")


def build_engine(spec: EngineSpec) -> dict[str, Any]:
    """Write build_engine.sh, then build with TensorRT when it imports; without it, UserError (exit 2)
    carrying the exact trtexec command."""
    if spec.plugin is not None and not spec.plugin.name.endswith(".so"):
        raise UserError(f"--plugin {spec.plugin}: expected the TensorRT plugin library (a .so file)")
    script = write_build_script(spec)
    try:
        import tensorrt as trt
    except ImportError:
        command = shlex.join(trtexec_command(spec))
        raise UserError(
            f"TensorRT's Python package is not installed here, so no engine was built; build it on the target "
            f"with: {command}  (the same command is in {script}; engines only run on the TensorRT and GPU "
            "that built them)"
        ) from None
    if spec.plugin is not None and not spec.plugin.is_file():
        raise UserError(
            f"the graph uses the partool SelectiveScan plugin but {spec.plugin} does not exist; build it with "
            "`partool plugins build --tensorrt-include DIR` or pass --plugin PATH"
        )
    return build_with_tensorrt(trt, spec)
