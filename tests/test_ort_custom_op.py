"""The C++ ONNX Runtime custom op (plugins/ort, libpartool_ort_ops): plugin graphs on ORT CPU vs PyTorch,
single SelectiveScan nodes (optional inputs, groups, reverse, float16) vs the reference scan, and the errors
for malformed nodes and a missing library."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from partool.artifacts import build_meta
from partool.errors import UserError
from partool.export import export_onnx
from partool.models import create_model
from partool.ops.selective_scan import selective_scan
from partool.runtime.ort_session import create_session, kernel_backend

IMG = (64, 32)
MODELS = {"vim-t": {"depth": 2}, "vmamba-t": {"depths": [1, 1, 1, 1], "dims": 16}}


@pytest.fixture(scope="module")
def ort_ops(plugins_build):
    """Path of libpartool_ort_ops from the session's plugin build; the module's sessions use it through
    PARTOOL_ORT_OPS_LIB."""
    if plugins_build is None:
        pytest.skip("cmake or a C++ compiler is missing: cannot build libpartool_ort_ops")
    if plugins_build.ort_ops is None:
        pytest.skip(
            "onnxruntime_c_api.h not found (the onnxruntime wheel has no headers): set ONNXRUNTIME_ROOT, "
            "or run `bash plugins/fetch_ort_headers.sh` (Debian's libonnxruntime-dev, into ~/.cache/partool)"
        )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PARTOOL_ORT_OPS_LIB", str(plugins_build.ort_ops))
        yield plugins_build.ort_ops


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    out = {}
    for name, kw in MODELS.items():
        model = create_model(name, 5, img_size=IMG, **kw).eval()
        meta = build_meta(model, [f"attr{i}" for i in range(5)], "synth")
        path = tmp_path_factory.mktemp(name) / "model.onnx"
        out[name] = (model, export_onnx(model, path, scan="plugin", meta=meta))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("scan_op", ["cpp", "python"])
def test_plugin_graph_matches_pytorch(ort_ops, exported, name, scan_op):
    model, path = exported[name]
    assert (kernel_backend(scan_op) == "cpp") == (scan_op == "cpp")
    session = create_session(path, threads=2, scan_op=scan_op)
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        images = rng.standard_normal((batch, 3, *IMG), dtype=np.float32)
        got = session.run(None, {"images": images})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(images)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def _node_model(
    shapes: dict[str, tuple[int, ...]],
    present: tuple[str, ...],
    io_type: int = TensorProto.FLOAT,
    attrs: dict | None = None,
    inputs: list[str] | None = None,
) -> bytes:
    """A graph of one partool::SelectiveScan node whose inputs are graph inputs, packed as the exporter
    writes them (u, delta, A, B, C and the present ones of D, z, delta_bias)."""
    names = inputs or ["u", "delta", "A", "B", "C", *(n for n in ("D", "z", "delta_bias") if n in present)]
    fp32 = {"A", "D", "delta_bias"}
    graph_inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT if n in fp32 else io_type, shapes[n])
        for n in names
    ]
    flags = {f"has_{n}": int(n in present) for n in ("D", "z", "delta_bias")}
    node = helper.make_node(
        "SelectiveScan",
        names,
        ["out"],
        domain="partool",
        name="scan0",
        **(
            {"delta_softplus": 1, "reverse": 0, "plugin_namespace": "partool", "plugin_version": "1"}
            | flags
            | (attrs or {})
        ),
    )
    out = helper.make_tensor_value_info("out", io_type, None)
    graph = helper.make_graph([node], "one_scan", graph_inputs, [out])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("partool", 1)]
    )
    return model.SerializeToString()


def _session(ort_ops, model: bytes, threads: int = 2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(str(ort_ops))
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _case(rng, b: int, d: int, n: int, length: int, groups: int | None):
    bc = (b, n, length) if groups is None else (b, groups, n, length)
    return {
        "u": rng.standard_normal((b, d, length), dtype=np.float32),
        "delta": rng.standard_normal((b, d, length), dtype=np.float32) * 0.5,
        "A": -np.exp(rng.standard_normal((d, n), dtype=np.float32)),
        "B": rng.standard_normal(bc, dtype=np.float32),
        "C": rng.standard_normal(bc, dtype=np.float32),
        "D": rng.standard_normal(d, dtype=np.float32),
        "z": rng.standard_normal((b, d, length), dtype=np.float32),
        "delta_bias": rng.standard_normal(d, dtype=np.float32) * 0.1,
    }


def _reference(x: dict[str, np.ndarray], present, softplus: bool, reverse: bool) -> np.ndarray:
    t = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in x.items()}
    optional = {k: (t[k] if k in present else None) for k in ("D", "z", "delta_bias")}
    out = selective_scan(
        t["u"], t["delta"], t["A"], t["B"], t["C"], **optional,
        delta_softplus=softplus, reverse=reverse, backend="reference",
    )  # fmt: skip
    return out.numpy()


# (batch, dim, dstate, length, groups or None for 3-D B/C, present optional inputs, softplus, reverse)
NODE_CASES = [
    (2, 272, 16, 9, 2, ("D", "z", "delta_bias"), 1, 0),  # 136 channels a group: two work items per group
    (1, 16, 16, 7, None, ("D", "z", "delta_bias"), 1, 1),
    (2, 12, 5, 6, 3, ("D", "delta_bias"), 1, 0),  # VMamba-style: no z, grouped
    (1, 8, 4, 5, None, ("z",), 0, 1),  # z alone sits in the first optional slot
    (3, 8, 1, 4, 4, (), 0, 0),
]


@pytest.mark.parametrize("case", NODE_CASES, ids=[f"case{i}" for i in range(len(NODE_CASES))])
@pytest.mark.parametrize("threads", [1, 2])
def test_single_node_matches_reference(ort_ops, case, threads):
    b, d, n, length, groups, present, softplus, reverse = case
    x = _case(np.random.default_rng(4), b, d, n, length, groups)
    feeds = {k: v for k, v in x.items() if k in ("u", "delta", "A", "B", "C") or k in present}
    shapes = {k: v.shape for k, v in feeds.items()}
    model = _node_model(shapes, present, attrs={"delta_softplus": softplus, "reverse": reverse})
    got = _session(ort_ops, model, threads).run(None, feeds)[0]
    np.testing.assert_allclose(
        got, _reference(x, present, bool(softplus), bool(reverse)), atol=1e-4, rtol=1e-4
    )


def test_float16_node_matches_reference(ort_ops):
    present = ("D", "z", "delta_bias")
    x = _case(np.random.default_rng(5), 2, 96, 16, 11, None)
    for k in ("u", "delta", "B", "C", "z"):  # io tensors in float16; A, D, delta_bias stay float32
        x[k] = x[k].astype(np.float16)
    model = _node_model({k: v.shape for k, v in x.items()}, present, io_type=TensorProto.FLOAT16)
    got = _session(ort_ops, model).run(None, x)[0]
    assert got.dtype == np.float16
    want = _reference(x, present, True, False)  # the same float16 values, computed in float32
    np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-2, rtol=1e-2)


def test_malformed_nodes_fail_with_a_clear_message(ort_ops):
    x = _case(np.random.default_rng(6), 1, 8, 4, 5, None)
    shapes = {k: v.shape for k, v in x.items()}
    # has_z says z is there, but the node lists only D and delta_bias: refused when the session is made.
    missing = _node_model(
        shapes, ("D", "z", "delta_bias"), inputs=["u", "delta", "A", "B", "C", "D", "delta_bias"]
    )
    with pytest.raises(Exception, match=r"scan0.*has 7 inputs but has_D/has_z/has_delta_bias say 8"):
        _session(ort_ops, missing)
    # A flag outside 0/1.
    bad_flag = _node_model(shapes, ("D",), attrs={"has_D": 2})
    with pytest.raises(Exception, match=r"field 'has_D' must be one int32 \(or int64\) equal to 0 or 1"):
        _session(ort_ops, bad_flag)
    # A with the wrong width: refused when run, naming the input and the shape expected.
    bad = dict(x, A=np.full((7, 4), -1.0, np.float32))
    feeds = {k: bad[k] for k in ("u", "delta", "A", "B", "C")}
    session = _session(ort_ops, _node_model({k: v.shape for k, v in feeds.items()}, ()))
    with pytest.raises(
        Exception, match=r"scan0.*input A has shape \(7, 4\), expected \(dim, dstate\) with dim = 8"
    ):
        session.run(None, feeds)
    # float16 io but a float32 z in a float32 slot: the packed slots are checked by the kernel.
    half = {k: (v.astype(np.float16) if k in ("u", "delta", "B", "C") else v) for k, v in x.items()}
    wrong_z = _node_model(
        {k: v.shape for k, v in half.items()}, ("D", "z", "delta_bias"), io_type=TensorProto.FLOAT16
    )
    model = onnx.load_from_string(wrong_z)
    model.graph.input[6].type.tensor_type.elem_type = TensorProto.FLOAT  # z
    with pytest.raises(Exception, match=r"input z is float32, expected float16 \(the type of u\)"):
        _session(ort_ops, model.SerializeToString()).run(None, half)


def test_cpp_op_missing_library_and_unknown_choice(monkeypatch, tmp_path, exported):
    monkeypatch.setenv("PARTOOL_ORT_OPS_LIB", str(tmp_path / "absent.so"))
    with pytest.raises(UserError, match=r"libpartool_ort_ops.*not built.*--ort-include"):
        create_session(exported["vim-t"][1], scan_op="cpp")
    assert kernel_backend() in ("cpu", "chunked")  # auto falls back to the Python op
    broken = tmp_path / "libpartool_ort_ops.so"
    broken.write_text("not a shared library")
    monkeypatch.setenv("PARTOOL_ORT_OPS_LIB", str(broken))
    with pytest.raises(
        UserError, match=r"ONNX Runtime cannot load the custom-op library .*partool plugins build"
    ):
        create_session(exported["vim-t"][1])
    with pytest.raises(UserError, match="unknown scan op 'fast'"):
        create_session(exported["vim-t"][1], scan_op="fast")


def test_cli_path_lists_the_ort_library(ort_ops):
    import json

    import typer

    from partool.cli.plugins_cmd import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["plugins", "path", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ort_ops"] == str(ort_ops)
