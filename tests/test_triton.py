"""`--format triton`: repository layout, config.pbtxt read back, the plugin-library rules."""

from __future__ import annotations

import json
import re
from typing import Any

import onnx
import pytest
import torch
import typer
from typer.testing import CliRunner

from partool.artifacts import build_meta
from partool.cli.export_cmd import register
from partool.errors import UserError
from partool.export import export_onnx
from partool.export.triton import write_repository
from partool.models import create_model
from partool.models.run_folder import save_run

IMG = (64, 32)
ATTRS = ["a", "b", "c"]


def parse_pbtxt(text: str) -> dict[str, Any]:
    """A small reader for protobuf text format: messages, [lists], scalars."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,]+', text)
    pos = 0

    def item() -> Any:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            values = []
            while tokens[pos] != "]":
                if tokens[pos] == ",":
                    pos += 1
                    continue
                values.append(item())
            pos += 1
            return values
        if tok.startswith('"'):
            return json.loads(tok)
        return int(tok) if tok.lstrip("-").isdigit() else tok

    def message(end: str | None) -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1 + (tokens[pos + 1] == ":")
            value = item()
            if key in out:
                raise ValueError(f"key {key!r} repeats; config_pbtxt writes every field once")
            out[key] = value
        pos += 1
        return out

    return message(None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("vim-t", len(ATTRS), img_size=IMG, depth=1).eval()
    meta = build_meta(model, ATTRS, "synth:16")
    out = {"run": save_run(tmp_path_factory.mktemp("run"), model, meta)}
    for scan in ("plugin", "portable"):
        out[scan] = export_onnx(model, tmp_path_factory.mktemp(scan) / "model.onnx", scan=scan, meta=meta)
    return out


def _meta(path) -> dict[str, Any]:
    return json.loads((path.parent / "partool.json").read_text())


@pytest.mark.slow
def test_onnxruntime_repository_layout_and_config(exported, tmp_path):
    src = exported["portable"]
    folder = write_repository(tmp_path, "vim t/par", src, _meta(src), "onnxruntime", 16, [4, 8, 32], 500, 2)
    assert folder == tmp_path / "vim_t_par"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "README.md", "vim_t_par/1/model.onnx", "vim_t_par/config.pbtxt", "vim_t_par/labels.txt",
        "vim_t_par/partool.json",
    ]  # fmt: skip
    assert (folder / "1" / "model.onnx").read_bytes() == src.read_bytes()
    assert (folder / "labels.txt").read_text().splitlines() == ATTRS
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    assert config == {
        "name": "vim_t_par",
        "platform": "onnxruntime_onnx",
        "max_batch_size": 16,
        "input": [{"name": "images", "data_type": "TYPE_FP32", "dims": [3, 64, 32]}],
        "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [3], "label_filename": "labels.txt"}],
        "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 500},  # 32 > max
        "instance_group": [{"count": 2, "kind": "KIND_GPU"}],
    }
    assert json.loads((folder / "partool.json").read_text())["triton"]["platform"] == "onnxruntime_onnx"


def test_plugin_graph_on_onnxruntime_needs_the_custom_op_library(exported, tmp_path):
    src = exported["plugin"]
    with pytest.raises(UserError, match="custom-op library"):
        write_repository(tmp_path, "m", src, _meta(src), "onnxruntime", 8, [4])
    assert not (tmp_path / "m" / "config.pbtxt").exists()
    lib = "/opt/partool/libpartool_ort_ops.so"
    folder = write_repository(tmp_path, "m", src, _meta(src), "onnxruntime", 8, [4], op_library=lib)
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    assert config["model_operations"] == {"op_library_filename": lib}
    proto = onnx.load(str(folder / "1" / "model.onnx"))
    assert any(n.op_type == "SelectiveScan" for n in proto.graph.node)


@pytest.mark.slow
def test_tensorrt_repository_without_tensorrt_writes_config_and_build_script(exported, tmp_path):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    repo = tmp_path / "repo"
    args = ["export", str(exported["run"]), "--format", "triton", "--triton-platform", "tensorrt", "--fp16",
            "--max-batch", "8", "--triton-name", "par", "--out", str(repo), "--plugin", "/x/libpartool_trt_plugins.so"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert isinstance(result.exception, UserError) and "trtexec" in str(result.exception)
    config = parse_pbtxt((repo / "par" / "config.pbtxt").read_text())
    assert config["platform"] == "tensorrt_plan" and config["max_batch_size"] == 8
    assert "model_operations" not in config
    script = (repo / "par" / "engine-build" / "build_engine.sh").read_text()
    assert "--saveEngine=../1/model.plan" in script and "--maxShapes=images:8x3x64x32" in script
    readme = (repo / "README.md").read_text()
    assert "LD_PRELOAD=" in readme and "libpartool_trt_plugins_static.so" in readme
    bad = CliRunner().invoke(app, [*args[:-2], "--min-batch", "2"])
    assert isinstance(bad.exception, UserError) and "--min-batch 1" in str(bad.exception)
