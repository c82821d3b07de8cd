"""Runtime backends: preprocessing vs a per-crop reference and vs training's transform, torch vs ONNX Runtime
parity, load_backend's errors, and the TensorRT backend's pure logic (metadata check, engine I/O) on fakes —
TensorRT itself is not installable here, so its class is exercised only on the target."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from partool.artifacts import build_meta
from partool.data.transforms import build_transforms
from partool.devices import Device, parse_device
from partool.errors import UserError
from partool.models import create_model
from partool.models.run_folder import save_run
from partool.runtime import load_backend, preprocess
from partool.runtime.base import sigmoid
from partool.runtime.onnx_backend import choose_providers
from partool.runtime.tensorrt_backend import (
    _device_index,
    check_engine_meta,
    engine_io,
    parse_compute_capability,
)

IMG = (64, 32)
ATTRS = [f"a{i}" for i in range(5)]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("vim-t", len(ATTRS), img_size=IMG, depth=1).eval()
    return save_run(tmp_path_factory.mktemp("run"), model, build_meta(model, ATTRS, "synth")), model


def _crops(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(100, 40), (30, 12), (64, 32), (200, 90), (50, 50)]  # shrink, grow, same, both
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def test_preprocess_matches_a_per_crop_reference():
    crops = _crops()
    got = preprocess(crops, IMG, MEAN, STD, pad_to=8)
    assert got.shape == (8, 3, *IMG) and got.dtype == np.float32
    for i, crop in enumerate(crops):
        interp = cv2.INTER_AREA if crop.shape[0] > IMG[0] or crop.shape[1] > IMG[1] else cv2.INTER_LINEAR
        rgb = cv2.cvtColor(cv2.resize(crop, IMG[::-1], interpolation=interp), cv2.COLOR_BGR2RGB)
        ref = ((rgb.astype(np.float64) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
        np.testing.assert_allclose(got[i], ref, atol=1e-5)
    assert not got[len(crops) :].any()  # the padding rows are zero


def test_preprocess_is_close_to_the_training_transform():
    """Same channel order and normalisation as torchvision's eval transform; only the resize kernel differs."""
    rng = np.random.default_rng(1)
    crop = cv2.GaussianBlur(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8), (5, 5), 0)  # natural-ish
    ours = preprocess([crop], IMG, MEAN, STD)[0]
    theirs = build_transforms(IMG, MEAN, STD)(Image.fromarray(crop[..., ::-1].copy())).numpy()
    levels = np.asarray(STD, np.float32)[:, None, None] * 255  # back to 0..255 grey levels
    gap = (np.abs(ours - theirs) * levels).mean()
    assert gap < 4.0  # area vs antialiased bilinear resize: a few grey levels
    swapped = preprocess([crop[..., ::-1].copy()], IMG, MEAN, STD)[0]  # wrong channel order is far off
    assert (np.abs(swapped - theirs) * levels).mean() > 3 * gap


def test_sigmoid_is_stable_and_exact():
    x = np.array([-1000.0, -2.0, 0.0, 3.0, 1000.0], np.float32)
    np.testing.assert_allclose(
        sigmoid(x), [0.0, 1 / (1 + np.exp(2.0)), 0.5, 1 / (1 + np.exp(-3.0)), 1.0], rtol=1e-6
    )


def test_torch_backend_matches_the_model_and_chunks_batches(run_dir):
    path, model = run_dir
    backend = load_backend(path, device="cpu")
    assert backend.name == "torch" and backend.attributes == ATTRS and backend.input_size == IMG
    crops = _crops()
    batch = backend.preprocess(crops)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(batch))).numpy()
    np.testing.assert_allclose(backend.predict(crops), expected, atol=1e-5)
    backend.max_batch = 2  # 5 crops in chunks of 2, 2, 1 give the same answer
    np.testing.assert_allclose(backend.predict(batch), expected, atol=1e-5)
    assert backend.predict([]).shape == (0, len(ATTRS))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_torch_backend_runs_at_the_precision_asked_for(run_dir, precision):
    """The model's weights are cast, so the probabilities move off fp32's a little, but not further than
    half precision's rounding allows."""
    path, _ = run_dir
    reference = load_backend(path, device="cpu")
    assert reference.describe()["precision"] == "fp32"  # auto on the CPU
    low = load_backend(path, device="cpu", precision=precision.upper())
    assert low.describe() == {**reference.describe(), "precision": precision}
    assert {p.dtype for p in low.model.parameters()} == {
        {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    }
    crops = _crops()
    want, got = reference.predict(crops), low.predict(crops)
    assert got.dtype == np.float32 and not np.array_equal(got, want)
    np.testing.assert_allclose(got, want, atol=2e-2)


def test_precision_choices_and_where_they_apply(run_dir, tmp_path):
    from partool.runtime.torch_backend import resolve_precision

    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision(None, torch.device("cpu")) == "fp32"
    assert resolve_precision(" BF16 ", torch.device("cpu")) == "bf16"
    path, _ = run_dir
    with pytest.raises(UserError, match="unknown precision 'int8'"):
        load_backend(path, device="cpu", precision="int8")
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"")
    with pytest.raises(UserError, match="re-export"):  # exported models keep their precision
        load_backend(onnx_path, device="cpu", precision="fp16")


@pytest.mark.parametrize(
    ("rows", "max_batch", "expected"),
    [(1, 64, 1), (3, 64, 4), (4, 64, 4), (33, 64, 64), (64, 64, 64), (40, 48, 48), (100, 64, 100), (5, 1, 5)],
)
def test_graph_batch_rounds_up_to_a_power_of_two_within_max_batch(rows, max_batch, expected):
    from partool.runtime.cuda_graphs import graph_batch

    assert graph_batch(rows, max_batch) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graphs_match_the_eager_forward(run_dir):
    """Graphs per rounded-up batch size give the eager forward's probabilities, whatever the padding rows
    hold from an earlier, larger call."""
    path, _ = run_dir
    graphed = load_backend(path, device="cuda", precision="fp32")
    eager = load_backend(path, device="cuda", precision="fp32", cuda_graphs=False)
    assert graphed.describe()["cuda_graphs"] and not eager.describe()["cuda_graphs"]
    batch = graphed.preprocess(_crops() + _crops(1) + _crops(2))  # 15 crops
    for rows in (15, 1, 3, 5, 15):
        np.testing.assert_allclose(graphed.predict(batch[:rows]), eager.predict(batch[:rows]), atol=1e-5)
    assert graphed._graphs.captured == [1, 4, 8, 16]
    graphed.warmup()  # what a video run captures before its first frame
    assert graphed._graphs.captured == [1, 2, 4, 8, 16]
    from partool.ops import kernels

    # the scans ran the variant the warm-up forwards timed, and the summary says which
    if kernels.cuda_available():
        assert graphed.describe()["scan_variants"]


@pytest.mark.parametrize("scan", ["portable", "plugin"])
def test_onnxruntime_backend_matches_torch(run_dir, tmp_path, scan):
    pytest.importorskip("onnxscript")
    if scan == "plugin":
        pytest.importorskip("onnxruntime_extensions")
    try:
        from partool.export import export_run
    except ImportError as e:  # the export stage is another engineer's; skip until it imports
        pytest.skip(f"partool.export unavailable: {e}")
    path, _ = run_dir
    onnx_path = export_run(path, tmp_path / scan, scan=scan)
    ort_backend = load_backend(onnx_path, device="cpu")
    assert ort_backend.name == "onnxruntime" and ort_backend.attributes == ATTRS
    crops = _crops(3)
    np.testing.assert_allclose(
        ort_backend.predict(crops), load_backend(path, device="cpu").predict(crops), atol=1e-4
    )


def test_load_backend_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_backend(tmp_path / "missing.onnx")
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(UserError, match=r"partool\.json"):
        load_backend(bad)
    (tmp_path / "partool.json").write_text(json.dumps({"model": "vim-t"}))
    with pytest.raises(UserError, match="lacks the key"):
        load_backend(bad)
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"x")
    with pytest.raises(UserError, match="cannot tell the runtime"):
        load_backend(weird)


def test_unreadable_onnx_is_a_user_error(run_dir, tmp_path):
    path, _ = run_dir
    meta = json.loads((path / "partool.json").read_text())
    (tmp_path / "partool.json").write_text(json.dumps({**meta, "output": "logits"}))
    (tmp_path / "model.onnx").write_bytes(b"\x08garbage")
    with pytest.raises(UserError, match=r"model\.onnx"):
        load_backend(tmp_path / "model.onnx", device="cpu")


def _tiny_portable_onnx(folder, meta) -> None:
    """model.onnx + partool.json of a standard-op graph: per-channel means of the image through a (3, A) MatMul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.arange(3 * len(ATTRS), dtype=np.float32).reshape(3, len(ATTRS)) / 10
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, *IMG])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(ATTRS)])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "partool.json").write_text(json.dumps({**meta, "output": "logits"}))


def test_a_portable_onnx_runs_without_torch(run_dir, tmp_path):
    """An edge device with onnxruntime and NumPy only: loading and running a graph without partool nodes
    imports neither torch nor partool.ops (nor the export stage), checked in a fresh interpreter."""
    path, _ = run_dir
    _tiny_portable_onnx(tmp_path, json.loads((path / "partool.json").read_text()))
    script = f"""
import json, sys
import numpy as np
from partool.runtime import load_backend
backend = load_backend({str(tmp_path / "model.onnx")!r}, device="cpu")
probs = backend.predict(np.ones((2, 3, {IMG[0]}, {IMG[1]}), np.float32))
loaded = [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "partool.ops", "partool.export"))]
print(json.dumps({{"shape": list(probs.shape), "loaded": sorted(loaded)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"shape": [2, len(ATTRS)], "loaded": []}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("auto", Device("auto")), (None, Device("auto")), ("", Device("auto")), (" CPU ", Device("cpu")),
     ("cuda", Device("cuda")), ("Cuda:1", Device("cuda", 1))],
)  # fmt: skip
def test_parse_device(text, expected):
    assert parse_device(text) == expected
    assert str(expected) == {None: "auto", "": "auto"}.get(text, (text or "").strip().lower())


@pytest.mark.parametrize("text", ["gpu", "mps", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "cuda1"])
def test_parse_device_rejects_other_spellings(text):
    with pytest.raises(UserError, match=r"unknown device .*use auto, cpu, cuda or cuda:N"):
        parse_device(text)


def test_each_runtime_maps_the_parsed_device():
    """ONNX Runtime: execution providers; TensorRT: a CUDA ordinal (never the CPU)."""
    cpu_only, with_cuda = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", cpu_only) == cpu_only
    assert choose_providers("auto", with_cuda) == with_cuda
    assert choose_providers("cpu", with_cuda) == cpu_only
    assert choose_providers("cuda:1", with_cuda)[0] == ("CUDAExecutionProvider", {"device_id": 1})
    with pytest.raises(UserError, match="no CUDA provider"):
        choose_providers("cuda", cpu_only)
    with pytest.raises(UserError, match="unknown device"):
        choose_providers("gpu", with_cuda)
    assert [_device_index(d) for d in ("auto", "cuda", "cuda:2")] == [0, 0, 2]
    with pytest.raises(UserError, match="runs on a GPU"):
        _device_index("cpu")


# ------------------------------------------------------------------ TensorRT pure logic (no TensorRT here)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("8.7", (8, 7)), ("sm_90", (9, 0)), (87, (8, 7)), ([7, 2], (7, 2)), ("10.0", (10, 0))],
)
def test_parse_compute_capability(value, expected):
    assert parse_compute_capability(value) == expected


def test_engine_meta_check_accepts_a_match_and_explains_a_mismatch():
    meta = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "precision": "int8"}
    check_engine_meta(meta, "10.3.0.30", (8, 7), "model.engine")  # same release, other build: fine
    check_engine_meta(None, "10.7.0", (9, 0), "model.engine")  # no metadata: TensorRT decides
    with pytest.raises(UserError, match=r"TensorRT 10\.3\.0 \(this machine has 10\.7\.0\).*rebuild"):
        check_engine_meta(meta, "10.7.0", (8, 7), "model.engine")
    with pytest.raises(UserError, match=r"compute capability 8\.7 \(this GPU is 9\.0\)"):
        check_engine_meta(meta, "10.3.0", (9, 0), "model.engine")


class _FakeEngine:
    """ICudaEngine's tensor API over plain data."""

    INPUT = "in"

    def __init__(self, shapes: dict[str, tuple[int, ...]], inputs: set[str], profile=None):
        self.shapes, self.inputs, self.profile = shapes, inputs, profile
        self.num_io_tensors = len(shapes)

    def get_tensor_name(self, i):
        return list(self.shapes)[i]

    def get_tensor_mode(self, name):
        return self.INPUT if name in self.inputs else "out"

    def get_tensor_shape(self, name):
        return self.shapes[name]

    def get_tensor_profile_shape(self, name, index):
        assert index == 0
        return self.profile


def test_engine_io_reads_dynamic_and_static_batch():
    dynamic = _FakeEngine({"images": (-1, 3, 64, 32), "logits": (-1, 5)}, {"images"},
                          profile=((1, 3, 64, 32), (8, 3, 64, 32), (32, 3, 64, 32)))  # fmt: skip
    io = engine_io(dynamic, _FakeEngine.INPUT)
    assert (io.input_name, io.output_name, io.image_shape, io.num_outputs) == (
        "images",
        "logits",
        (3, 64, 32),
        5,
    )
    assert (io.min_batch, io.max_batch) == (1, 32)
    static = _FakeEngine({"images": (4, 3, 64, 32), "logits": (4, 5)}, {"images"})
    assert (
        engine_io(static, _FakeEngine.INPUT).min_batch,
        engine_io(static, _FakeEngine.INPUT).max_batch,
    ) == (4, 4)
    two_outputs = _FakeEngine({"images": (-1, 3, 64, 32), "a": (-1, 5), "b": (-1, 5)}, {"images"})
    with pytest.raises(UserError, match="one of each"):
        engine_io(two_outputs, _FakeEngine.INPUT)


def test_min_batch_pads_and_trims(run_dir):
    """A static-batch engine (min = max = 4) gets 5 crops as 4 + (1 padded to 4), trimmed back to 5 rows."""
    path, _ = run_dir
    backend = load_backend(path, device="cpu")
    seen = []
    real = backend._infer
    backend._infer = lambda batch: (seen.append(len(batch)), real(batch))[1]
    backend.min_batch = backend.max_batch = 4
    out = backend.predict(_crops())
    assert seen == [4, 4] and out.shape == (5, len(ATTRS))
    backend.min_batch = backend.max_batch = 64
    np.testing.assert_allclose(out, backend.predict(_crops()), atol=1e-5)
