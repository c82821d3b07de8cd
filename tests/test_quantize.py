"""INT8 (Q/DQ) and FP16 variants: where the Q/DQ nodes go, that the scan stays float, ORT parity, sizes,
and the accuracy report `partool export --int8` stores."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import typer
from typer.testing import CliRunner

from partool.artifacts import build_meta
from partool.data.synth import ATTRIBUTES
from partool.errors import UserError
from partool.export import export_onnx
from partool.export.quantize import (
    WEIGHT_OPS,
    calibration_batches,
    convert_fp16,
    iter_qdq_consumers,
    quantize_int8,
    weight_nodes,
)
from partool.models import create_model
from partool.models.run_folder import save_run
from partool.runtime.ort_session import create_session

IMG = (64, 32)
DATA = "synth:16"  # 16 train images, 4 test


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """{scan: (fp32 proto, int8 proto (7-bit weights), fp16 proto, fp32 path)} of one random tiny Vim,
    calibrated on synth; "full-range" holds the portable graph's 8-bit-weight INT8 proto and its FP32 path."""
    torch.manual_seed(0)
    model = create_model("vim-t", len(ATTRIBUTES), img_size=IMG, depth=1).eval()
    meta = build_meta(model, list(ATTRIBUTES), DATA)
    batches = calibration_batches(DATA, meta, count=8, batch=4)
    out = {}
    for scan in ("plugin", "portable"):
        path = export_onnx(model, tmp_path_factory.mktemp(scan) / "model.onnx", scan=scan, meta=meta)
        fp32 = onnx.load(str(path))
        out[scan] = (fp32, quantize_int8(fp32, batches)[0], convert_fp16(fp32)[0], path)
    fp32, path = out["portable"][0], out["portable"][3]
    out["full-range"] = (quantize_int8(fp32, batches, weight_bits=8)[0], path)
    return out


def _images() -> np.ndarray:
    """The 4 test images of synth:16, as the model sees them (the calibration used train images)."""
    from partool.data import open_dataset
    from partool.data.transforms import build_transforms

    test = open_dataset(DATA, "test", build_transforms(IMG))
    return np.stack([test[i][0].numpy() for i in range(len(test))])


def _run(proto: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    return create_session(proto).run(None, {"images": images})[0]


def test_calibration_draws_distinct_eval_transformed_images():
    meta = {"input_size": list(IMG), "mean": [0.5] * 3, "std": [0.5] * 3}
    batches = calibration_batches(DATA, meta, count=10, batch=4)
    assert [len(b) for b in batches] == [4, 4, 2]
    stacked = np.concatenate(batches)
    assert stacked.shape == (10, 3, *IMG) and stacked.dtype == np.float32
    assert stacked.min() >= -1.0 and stacked.max() <= 1.0  # (x - 0.5) / 0.5 of [0, 1] pixels
    assert len({row.tobytes() for row in stacked}) == 10  # drawn without replacement
    assert len(np.concatenate(calibration_batches(DATA, meta, count=999))) == 16  # capped at the split


@pytest.mark.slow
@pytest.mark.parametrize("scan", ["plugin", "portable"])
def test_qdq_only_feeds_weight_ops_and_the_scan_stays_float(graphs, scan):
    fp32, int8, _, _ = graphs[scan]
    types = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= types
    consumers = list(iter_qdq_consumers(int8))
    assert consumers and {n.op_type for n, _ in consumers} <= set(WEIGHT_OPS)
    # every weight op of the FP32 graph reads a dequantized activation and a dequantized int8 weight
    quantized = {n.name for n, _ in consumers}
    assert len(quantized) == len(weight_nodes(fp32))
    int8_weights = [
        t for t in int8.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2
    ]
    assert len(int8_weights) == len(weight_nodes(fp32))
    # constants no weight op reads (A, D, delta_bias, norms, positions...) are untouched float32
    weight_inputs = {i for n in weight_nodes(fp32) for i in n.input}
    kept = {t.name: t for t in int8.graph.initializer}
    for tensor in fp32.graph.initializer:
        if tensor.name in weight_inputs or tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        assert tensor.name in kept, tensor.name
        np.testing.assert_array_equal(
            onnx.numpy_helper.to_array(kept[tensor.name]), onnx.numpy_helper.to_array(tensor)
        )
    if scan == "plugin":
        producer = {o: n for n in int8.graph.node for o in n.output}
        scans = [n for n in int8.graph.node if n.op_type == "SelectiveScan"]
        assert len(scans) == 2  # one layer: forward and backward scan
        for node in scans:
            for name in node.input:
                assert producer.get(name) is None or producer[name].op_type not in (
                    "DequantizeLinear",
                    "QuantizeLinear",
                )
            # A (input 2) and the trailing D / delta_bias are float32 initializers
            for name in (node.input[2], node.input[5], node.input[-1]):
                assert kept[name].data_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize(("bits", "qmax"), [(7, 64), (8, 127)])
def test_first_input_weights_are_quantized_per_output_row(graphs, bits, qmax):
    """x_proj/dt_proj export as MatMul(W, x): their int8 weights carry one scale per ROW of W (its output
    channels), each scale max|row| / qmax (±64 for 7-bit weights, ±127 for 8-bit), and dequantize to W within
    half a step."""
    fp32, int8, _, _ = graphs["portable"]
    if bits == 8:
        int8 = graphs["full-range"][0]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in fp32.graph.initializer}
    firsts = [n for n in weight_nodes(fp32) if n.op_type == "MatMul" and n.input[0] in inits]
    assert len(firsts) == 4  # one layer, two directions: x_proj and dt_proj each
    q_inits = {t.name: onnx.numpy_helper.to_array(t) for t in int8.graph.initializer}
    dq_of = {n.output[0]: n for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    for node in firsts:
        weight = inits[node.input[0]]
        dq = dq_of[next(n.input[0] for n in int8.graph.node if n.name == node.name)]
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        q, scale = q_inits[dq.input[0]], q_inits[dq.input[1]]
        assert axis == 0 and q.dtype == np.int8 and scale.shape == (weight.shape[0],)
        assert np.abs(q.astype(int)).max() == qmax
        np.testing.assert_allclose(scale, np.abs(weight).max(axis=1) / qmax, rtol=1e-6)
        assert np.abs(q * scale[:, None] - weight).max() <= 0.5 * scale.max() * (1 + 1e-6)


@pytest.mark.slow
def test_vmamba_stacked_projection_weights_are_quantized_per_row(tmp_path):
    """VMamba's per-direction projections export as one MatMul(W (2, rows, cols), x) each: INT8 quantizes
    W with one scale per row shared by the two directions (max |W[:, row, :]| / 64 for the default 7-bit
    weights), and the INT8 graph
    stays close to FP32 on ORT."""
    torch.manual_seed(1)
    model = create_model("vmamba-t", len(ATTRIBUTES), img_size=IMG, depths=[1, 1, 1, 1], dims=16).eval()
    meta = build_meta(model, list(ATTRIBUTES), DATA)
    fp32 = onnx.load(str(export_onnx(model, tmp_path / "model.onnx", scan="plugin", meta=meta)))
    assert not any(n.op_type == "Einsum" for n in fp32.graph.node)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in fp32.graph.initializer}
    stacked = [n for n in weight_nodes(fp32) if n.op_type == "MatMul" and inits.get(n.input[0]) is not None]
    assert len(stacked) == 4 * 4 and all(inits[n.input[0]].ndim == 3 for n in stacked)  # 4 blocks
    int8 = quantize_int8(fp32, calibration_batches(DATA, meta, count=8, batch=4))[0]
    q_inits = {t.name: onnx.numpy_helper.to_array(t) for t in int8.graph.initializer}
    dq_of = {n.output[0]: n for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    for node in stacked:
        weight = inits[node.input[0]]
        dq = dq_of[next(n.input[0] for n in int8.graph.node if n.name == node.name)]
        scale = q_inits[dq.input[1]]
        assert next(a.i for a in dq.attribute if a.name == "axis") in (-2, 1)
        np.testing.assert_allclose(scale, np.abs(weight).max(axis=(0, 2)) / 64, rtol=1e-6)
    images = _images()
    ref, out = _run(fp32, images), _run(int8, images)
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.99 and not np.array_equal(out, ref)


@pytest.mark.parametrize("scan", ["plugin", "portable"])
def test_int8_runs_on_ort_close_to_fp32_and_is_smaller(graphs, scan):
    fp32, int8, _, path = graphs[scan]
    images = _images()
    ref, out = _run(fp32, images), _run(int8, images)
    assert out.shape == ref.shape and np.isfinite(out).all()
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() <= 0.1 * scale, (np.abs(out - ref).max(), scale)
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.99
    assert not np.array_equal(out, ref)  # it really is quantized
    assert len(int8.SerializeToString()) < 0.5 * path.stat().st_size


_QEMU_X86 = shutil.which("qemu-x86_64")


@pytest.mark.slow
@pytest.mark.skipif(
    _QEMU_X86 is None or platform.machine() != "x86_64",
    reason="needs qemu-x86_64 (Debian's qemu-user) on an x86-64 machine to run ONNX Runtime on a CPU without VNNI",
)
def test_7bit_weights_give_the_same_int8_outputs_on_a_cpu_without_vnni(graphs, tmp_path):
    """ONNX Runtime's x86 int8 GEMM on an AVX2-only CPU (here an emulated Haswell) adds pairs of u8×s8 products in
    saturating int16: full-range weights overflow it, 7-bit ones cannot. So the 7-bit file gives the same
    outputs as on this CPU, and the full-range file may not; each stays the same Q/DQ graph."""
    fp32, int8, _, _ = graphs["portable"]
    full_range = graphs["full-range"][0]
    images = _images()
    np.save(tmp_path / "images.npy", images)
    for name, proto in (("fp32", fp32), ("int8-7bit", int8), ("int8-8bit", full_range)):
        onnx.save(proto, tmp_path / f"{name}.onnx")
    script = (
        "import sys, numpy as np, onnxruntime as ort\n"
        "o = ort.SessionOptions(); o.intra_op_num_threads = 1\n"
        "x = np.load(sys.argv[1] + '/images.npy')\n"
        "for n in ('fp32', 'int8-7bit', 'int8-8bit'):\n"
        "    s = ort.InferenceSession(f'{sys.argv[1]}/{n}.onnx', o, providers=['CPUExecutionProvider'])\n"
        "    np.save(f'{sys.argv[1]}/{n}-haswell.npy', s.run(None, {'images': x})[0])\n"
    )
    haswell = subprocess.run(
        [_QEMU_X86, "-cpu", "Haswell", sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert haswell.returncode == 0, haswell.stderr[-2000:]
    emulated = {n: np.load(tmp_path / f"{n}-haswell.npy") for n in ("fp32", "int8-7bit", "int8-8bit")}
    here = {
        "fp32": _run(fp32, images),
        "int8-7bit": _run(int8, images),
        "int8-8bit": _run(full_range, images),
    }
    scale = np.abs(here["fp32"]).max()
    np.testing.assert_allclose(emulated["fp32"], here["fp32"], atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(emulated["int8-7bit"], here["int8-7bit"], atol=1e-4 * scale, rtol=0)
    assert np.abs(emulated["int8-7bit"] - here["fp32"]).max() <= 0.1 * scale
    # the full-range file on the AVX2-only CPU: the saturation this test is about, when this CPU has VNNI
    drift = np.abs(emulated["int8-8bit"] - here["int8-8bit"]).max()
    if _has_vnni():
        assert drift > 10 * np.abs(emulated["int8-7bit"] - here["int8-7bit"]).max() and drift > 1e-3 * scale


def _has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_vnni" in flags or " avx_vnni" in flags


@pytest.mark.parametrize(
    ("fmt", "platform_", "explicit", "bits"),
    [("onnx", "onnxruntime", None, 7), ("engine", "onnxruntime", None, 8), ("triton", "tensorrt", None, 8),
     ("triton", "onnxruntime", None, 7), ("engine", "onnxruntime", 7, 7), ("onnx", "onnxruntime", 8, 8)],
)  # fmt: skip
def test_int8_weight_bits_follow_the_target(fmt, platform_, explicit, bits):
    from partool.export.pipeline import ExportPlan, TritonOptions, int8_weight_bits

    plan = ExportPlan(format=fmt, precision="int8", weight_bits=explicit, triton=TritonOptions(platform_))
    assert int8_weight_bits(plan) == bits


def test_quantize_refuses_other_weight_bits(graphs):
    with pytest.raises(UserError, match="7 or 8"):
        quantize_int8(graphs["portable"][0], [], weight_bits=6)


@pytest.mark.parametrize("scan", ["plugin", "portable"])
def test_fp16_keeps_float_io_runs_and_is_close(graphs, scan):
    fp32, _, fp16, path = graphs[scan]
    onnx.checker.check_model(fp16)
    for value in (*fp16.graph.input, *fp16.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    half = [t for t in fp16.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(half) >= len(weight_nodes(fp32))
    images = _images()
    ref, out = _run(fp32, images), _run(fp16, images)
    np.testing.assert_allclose(out, ref, atol=2e-2 * np.abs(ref).max(), rtol=0)
    assert len(fp16.SerializeToString()) < 0.7 * path.stat().st_size


def test_cli_int8_stores_the_accuracy_report(tmp_path):
    from partool.cli.export_cmd import register

    torch.manual_seed(0)
    model = create_model("vim-t", len(ATTRIBUTES), img_size=IMG, depth=1).eval()
    run = save_run(tmp_path / "run", model, build_meta(model, list(ATTRIBUTES), DATA))
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(
        app, ["export", str(run), "--scan", "portable", "--int8", "--calib-count", "8"]
    )
    assert result.exit_code == 0, result.output
    assert "drop" in result.output
    folder = run / "onnx-portable-int8"
    meta = json.loads((folder / "partool.json").read_text())
    export = meta["export"]
    report = export["accuracy"]
    assert export["precision"] == "int8" and export["conversion"]["calib_count"] == 8
    assert export["conversion"]["weight_bits"] == 7  # an ONNX file: ONNX Runtime may run it on any x86 CPU
    assert report["eval"] == {"data": DATA, "split": "test", "num_images": 4}
    assert report["int8"]["bytes"] == (folder / "model.onnx").stat().st_size
    assert report["fp32"]["bytes"] == (run / "onnx-portable" / "model.onnx").stat().st_size
    assert report["ma_drop_points"] == pytest.approx(
        100 * (report["fp32"]["ma"] - report["int8"]["ma"]), abs=1e-3
    )
    assert report["size_ratio"] == pytest.approx(report["int8"]["bytes"] / report["fp32"]["bytes"], abs=1e-4)
    both = CliRunner().invoke(app, ["export", str(run), "--int8", "--fp16"])
    assert both.exit_code != 0 and "exclude" in str(both.exception)
