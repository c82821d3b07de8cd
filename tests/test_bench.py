"""`partool bench`: every backend timed over batch sizes, the JSON document, the table and the plot."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from partool.artifacts import build_meta
from partool.bench import run_bench
from partool.cli.bench_cmd import parse_batches, register
from partool.errors import UserError
from partool.export import export_onnx
from partool.models import create_model
from partool.models.run_folder import save_run

IMG = (32, 16)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("vim-t", 2, img_size=IMG, depth=1).eval()
    meta = build_meta(model, ["a", "b"], "synth:16")
    run = save_run(tmp_path_factory.mktemp("run"), model, meta)
    onnx_path = export_onnx(model, run / "onnx-portable" / "model.onnx", scan="portable", meta=meta)
    return run, onnx_path


def test_bench_cli_writes_json_plot_and_table(models, tmp_path):
    run, onnx_path = models
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "bench" / "result.json"
    args = ["bench", str(run), str(onnx_path), "--batch", "1,3", "--warmup", "0", "--runs", "2", "--threads", "1",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "onnxruntime portable fp32" in result.output and "torch" in result.output
    report = json.loads(out.read_text())
    assert report["batch_sizes"] == [1, 3] and report["runs"] == 2 and report["threads"] == 1
    assert [r["label"] for r in report["results"]] == ["vim-t torch fp32", "vim-t onnxruntime portable fp32"]
    for entry in report["results"]:
        assert [row["batch"] for row in entry["rows"]] == [1, 3]
        for row in entry["rows"]:
            assert row["p90_ms"] >= row["latency_ms"] > 0
            assert row["throughput"] == pytest.approx(row["batch"] / (row["latency_ms"] / 1e3))
    png = out.with_suffix(".png")
    assert report["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_bad_input(models):
    run, _ = models
    for text in ("1,x", "0,4", ""):
        with pytest.raises(UserError):
            parse_batches(text)
    assert parse_batches("1, 8,32") == [1, 8, 32]
    with pytest.raises(UserError, match="--runs"):
        run_bench([run], [1], warmup=0, runs=0)
    with pytest.raises(UserError, match="does not exist"):
        run_bench([run / "missing.onnx"], [1])
