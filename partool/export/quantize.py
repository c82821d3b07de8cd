"""INT8 (explicit Q/DQ) and FP16 variants of an exported partool ONNX graph, and their accuracy report.

INT8 is explicit quantization, the TensorRT 10 way: QuantizeLinear/DequantizeLinear pairs in the graph,
written by onnxruntime.quantization's QDQQuantizer, so the same file runs on ONNX Runtime here (and the
accuracy drop is measured here) and builds an INT8 engine on the target without a calibrator. Only the
weight ops are quantized — MatMul/Gemm/Conv whose second input is a constant, and MatMul whose FIRST input
is a constant weight (Vim's and VMamba's x_proj/dt_proj, written W @ x so their outputs need no transpose)
— with per-output-channel symmetric int8 weights (for a first-input weight its rows, axis -2, so the
scales factor out of the product; a stacked (k, rows, cols) weight shares a row's scale across k) and
symmetric int8 activations (TensorRT takes zero points of 0 only). Everything else stays
float, and in particular the selective scan: published Mamba PTQ work finds its state, A, D and delta_bias
outlier-prone. The rule is structural, so it holds for both lowerings: the plugin node has no weight
input, and the portable subgraph's only MatMul multiplies two activations (C·h).

Weights are full-range int8 (±127) or 7-bit (±64, `weight_bits=7`, ORT's `reduce_range`). The narrower range is
for ONNX Runtime on x86 CPUs: on a CPU without VNNI (AVX2 only: Haswell to Cascade Lake without AVX-512 VNNI,
AMD before Zen 4) MLAS multiplies u8 activations (int8 ones shifted by 128) with s8 weights through
`vpmaddubsw`, which adds each PAIR of products into a SATURATING int16; full-range weights overflow it
(2·255·127 > 32767) and the result depends on the CPU. 7-bit weights cannot (2·255·64 = 32640): the same
Q/DQ file gives bit-identical outputs with and without VNNI. Measured on the 1-layer Vim of
tests/test_quantize.py, max |INT8 − FP32| against FP32's 0.603: 8-bit 0.0106 with AVX-512 VNNI and 0.0776
under `qemu-x86_64 -cpu Haswell`; 7-bit 0.0140 on both. TensorRT's INT8 GEMMs (DP4A/IMMA) accumulate in
int32, so engines keep full-range weights; `partool export` picks by target (see pipeline.py).

Two details keep Q/DQ away from the scan. ORT quantizes a MatMul's output too unless told not to
(OpTypesToExcludeOutputQuantization), and it routes EVERY consumer of a quantized activation through the
new DequantizeLinear, so a tensor that feeds both x_proj and the scan (u) would reach the scan quantized;
`_restore_float_consumers` gives the float tensor back to every consumer that is not a quantized op.

Calibration ranges are collected here (MinMax over `--calib-count` images of the calibration split) with
`create_session`, the session that also runs plugin graphs through the custom op; ORT's own calibrator
builds a plain InferenceSession that cannot. ModelOpt was measured as the alternative and not taken: its
ONNX quantizer (`modelopt.onnx`) will not import without the `[onnx]` extra, which pins onnx~=1.21,
onnxruntime-gpu~=1.24 and cupy — a second ONNX Runtime next to the project's (see docs/architecture.md).

FP16: weights and the weight ops in float16, every other op and the graph I/O in float32 (casts around
each converted op), with onnxruntime's copy of onnxconverter-common's converter. Converting everything
would carry the portable scan's state in float16, against the scan contract; TensorRT FP16 engines are
built from the FP32 graph with the FP16 flag instead (see tensorrt_build.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from partool.errors import UserError
from partool.runtime.ort_session import create_session

WEIGHT_OPS = ("MatMul", "Gemm", "Conv")
WEIGHT_BITS = (7, 8)  # 7: ONNX Runtime on any x86 CPU; 8: TensorRT, VNNI and ARM CPUs (module docstring)
DEFAULT_CALIB_COUNT = 256
CALIB_BATCH = 32
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _initializer_names(proto: onnx.ModelProto) -> set[str]:
    return {t.name for t in proto.graph.initializer}


def _name_nodes(proto: onnx.ModelProto) -> None:
    """Give every unnamed (or duplicate-named) node a unique name: the quantizer selects nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_partool_{i}"
        seen.add(node.name)


def _first_input_weight(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> str | None:
    """The constant weight (2-D, or stacked 3-D) of a `MatMul(W, x)` (activation second), else None."""
    if node.op_type != "MatMul" or node.input[1] in inits:
        return None
    weight = inits.get(node.input[0])
    return weight.name if weight is not None and len(weight.dims) in (2, 3) else None


def weight_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul/Gemm/Conv nodes whose weight (second input, or a MatMul's 2-D or 3-D first input) is a
    constant initializer, in graph order."""
    inits = {t.name: t for t in proto.graph.initializer}
    return [
        n
        for n in proto.graph.node
        if n.op_type in WEIGHT_OPS
        and len(n.input) > 1
        and (n.input[1] in inits or _first_input_weight(n, inits) is not None)
    ]


def first_input_weights(proto: onnx.ModelProto, nodes: Sequence[onnx.NodeProto]) -> list[str]:
    """The weights of `nodes` that are a MatMul's first input: quantized per row (axis -2), not per
    column as ORT does for a second-input weight."""
    inits = {t.name: t for t in proto.graph.initializer}
    return [w for w in (_first_input_weight(n, inits) for n in nodes) if w is not None]


def _activation_tensors(proto: onnx.ModelProto, nodes: Sequence[onnx.NodeProto]) -> list[str]:
    """The non-constant inputs of `nodes`: the tensors whose ranges calibration must measure."""
    consts = _initializer_names(proto)
    names = dict.fromkeys(i for n in nodes for i in n.input if i and i not in consts)
    return list(names)


# ---------------------------------------------------------------------------------------------- calibration


def calibration_batches(
    spec: str, meta: dict[str, Any], count: int = DEFAULT_CALIB_COUNT, batch: int = CALIB_BATCH, seed: int = 0
) -> list[np.ndarray]:
    """`count` images of the training split of `spec` (trainval where there is no train split), drawn
    without replacement with a fixed seed, through the run's eval transform, as float32 batches."""
    from partool.data import open_dataset
    from partool.data.transforms import build_transforms

    if count < 1:
        raise UserError(f"--calib-count must be at least 1, got {count}")
    transform = build_transforms(meta["input_size"], meta["mean"], meta["std"], train=False)
    try:
        dataset = open_dataset(spec, "train", transform)
    except UserError:
        dataset = open_dataset(spec, "trainval", transform)
    if len(dataset) == 0:
        raise UserError(f"--calib {spec}: the calibration split holds no images")
    take = min(count, len(dataset))
    order = np.sort(np.random.default_rng(seed).choice(len(dataset), size=take, replace=False))
    return [
        np.stack([dataset[int(i)][0].numpy() for i in order[s : s + batch]]).astype(np.float32)
        for s in range(0, take, batch)
    ]


def calibrate_ranges(proto: onnx.ModelProto, batches: Sequence[np.ndarray], tensors: Sequence[str]) -> dict:
    """{tensor: (min, max)} over `batches`, from one session whose outputs include `tensors`."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(proto)
    outputs = {o.name for o in augmented.graph.output}
    for name in tensors:
        if name not in outputs:
            augmented.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    session = create_session(augmented)
    input_name = session.get_inputs()[0].name
    low = {n: np.inf for n in tensors}
    high = {n: -np.inf for n in tensors}
    for batch in batches:
        values = session.run(list(tensors), {input_name: batch})
        for name, value in zip(tensors, values, strict=True):
            low[name] = min(low[name], float(np.min(value)))
            high[name] = max(high[name], float(np.max(value)))
    return {n: (low[n], high[n]) for n in tensors}


# ---------------------------------------------------------------------------------------------- INT8


def _restore_float_consumers(proto: onnx.ModelProto, quantized: set[str]) -> int:
    """Nodes outside `quantized` that read a DequantizeLinear output of an activation read the float tensor
    again; Q/DQ pairs left without readers are removed. Returns how many inputs were restored."""
    graph = proto.graph
    consts = _initializer_names(proto)
    producer = {o: n for n in graph.node for o in n.output}
    float_source: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producer.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in consts:
            float_source[node.output[0]] = q.input[0]
    restored = 0
    for node in graph.node:
        if node.name in quantized or node.op_type in QDQ_OPS:
            continue
        for k, name in enumerate(node.input):
            if name in float_source:
                node.input[k] = float_source[name]
                restored += 1
    graph_outputs = {o.name for o in graph.output}
    while True:  # drop DQ, then the Q before it, once nothing reads them
        read = {i for n in graph.node for i in n.input} | graph_outputs
        dead = [n for n in graph.node if n.op_type in QDQ_OPS and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    return restored


def quantize_int8(
    proto: onnx.ModelProto, batches: Sequence[np.ndarray], weight_bits: int = 7
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The explicit-quantization (Q/DQ) INT8 copy of `proto`, calibrated on `batches`, and what was done.

    `weight_bits` 7 keeps the weights in ±64 so that ONNX Runtime's x86 kernels cannot saturate on any CPU;
    8 uses the full ±127, for TensorRT (module docstring)."""
    if weight_bits not in WEIGHT_BITS:
        raise UserError(f"INT8 weights take 7 or 8 bits, got {weight_bits}")
    import onnxruntime
    from onnxruntime.quantization import QDQQuantizer, QuantType, TensorData, TensorsData
    from onnxruntime.quantization.calibrate import CalibrationMethod

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    _name_nodes(model)
    nodes = weight_nodes(model)
    if not nodes:
        raise UserError(
            "the graph has no MatMul/Gemm/Conv with constant weights; nothing to quantize to INT8"
        )
    tensors = _activation_tensors(model, nodes)
    ranges = calibrate_ranges(model, batches, tensors)
    data = TensorsData(
        CalibrationMethod.MinMax,
        {
            n: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
            for n, (lo, hi) in ranges.items()
        },
    )
    model = onnx.shape_inference.infer_shapes(model)
    names = [n.name for n in nodes]
    row_weights = {w: [{"axis": -2}] for w in first_input_weights(model, nodes)}
    quantizer = QDQQuantizer(
        model,
        True,  # per_channel
        weight_bits == 7,  # reduce_range: weights in ±64 instead of ±127
        QuantType.QInt8,  # weights
        QuantType.QInt8,  # activations: symmetric int8, as TensorRT requires
        data,
        names,  # nodes_to_quantize
        [],  # nodes_to_exclude
        list(WEIGHT_OPS),
        {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": list(WEIGHT_OPS),
            "TensorQuantOverrides": row_weights,
        },
    )
    quantizer.quantize_model()
    quantizer.model.topological_sort()  # the quantizer appends its Q/DQ nodes at the end
    out = quantizer.model.model
    restored = _restore_float_consumers(out, set(names))
    info = {
        "method": "explicit Q/DQ (onnxruntime.quantization QDQQuantizer), MinMax calibration",
        "onnxruntime_version": onnxruntime.__version__,
        "weights": f"int8, per output channel, symmetric, {weight_bits}-bit range "
        f"(±{64 if weight_bits == 7 else 127})",
        "weight_bits": weight_bits,
        "activations": "int8, per-tensor, symmetric",
        "quantized_ops": len(names),
        "float_inputs_restored": restored,
        "kept_float": "the selective scan (plugin node or portable subgraph), its A, D, delta_bias and state, "
        "norms, elementwise ops",
    }
    return out, info


# ---------------------------------------------------------------------------------------------- FP16


def convert_fp16(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """A copy with the weight ops and their constants in float16, everything else float32 (I/O included).

    Each converted op reads Cast(x -> float16) and its output is cast back to float32, which is what
    onnxconverter-common's converter does with keep_io_types and a node block list; written directly
    because that converter mistypes the sequence outputs (SplitToSequence) these graphs hold.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    _name_nodes(model)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    targets = {n.name for n in weight_nodes(model)}
    halves: dict[str, str] = {}
    ordered: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.name not in targets:
            ordered.append(node)
            continue
        for k, name in enumerate(node.input):
            if name in inits:
                if name not in halves:
                    halves[name] = f"{name}_fp16"
                    half = onnx.numpy_helper.to_array(inits[name]).astype(np.float16)
                    graph.initializer.append(onnx.numpy_helper.from_array(half, halves[name]))
                node.input[k] = halves[name]
            elif name:
                cast = f"{node.name}_in{k}_fp16"
                ordered.append(onnx.helper.make_node("Cast", [name], [cast], f"{cast}_cast", to=f16))
                node.input[k] = cast
        out = node.output[0]
        node.output[0] = f"{out}_fp16"
        ordered += [node, onnx.helper.make_node("Cast", [node.output[0]], [out], f"{out}_cast", to=f32)]
    del graph.node[:]
    graph.node.extend(ordered)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    info = {
        "method": "weight ops (MatMul/Gemm/Conv with constant weights) in float16 with casts; "
        "everything else and the graph I/O in float32",
        "fp16_ops": len(targets),
        "kept_float": "the selective scan (plugin node or portable subgraph) and every non-weight op",
    }
    return model, info


# ---------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Scores:
    ma: float
    f1: float
    num_images: int


def score_onnx(path: Path, spec: str, split: str = "test", threads: int = 0) -> Scores:
    """mA and F1 of an exported ONNX file on `split` of `spec`, through the onnxruntime backend."""
    from partool.data import open_dataset
    from partool.data.transforms import build_transforms
    from partool.evaluate import evaluate
    from partool.runtime.onnx_backend import OnnxBackend

    backend = OnnxBackend(path, device="cpu", threads=threads)
    meta = backend.meta
    dataset = open_dataset(spec, split, build_transforms(meta["input_size"], meta["mean"], meta["std"]))
    if list(dataset.attributes) != list(meta["attributes"]):
        raise UserError(
            f"--eval {spec} has other attributes than the model ({len(dataset.attributes)} vs "
            f"{len(meta['attributes'])}); evaluate on the dataset the run was trained on"
        )
    metrics = evaluate(backend.predict, dataset, batch_size=64, threshold=backend.threshold, workers=0)
    return Scores(float(metrics.ma), float(metrics.f1), int(metrics.num_samples))


def accuracy_report(
    reference: Path, variant: Path, precision: str, spec: str, split: str = "test"
) -> dict[str, Any]:
    """mA/F1 of `variant` vs the FP32 `reference` on the eval split, and both file sizes."""
    ref, var = score_onnx(reference, spec, split), score_onnx(variant, spec, split)
    ref_size, var_size = reference.stat().st_size, variant.stat().st_size
    return {
        "eval": {"data": spec, "split": split, "num_images": ref.num_images},
        "fp32": {"ma": ref.ma, "f1": ref.f1, "bytes": ref_size},
        precision: {"ma": var.ma, "f1": var.f1, "bytes": var_size},
        "ma_drop_points": round(100 * (ref.ma - var.ma), 4),
        "f1_drop_points": round(100 * (ref.f1 - var.f1), 4),
        "size_ratio": round(var_size / ref_size, 4),
    }


def iter_qdq_consumers(proto: onnx.ModelProto) -> Iterator[tuple[onnx.NodeProto, str]]:
    """(node, input) for every input of a non-Q/DQ node that is a DequantizeLinear output."""
    dq_out = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    for node in proto.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        for name in node.input:
            if name in dq_out:
                yield node, name
