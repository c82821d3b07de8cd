"""ONNX export: both scan lowerings, the plugin node contract, ONNX Runtime parity and dynamic batch."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import typer
from typer.testing import CliRunner

from partool.artifacts import build_meta
from partool.errors import UserError
from partool.export import export_onnx
from partool.export.quantize import weight_nodes
from partool.models import create_model
from partool.models.run_folder import save_run
from partool.ops import get_backend, selective_scan
from partool.ops.lowering import current_lowering
from partool.ops.mamba_inner import mamba_inner_export
from partool.ops.onnx import scan_lowering
from partool.ops.scan_reference import scan_sequential
from partool.runtime.ort_python_op import scan_python
from partool.runtime.ort_session import create_session

IMG = (64, 32)
MODELS = {  # name -> (builder kwargs, scan calls per forward: Vim 2 per layer, VMamba 2 per block)
    "vim-t": ({"depth": 2}, 4),
    "vmamba-t": ({"depths": [1, 1, 1, 1], "dims": 16}, 8),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{(model, scan): (torch model, onnx path)} for both tiny models and both lowerings."""
    torch.manual_seed(0)
    out = {}
    for name, (kw, _) in MODELS.items():
        model = create_model(name, 5, img_size=IMG, **kw).eval()
        meta = build_meta(model, [f"attr{i}" for i in range(5)], "synth")
        for scan in ("plugin", "portable"):
            path = tmp_path_factory.mktemp(f"{name}-{scan}") / "model.onnx"
            out[name, scan] = (model, export_onnx(model, path, scan=scan, meta=meta))
    return out


def _torch_logits(model, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("scan", ["plugin", "portable"])
def test_checker_metadata_and_names(exported, name, scan):
    path = exported[name, scan][1]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, *IMG]
    meta = json.loads((path.parent / "partool.json").read_text())
    assert meta["output"] == "logits" and meta["model"] == name and meta["export"]["scan"] == scan
    custom = [n for n in proto.graph.node if n.domain == "partool"]
    assert len(custom) == (MODELS[name][1] if scan == "plugin" else 0)


@pytest.mark.parametrize("name", MODELS)
def test_plugin_nodes_follow_the_contract(exported, name):
    proto = onnx.load(str(exported[name, "plugin"][1]))
    nodes = [n for n in proto.graph.node if n.op_type == "SelectiveScan"]
    assert len(nodes) == MODELS[name][1]
    has_z = name.startswith("vim")  # Vim gates inside the scan; VMamba v0 gates after its LayerNorm
    reverses = []
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == "partool"
        assert attrs["plugin_namespace"] == b"partool" and attrs["plugin_version"] == b"1"
        assert attrs["delta_softplus"] == 1
        assert (attrs["has_D"], attrs["has_z"], attrs["has_delta_bias"]) == (1, int(has_z), 1)
        # TensorRT plugin rule: present inputs only, packed, none empty.
        assert len(node.input) == 5 + 2 + has_z and all(node.input)
        reverses.append(attrs["reverse"])
    # each Vim layer and each VMamba block scans once forward and once in reverse (no flipped copies)
    half = MODELS[name][1] // 2
    assert sorted(reverses) == [0] * half + [1] * half


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("scan", ["plugin", "portable"])
def test_onnxruntime_matches_pytorch_at_any_batch(exported, name, scan):
    model, path = exported[name, scan]
    session = create_session(path, threads=1)
    rng = np.random.default_rng(1)
    for batch in (1, 3):  # exported at batch 2: the batch axis must be free
        images = rng.standard_normal((batch, 3, *IMG), dtype=np.float32)
        got = session.run(None, {"images": images})[0]
        np.testing.assert_allclose(got, _torch_logits(model, images), atol=1e-4, rtol=1e-4)


def test_vim_graph_is_lean_and_keeps_weights_quantizable(tmp_path):
    """The mixer's export layout: no sequence ops; in_proj, out_proj and the head take their weight second
    (ORT prepacks it), x_proj and dt_proj first (their outputs are channel-major: no transposes of Δ, B, C),
    and quantize.py sees every one of them as a weight op; 2-D depthwise convs, x / sqrt RMSNorms, and per
    layer only three transposes: x (for the convs), z, and y (which ORT folds into out_proj's FusedMatMul)."""
    torch.manual_seed(0)
    depth = 2
    model = create_model("vim-t", 5, img_size=IMG, depth=depth).eval()
    with torch.no_grad():  # a trained norm weight (onnxslim drops a ×1 of the init's ones)
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight")):
                p.uniform_(0.5, 1.5)
    proto = onnx.load(str(export_onnx(model, tmp_path / "model.onnx", scan="plugin")))
    nodes = proto.graph.node
    ops = Counter(n.op_type for n in nodes)
    assert ops["SplitToSequence"] == ops["SequenceAt"] == ops["Reciprocal"] == 0
    weights = {i.name: list(i.dims) for i in proto.graph.initializer}
    matmuls = [n for n in nodes if n.op_type == "MatMul"]
    assert sum(n.input[1] in weights for n in matmuls) == 1 + 3 * depth  # in_proj ×2, out_proj; the head
    assert sum(n.input[0] in weights for n in matmuls) == 4 * depth  # x_proj, dt_proj per direction
    assert sum(n.op_type == "MatMul" for n in weight_nodes(proto)) == len(matmuls)
    d_inner = model.backbone.layers[0].mixer.d_inner
    depthwise = [weights[n.input[1]] for n in nodes if n.op_type == "Conv" and n.input[1] in weights]
    assert depthwise.count([d_inner, 1, 1, 4]) == 2 * depth
    assert ops["Transpose"] <= 1 + 3 * depth  # + the patch embedding's
    assert ops["Div"] >= depth + 1 and ops["Sqrt"] == depth + 1  # one x / sqrt(mean(x²) + eps) per norm


def test_mixer_export_layout_computes_the_same_function():
    torch.manual_seed(4)
    model = create_model("vim-t", 5, img_size=IMG, depth=1).eval()
    mixer = model.backbone.layers[0].mixer
    hidden = torch.randn(2, 9, mixer.d_model)
    with torch.no_grad():
        directions = (mixer.direction(False), mixer.direction(True))
        exported = mamba_inner_export(hidden, mixer.in_proj.weight, mixer.out_proj.weight, directions)
        torch.testing.assert_close(exported, mixer(hidden), atol=1e-5, rtol=1e-4)


class _OneScan(torch.nn.Module):
    """A single scan with grouped B/C, no z, given Δ scale and direction: the portable graph's edge cases."""

    def __init__(self, reverse: bool) -> None:
        super().__init__()
        self.A = torch.nn.Parameter(-torch.rand(8, 4) * 8 - 0.1)
        self.D = torch.nn.Parameter(torch.randn(8))
        self.reverse = reverse

    def forward(self, u, delta, B, C):
        return selective_scan(u, delta, self.A, B, C, self.D, delta_softplus=True, reverse=self.reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_portable_scan_is_stable_for_large_delta(tmp_path, reverse):
    torch.manual_seed(2)
    length = 40  # two chunks of the unrolled graph, the second partial
    u, B, C = torch.randn(2, 8, length), torch.randn(2, 2, 4, length), torch.randn(2, 2, 4, length)
    delta = torch.randn(2, 8, length) * 60  # softplus(Δ) up to ~200: exp(Δ·A) underflows to 0, never NaN
    module = _OneScan(reverse).eval()
    with scan_lowering("portable") as table, torch.no_grad():
        program = torch.onnx.export(
            module, (u, delta, B, C), None, dynamo=True, custom_translation_table=table, opset_version=18
        )
    import onnxruntime as ort

    session = ort.InferenceSession(
        program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, dict(zip(names, (t.numpy() for t in (u, delta, B, C)), strict=True)))[0]
    dt = torch.nn.functional.softplus(delta)
    y, _ = scan_sequential(u, dt, module.A.detach(), B, C, reverse)  # channel c uses group c // 4
    y = y + module.D.detach()[:, None] * u
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, y.numpy(), atol=1e-4, rtol=1e-4)


def test_python_op_body_matches_sequential_reference():
    rng = np.random.default_rng(3)
    u, delta, z = (rng.standard_normal((2, 6, 9), dtype=np.float32) for _ in range(3))
    A = -rng.random((6, 3), dtype=np.float32)
    B, C = (
        rng.standard_normal((2, 3, 3, 9), dtype=np.float32),
        rng.standard_normal((2, 3, 3, 9), dtype=np.float32),
    )
    got = scan_python(u, delta, A, B, C, None, z, None, 0, 1)
    t = [torch.from_numpy(x) for x in (u, delta, A, B, C)]
    want = selective_scan(*t, z=torch.from_numpy(z), reverse=True, backend="reference")
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_scan_lowering_is_scoped_to_its_block_and_rejects_unknown():
    """The lowering holds inside the block only (a scan there is the lowering's custom op, after it the
    backend's), leaves the backend choice alone, and an unknown kind is a UserError naming the choices."""
    before = get_backend()
    u = torch.randn(1, 4, 3)
    args = (u, torch.rand(1, 4, 3), -torch.rand(4, 2), torch.randn(1, 2, 3), torch.randn(1, 2, 3))
    with scan_lowering("plugin"):
        assert current_lowering() == "plugin" and get_backend() == before
        _, last = selective_scan(*args, return_last_state=True)
        assert last.numel() == 0  # the lowered op has no state output
    assert current_lowering() is None and get_backend() == before
    _, last = selective_scan(*args, return_last_state=True)
    assert last.shape == (1, 4, 2)
    with pytest.raises(UserError, match="portable"), scan_lowering("tensorrt"):
        pass


def test_cli_exports_a_run_and_rejects_bad_input(tmp_path):
    from partool.cli.export_cmd import register

    torch.manual_seed(0)
    model = create_model("vim-t", 3, img_size=IMG, depth=1).eval()
    run = save_run(tmp_path / "run", model, build_meta(model, ["a", "b", "c"], "synth"))
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `export` a subcommand
    runner = CliRunner()
    ok = runner.invoke(app, ["export", str(run), "--scan", "portable", "--out", str(tmp_path / "onnx")])
    assert ok.exit_code == 0, ok.output
    proto = onnx.load(str(tmp_path / "onnx" / "model.onnx"))
    assert not any(n.domain == "partool" for n in proto.graph.node)
    bad = runner.invoke(app, ["export", str(run), "--scan", "trt", "--out", str(tmp_path / "bad")])
    assert isinstance(bad.exception, UserError), bad.output
    assert not (tmp_path / "bad" / "model.onnx").exists()
