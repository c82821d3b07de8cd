"""A Triton Inference Server model repository for an exported partool model.

Layout (Triton's model repository convention):

    REPO/NAME/config.pbtxt       platform, batching, input/output names, types and dims
    REPO/NAME/labels.txt         attribute names, one a line, in output order (output label_filename)
    REPO/NAME/partool.json       the model's metadata (normalisation, threshold, export details)
    REPO/NAME/1/model.onnx       (platform onnxruntime_onnx)  or  REPO/NAME/1/model.plan (tensorrt_plan)
    REPO/README.md               how to start Triton on it, the plugin library included

Names, types and dims come from the ONNX graph itself; max_batch_size from the batch profile (for plans
it must not exceed the engine's maximum, and the engine must accept a batch of 1). The plugin library:
TensorRT plans with SelectiveScan need the self-registering plugin library (libpartool_trt_plugins_static.so)
preloaded into tritonserver (LD_PRELOAD, Triton's documented way for TensorRT custom layers); ONNX Runtime
models with SelectiveScan nodes name an ONNX Runtime custom-op library in the model configuration
(`model_operations { op_library_filename: ... }`). Portable graphs need neither.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from partool.artifacts import META, atomic_path, atomic_write_bytes, atomic_write_json
from partool.errors import UserError
from partool.plugins import PLUGIN_DOMAIN, PLUGIN_OP

PLATFORMS = {"onnxruntime": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
}
STATIC_PLUGIN_LIB = "libpartool_trt_plugins_static.so"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton's TYPE_*
    dims: tuple[int, ...]  # without the batch axis


@dataclass(frozen=True)
class TritonModel:
    name: str
    platform: str  # onnxruntime_onnx | tensorrt_plan
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    instance_count: int
    op_library: str | None = None  # ONNX Runtime custom-op library (model_operations)


def _tensor_specs(values: Sequence[onnx.ValueInfoProto], where: Path) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if len(dims) < 2 or dims[0] != -1:
            raise UserError(
                f"{where}: {value.name} has shape {dims}; Triton's batching needs a dynamic first (batch) axis, "
                "so export with the default dynamic batch"
            )
        if tensor.elem_type not in TRITON_TYPES:
            raise UserError(
                f"{where}: {value.name} has ONNX element type {tensor.elem_type}, unknown to Triton"
            )
        specs.append(TensorSpec(value.name, TRITON_TYPES[tensor.elem_type], tuple(dims[1:])))
    return tuple(specs)


def uses_plugin(proto: onnx.ModelProto) -> bool:
    return any(n.domain == PLUGIN_DOMAIN and n.op_type == PLUGIN_OP for n in proto.graph.node)


def model_name(text: str) -> str:
    """A Triton model (folder) name: letters, digits, '-', '_' and '.'."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")
    if not name:
        raise UserError(f"cannot make a Triton model name out of {text!r}; pass --triton-name")
    return name


def config_pbtxt(model: TritonModel, label_file: str | None = "labels.txt") -> str:
    """config.pbtxt in protobuf text format."""

    def tensor(spec: TensorSpec, labels: bool) -> str:
        lines = [
            "  {",
            f'    name: "{spec.name}"',
            f"    data_type: {spec.data_type}",
            f"    dims: [ {', '.join(str(d) for d in spec.dims)} ]",
        ]
        if labels and label_file:
            lines.append(f'    label_filename: "{label_file}"')
        return "\n".join([*lines, "  }"])

    parts = [
        f'name: "{model.name}"',
        f'platform: "{model.platform}"',
        f"max_batch_size: {model.max_batch_size}",
        "input [\n" + ",\n".join(tensor(t, False) for t in model.inputs) + "\n]",
        "output [\n" + ",\n".join(tensor(t, True) for t in model.outputs) + "\n]",
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(b) for b in model.preferred_batch_sizes)} ]\n"
        f"  max_queue_delay_microseconds: {model.max_queue_delay_us}\n"
        "}",
        f"instance_group [\n  {{\n    count: {model.instance_count}\n    kind: KIND_GPU\n  }}\n]",
    ]
    if model.op_library:
        parts.append(f'model_operations {{ op_library_filename: "{model.op_library}" }}')
    return "\n".join(parts) + "\n"


def _readme(model: TritonModel, plugin_graph: bool, meta: dict[str, Any]) -> str:
    h, w = meta["input_size"]
    lines = [
        f"# Triton model repository: {model.name}",
        "",
        f"Written by `partool export --format triton`. Platform `{model.platform}`, input "
        f"`{model.inputs[0].name}` (batch, 3, {h}, {w}) float32 RGB normalised with mean {meta['mean']} and std "
        f"{meta['std']}; output `{model.outputs[0].name}`: one logit per attribute (labels.txt), probability = "
        f"sigmoid(logit), positive above {meta.get('threshold', 0.5)}.",
        "",
        "Start the server (NGC container `nvcr.io/nvidia/tritonserver:<yy.mm>-py3`, TensorRT of the same release):",
        "",
        "```",
    ]
    if model.platform == "tensorrt_plan" and plugin_graph:
        lines += [
            f"LD_PRELOAD=/path/to/{STATIC_PLUGIN_LIB}:${{LD_PRELOAD}} tritonserver --model-repository=$PWD",
            "```",
            "",
            "The engine contains partool's SelectiveScan TensorRT plugin. Triton loads TensorRT custom layers "
            f"from a preloaded library; use `{STATIC_PLUGIN_LIB}`, which registers the plugin when loaded "
            "(`partool plugins build --tensorrt-include DIR` builds it), compiled against the TensorRT of the "
            "Triton container. Build `1/model.plan` inside the same container (`1/build_engine.sh`).",
        ]
    else:
        lines += ["tritonserver --model-repository=$PWD", "```"]
        if plugin_graph:
            lines += [
                "",
                "The ONNX graph holds partool::SelectiveScan nodes; config.pbtxt names the ONNX Runtime custom-op "
                "library that runs them (`model_operations { op_library_filename: ... }`), a path inside the "
                "Triton container, built against the ONNX Runtime of that Triton release.",
            ]
    lines += [
        "",
        f"Dynamic batching: preferred batch sizes {list(model.preferred_batch_sizes)}, at most "
        f"{model.max_queue_delay_us} µs queueing delay, max_batch_size {model.max_batch_size}.",
        "",
    ]
    return "\n".join(lines)


def write_repository(
    repo: Path,
    name: str,
    onnx_path: Path,
    meta: dict[str, Any],
    platform: str,
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int],
    max_queue_delay_us: int = 1000,
    instance_count: int = 1,
    engine: Path | None = None,
    op_library: str | None = None,
) -> Path:
    """Write REPO/NAME (config.pbtxt, labels.txt, partool.json, 1/model.*) and REPO/README.md; returns REPO/NAME.

    `platform`: "onnxruntime" copies `onnx_path`; "tensorrt" copies `engine` when given (else the caller
    builds 1/model.plan on the target).
    """
    if platform not in PLATFORMS:
        raise UserError(f"unknown Triton platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
    proto = onnx.load(str(onnx_path), load_external_data=False)
    plugin_graph = uses_plugin(proto)
    if platform == "onnxruntime" and plugin_graph and not op_library:
        raise UserError(
            f"{onnx_path} has partool::SelectiveScan nodes, which Triton's onnxruntime backend runs only with a "
            "custom-op library: pass --plugin PATH (the library's path inside the Triton container), or export "
            "with --scan portable"
        )
    if max_batch_size < 1:
        raise UserError(f"max_batch_size must be at least 1, got {max_batch_size}")
    preferred = tuple(sorted({int(b) for b in preferred_batch_sizes if int(b) <= max_batch_size}))
    model = TritonModel(
        name=model_name(name),
        platform=PLATFORMS[platform][0],
        max_batch_size=max_batch_size,
        inputs=_tensor_specs(proto.graph.input, onnx_path),
        outputs=_tensor_specs(proto.graph.output, onnx_path),
        preferred_batch_sizes=preferred or (max_batch_size,),
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instance_count,
        op_library=op_library if platform == "onnxruntime" and plugin_graph else None,
    )
    folder = Path(repo) / model.name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    source = onnx_path if platform == "onnxruntime" else engine
    if source is not None:
        with atomic_path(version / PLATFORMS[platform][1]) as tmp:
            shutil.copyfile(source, tmp)
    atomic_write_bytes(folder / "config.pbtxt", config_pbtxt(model).encode())
    atomic_write_bytes(folder / "labels.txt", ("\n".join(meta["attributes"]) + "\n").encode())
    triton_meta = {"name": model.name, "platform": model.platform, "max_batch_size": max_batch_size}
    atomic_write_json(folder / META, {**meta, "triton": triton_meta})
    atomic_write_bytes(Path(repo) / "README.md", _readme(model, plugin_graph, meta).encode())
    return folder
