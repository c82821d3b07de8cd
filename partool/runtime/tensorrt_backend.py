"""TensorRT backend without PyTorch: `tensorrt` + cuda-python's runtime bindings + NumPy.

An edge device needs neither torch nor its gigabytes to run a built engine. Memory is set up once for the
engine's largest batch: page-locked (pinned) host buffers, so the copies are truly asynchronous, device
buffers bound to the execution context, and one CUDA stream that carries copy-in, inference and copy-out;
the host waits once per call. Engines are tied to the TensorRT version and the GPU they were built for, so
the metadata `partool export --format engine` writes next to the engine (partool.json, key "engine") is
checked first, and a mismatch is refused with the command that rebuilds the engine on this machine.

The pure logic — the metadata check and the reading of the engine's tensors and batch profile — is
separate (`check_engine_meta`, `engine_io`) and unit-tested with fakes; the class itself needs TensorRT
and a GPU and runs only on the target.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partool.devices import parse_device
from partool.errors import UserError
from partool.runtime.base import Backend, read_sidecar_meta

REBUILD_HINT = (
    "rebuild the engine on this machine from the ONNX file: `partool export RUN --format engine` "
    "(or the trtexec command it prints), with the plugin library built for this TensorRT"
)


def parse_compute_capability(value: Any) -> tuple[int, int]:
    """'8.7', 'sm_87', 87, [8, 7] or (8, 7) -> (8, 7)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    text = str(value).strip().lower().removeprefix("sm_").removeprefix("sm")
    if "." in text:
        major, minor = text.split(".", 1)
        return int(major), int(minor)
    if text.isdigit() and len(text) >= 2:
        return int(text[:-1]), int(text[-1])
    raise ValueError(f"not a compute capability: {value!r}")


def _version_key(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0): engines are portable across builds of one release, not across releases."""
    return tuple(int(p) for p in str(version).split(".")[:3] if p.isdigit())


def check_engine_meta(
    engine_meta: dict[str, Any] | None, trt_version: str, capability: tuple[int, int], where: str | Path
) -> None:
    """UserError saying how to rebuild unless the engine was built for this TensorRT and this GPU.

    Without the "engine" section (an engine built by hand with trtexec) nothing can be checked here;
    TensorRT itself then refuses an incompatible engine when deserialising it.
    """
    if not engine_meta:
        return
    problems = []
    built_trt = engine_meta.get("tensorrt_version")
    if built_trt and _version_key(built_trt) != _version_key(trt_version):
        problems.append(f"TensorRT {built_trt} (this machine has {trt_version})")
    built_cc = engine_meta.get("compute_capability")
    if built_cc is not None:
        try:
            cc = parse_compute_capability(built_cc)
        except ValueError:
            raise UserError(
                f"{where}: engine metadata has an unreadable compute_capability {built_cc!r}"
            ) from None
        if cc != tuple(capability):
            problems.append(
                f"a GPU of compute capability {cc[0]}.{cc[1]} (this GPU is {capability[0]}.{capability[1]})"
            )
    if problems:
        raise UserError(f"{where} was built for {' and '.join(problems)}; {REBUILD_HINT}")


@dataclass(frozen=True)
class EngineIO:
    """The engine's one input and one output, and the batch range its optimisation profile allows."""

    input_name: str
    output_name: str
    image_shape: tuple[int, int, int]  # (3, H, W)
    num_outputs: int  # attributes per row
    min_batch: int
    max_batch: int


def engine_io(engine: Any, input_mode: Any) -> EngineIO:
    """Read names, shapes and profile 0 of an engine (anything with TensorRT 10's ICudaEngine tensor API)."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == input_mode]
    outputs = [n for n in names if n not in inputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(
            f"the engine has inputs {inputs} and outputs {outputs}; a partool engine has one of each "
            "(images -> logits)"
        )
    in_name, out_name = inputs[0], outputs[0]
    shape = tuple(int(d) for d in engine.get_tensor_shape(in_name))
    out_shape = tuple(int(d) for d in engine.get_tensor_shape(out_name))
    if len(shape) != 4 or any(d < 1 for d in shape[1:]) or len(out_shape) != 2 or out_shape[1] < 1:
        raise UserError(
            f"engine input {in_name} {shape} / output {out_name} {out_shape}: expected (batch, 3, H, W) "
            "and (batch, attributes)"
        )
    if shape[0] >= 1:  # static batch: every call runs exactly that many rows
        low = high = shape[0]
    else:
        low_shape, _, high_shape = engine.get_tensor_profile_shape(in_name, 0)
        low, high = int(low_shape[0]), int(high_shape[0])
    if not 1 <= low <= high:
        raise UserError(f"engine profile allows batch {low}..{high}; rebuild it with min >= 1 and min <= max")
    return EngineIO(in_name, out_name, (shape[1], shape[2], shape[3]), out_shape[1], low, high)


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise UserError(
            "running a .engine needs TensorRT's Python package (JetPack ships it; on desktops install it from "
            "NVIDIA's index: pip install tensorrt) and cuda-python; or run the .onnx file instead"
        ) from None
    return tensorrt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise UserError("running a .engine needs cuda-python: pip install cuda-python") from None
    return cudart


class _Cuda:
    """The few CUDA runtime calls this backend makes, each checked."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def __call__(self, name: str, *args: Any) -> Any:
        result = getattr(self.rt, name)(*args)
        err, rest = result[0], result[1:]
        if int(err) != 0:
            message = self.rt.cudaGetErrorString(err)[1]
            text = message.decode() if isinstance(message, bytes) else str(message)
            raise UserError(f"CUDA {name} failed: {text}")
        return rest[0] if len(rest) == 1 else rest


def _device_index(device: str) -> int:
    """The CUDA ordinal for --device: auto and cuda mean GPU 0; an engine cannot run on the CPU."""
    parsed = parse_device(device)
    if parsed.kind == "cpu":
        raise UserError(f"--device {device}: a TensorRT engine runs on a GPU; use auto, cuda or cuda:N")
    return parsed.index or 0


def _pinned_view(ptr: int, count: int, dtype: np.dtype) -> np.ndarray:
    raw = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8))
    return np.ctypeslib.as_array(raw, shape=(count * dtype.itemsize,)).view(dtype)


class TensorRTBackend(Backend):
    """A deserialised engine with buffers for its largest batch and one stream."""

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str = "auto", plugin: str | Path | None = None) -> None:
        path = Path(path)
        meta = read_sidecar_meta(path)
        trt = _import_tensorrt()
        self._cuda = cuda = _Cuda(_import_cudart())
        rt = cuda.rt
        index = _device_index(device)
        cuda("cudaSetDevice", index)
        attr = rt.cudaDeviceAttr
        capability = (
            int(cuda("cudaDeviceGetAttribute", attr.cudaDevAttrComputeCapabilityMajor, index)),
            int(cuda("cudaDeviceGetAttribute", attr.cudaDevAttrComputeCapabilityMinor, index)),
        )
        check_engine_meta(meta.get("engine"), trt.__version__, capability, path)
        self.plugin = self._load_plugin(trt, plugin, meta)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise UserError(f"TensorRT could not deserialise {path} (see its log above); {REBUILD_HINT}")
        self.engine = engine
        io = engine_io(engine, trt.TensorIOMode.INPUT)
        if list(io.image_shape[1:]) != list(meta["input_size"]) or io.num_outputs != len(meta["attributes"]):
            raise UserError(
                f"{path} takes {io.image_shape} and gives {io.num_outputs} outputs, but partool.json says "
                f"input {meta['input_size']} and {len(meta['attributes'])} attributes; the files do not belong together"
            )
        self.io = io
        self.context = engine.create_execution_context()
        in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(io.input_name)))
        out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(io.output_name)))
        in_count = io.max_batch * int(np.prod(io.image_shape))
        out_count = io.max_batch * io.num_outputs
        self._host_in = cuda("cudaMallocHost", in_count * in_dtype.itemsize)
        self._host_out = cuda("cudaMallocHost", out_count * out_dtype.itemsize)
        self._dev_in = cuda("cudaMalloc", in_count * in_dtype.itemsize)
        self._dev_out = cuda("cudaMalloc", out_count * out_dtype.itemsize)
        self._in = _pinned_view(self._host_in, in_count, in_dtype).reshape(io.max_batch, *io.image_shape)
        self._out = _pinned_view(self._host_out, out_count, out_dtype).reshape(io.max_batch, io.num_outputs)
        self._stream = cuda("cudaStreamCreate")
        self.context.set_tensor_address(io.input_name, int(self._dev_in))
        self.context.set_tensor_address(io.output_name, int(self._dev_out))
        super().__init__(meta, max_batch=io.max_batch, min_batch=io.min_batch)

    @staticmethod
    def _load_plugin(trt: Any, plugin: str | Path | None, meta: dict[str, Any]) -> Path | None:
        """Load the partool plugin library when given or when the engine came from a plugin graph."""
        from partool.plugins import find_trt_plugin_library

        needed = meta.get("export", {}).get("scan") == "plugin"
        if plugin is None and not needed:
            return None
        library = Path(plugin) if plugin is not None else find_trt_plugin_library()
        if library is None or not library.is_file():
            raise UserError(
                f"this engine uses the partool SelectiveScan plugin but {library or 'no plugin library'} was "
                "found; build it with `partool plugins build --tensorrt-include DIR` or pass --plugin PATH"
            )
        trt.get_plugin_registry().load_library(str(library))
        return library

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        cuda, rt, io = self._cuda, self._cuda.rt, self.io
        n = len(batch)
        self._in[:n] = batch
        kind = rt.cudaMemcpyKind
        cuda("cudaMemcpyAsync", self._dev_in, self._host_in, self._in[:n].nbytes,
             kind.cudaMemcpyHostToDevice, self._stream)  # fmt: skip
        self.context.set_input_shape(io.input_name, (n, *io.image_shape))
        if not self.context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        cuda("cudaMemcpyAsync", self._host_out, self._dev_out, self._out[:n].nbytes,
             kind.cudaMemcpyDeviceToHost, self._stream)  # fmt: skip
        cuda("cudaStreamSynchronize", self._stream)
        return self._out[:n].astype(np.float32)

    def describe(self) -> dict[str, object]:
        engine = self.meta.get("engine", {})
        return {**super().describe(), "precision": engine.get("precision"), "plugin": str(self.plugin or "")}

    def __del__(self) -> None:
        cuda = getattr(self, "_cuda", None)
        if cuda is None or not hasattr(self, "_stream"):
            return
        rt = cuda.rt
        rt.cudaStreamDestroy(self._stream)
        for ptr in (self._dev_in, self._dev_out):
            rt.cudaFree(ptr)
        for ptr in (self._host_in, self._host_out):
            rt.cudaFreeHost(ptr)
