"""`export_onnx`: a PARModel -> `model.onnx` + `partool.json`, with the scan as a plugin node or portable ops.

The graph takes `images` (batch, 3, H, W), already normalised with the run's mean/std, and returns
`logits` (batch, A): the sigmoid is left to the runtime, as in PyTorch, so every backend applies the same
threshold to the same probabilities and INT8 calibration sees the pre-sigmoid range. partool.json says so
("output": "logits"). H and W are fixed (the scan length follows from them); the batch axis is dynamic.
Exported with torch.onnx's dynamo exporter (the TorchScript exporter is deprecated in torch 2.x), the
scan through `partool.ops.onnx`'s custom ops and translation table.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from partool.artifacts import META, atomic_path, atomic_write_json
from partool.errors import UserError
from partool.models.run_folder import load_run
from partool.ops.onnx import LOWERINGS, scan_lowering
from partool.plugins import PLUGIN_DOMAIN, PLUGIN_OP

DEFAULT_OPSET = 18  # Split(num_outputs) needs 18; ONNX Runtime, TensorRT 10 and OpenVINO all read it
INPUT_NAME, OUTPUT_NAME = "images", "logits"
MODEL_FILE = "model.onnx"


def _simplify(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """onnxslim when installed (it keeps custom-domain nodes; onnxsim needs every op to run on ORT)."""
    try:
        import onnxslim
    except ImportError:
        return proto, None
    return onnxslim.slim(proto), f"onnxslim {onnxslim.__version__}"


def _check(proto: onnx.ModelProto) -> None:
    """onnx.checker with full shape inference; the custom domain's nodes are checked against their schema."""
    onnx.checker.check_model(proto, full_check=True)


def count_scan_nodes(proto: onnx.ModelProto) -> int:
    return sum(n.op_type == PLUGIN_OP and n.domain == PLUGIN_DOMAIN for n in proto.graph.node)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    scan: str = "plugin",
    img_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    meta: dict[str, Any] | None = None,
    simplify: bool = True,
) -> Path:
    """Write `model` as ONNX to `path` (atomically) and its metadata to `partool.json` beside it.

    `scan`: "plugin" (one partool::SelectiveScan node per scan call, for TensorRT or the ORT custom op)
    or "portable" (standard ONNX ops only). `img_size` (H, W) defaults to the model's own.
    """
    if scan not in LOWERINGS:
        raise UserError(f"unknown --scan {scan!r}; choose one of: {', '.join(LOWERINGS)}")
    if opset < DEFAULT_OPSET:
        raise UserError(f"--opset {opset} is too old; the scan lowering needs opset {DEFAULT_OPSET} or newer")
    path = Path(path)
    height, width = img_size or tuple(getattr(model, "img_size", (224, 224)))
    model = model.to("cpu", torch.float32).eval()
    example = torch.zeros(2, 3, height, width)  # batch 2: a traced batch of 1 would be specialised away
    dynamic = {INPUT_NAME: {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
    with scan_lowering(scan) as table, torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            None,
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic,
            custom_translation_table=table,
            opset_version=opset,
            verbose=False,
            # torch's own graph optimizer (onnxscript's rewriter) takes minutes on the unrolled portable
            # scan (82 s of 90 for a 2-layer Vim-S); onnxslim below does the useful folding in seconds.
            optimize=False,
        )
    proto = program.model_proto
    if dynamic_batch:  # the exporter names the axis after its symbol; the contract calls it "batch"
        for value in (*proto.graph.input, *proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    tool = None
    if simplify:
        proto, tool = _simplify(proto)
    _check(proto)
    info = {
        "format": "onnx",
        "file": path.name,
        "scan": scan,
        "opset": opset,
        "input": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "output": "logits",
        "input_size": [height, width],
        "dynamic_batch": dynamic_batch,
        "scan_nodes": count_scan_nodes(proto),
        "simplifier": tool,
        "torch_version": torch.__version__,
        "onnx_version": importlib.metadata.version("onnx"),
    }
    full_meta = {**(meta or {}), "input_size": [height, width], "output": "logits", "export": info}
    onnx.helper.set_model_props(proto, {"partool_scan": scan, "partool_output": "logits"})
    with atomic_path(path) as tmp:
        onnx.save(proto, tmp)
    atomic_write_json(path.parent / META, full_meta)
    return path


def export_run(
    run: str | Path,
    out_dir: str | Path | None = None,
    *,
    scan: str = "plugin",
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export a run folder (model.safetensors + partool.json) to `out_dir/model.onnx` (default: RUN/onnx-SCAN)."""
    model, meta = load_run(run)
    out = Path(out_dir) if out_dir is not None else Path(run) / f"onnx-{scan}"
    return export_onnx(model, out / MODEL_FILE, scan=scan, opset=opset, meta=meta)
