"""`--format engine` without TensorRT: exit 2 with the exact trtexec command, build_engine.sh, engine metadata
that the runtime's check accepts, and the export profiles."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from partool.artifacts import build_meta
from partool.cli.export_cmd import build_plan, register
from partool.errors import UserError
from partool.export.profiles import load_profile, shipped_profiles, validate
from partool.export.tensorrt_build import BatchProfile, EngineSpec, engine_metadata, trtexec_command
from partool.models import create_model
from partool.models.run_folder import save_run
from partool.runtime.tensorrt_backend import check_engine_meta

IMG = (64, 32)
PLUGIN = "/opt/partool/lib/libpartool_trt_plugins.so"


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _spec(tmp_path: Path, precision: str = "fp16", plugin: str | None = PLUGIN) -> EngineSpec:
    return EngineSpec(
        onnx=tmp_path / "model.onnx",
        engine=tmp_path / "model.engine",
        input_name="images",
        image_shape=(3, *IMG),
        precision=precision,
        batch=BatchProfile(2, 4, 8),
        plugin=Path(plugin) if plugin else None,
        timing_cache=tmp_path / "timing.cache",
    )


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    return app


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("vim-t", 3, img_size=IMG, depth=1).eval()
    return save_run(tmp_path_factory.mktemp("run"), model, build_meta(model, ["a", "b", "c"], "synth:16"))


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed: the engine is built instead")
def test_engine_without_tensorrt_exits_2_with_the_trtexec_command(run, tmp_path):
    out = tmp_path / "engine"
    args = ["export", str(run), "--format", "engine", "--fp16", "--min-batch", "2", "--opt-batch", "4",
            "--max-batch", "8", "--plugin", PLUGIN, "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(_app(), args)
    assert isinstance(result.exception, UserError) and result.exception.exit_code == 2
    message = str(result.exception)
    command = shlex.split(message.split("with: ", 1)[1].split("  (", 1)[0])
    assert command == [
        "trtexec",
        f"--onnx={out.absolute()}/model.onnx",
        f"--saveEngine={out.absolute()}/model.engine",
        "--minShapes=images:2x3x64x32",
        "--optShapes=images:4x3x64x32",
        "--maxShapes=images:8x3x64x32",
        "--fp16",
        f"--dynamicPlugins={PLUGIN}",
        f"--setPluginsToSerialize={PLUGIN}",
        f"--timingCacheFile={out.absolute()}/timing.cache",
    ]
    assert (out / "model.onnx").is_file() and (out / "partool.json").is_file()
    # build_engine.sh runs the same command from its own folder: run it with a stand-in trtexec
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "trtexec").write_text('#!/bin/sh\nprintf "%s\\n" "$PWD" "$@" > "$ARGS_FILE"\n')
    (fake / "trtexec").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "ARGS_FILE": str(tmp_path / "args")}
    subprocess.run([str(out / "build_engine.sh")], check=True, env=env, cwd=tmp_path)
    lines = (tmp_path / "args").read_text().splitlines()
    assert Path(lines[0]).resolve() == out.resolve()
    assert lines[1:] == [
        "--onnx=model.onnx",
        "--saveEngine=model.engine",
        *command[3:9],
        "--timingCacheFile=timing.cache",
    ]
    env["PARTOOL_TRT_PLUGIN_LIB"] = "/target/libpartool_trt_plugins.so"
    subprocess.run([str(out / "build_engine.sh")], check=True, env=env, cwd=tmp_path)
    assert "--dynamicPlugins=/target/libpartool_trt_plugins.so" in (tmp_path / "args").read_text()


def test_trtexec_flags_follow_precision_and_lowering(tmp_path):
    assert "--int8" in trtexec_command(_spec(tmp_path, "int8")) and "--fp16" in trtexec_command(
        _spec(tmp_path, "int8")
    )
    fp32 = trtexec_command(_spec(tmp_path, "fp32", plugin=None))
    assert not any(
        a.startswith(("--fp16", "--int8", "--dynamicPlugins", "--setPluginsToSerialize")) for a in fp32
    )
    with pytest.raises(UserError, match="precision"):
        trtexec_command(_spec(tmp_path, "int4"))
    with pytest.raises(UserError, match="min <= opt <= max"):
        BatchProfile(4, 2, 8)


def test_engine_metadata_is_what_the_runtime_checks(tmp_path):
    meta = engine_metadata("10.3.0.26", (8, 7), _spec(tmp_path), builder="tensorrt-python")
    assert meta["precision"] == "fp16" and meta["profile"] == {"min": 2, "opt": 4, "max": 8}
    check_engine_meta(meta, "10.3.0.30", (8, 7), "model.engine")  # same release and GPU: accepted
    with pytest.raises(UserError, match=re.escape("compute capability 8.7")):
        check_engine_meta(meta, "10.3.0.26", (9, 0), "model.engine")
    with pytest.raises(UserError, match=re.escape("TensorRT 10.3.0.26")):
        check_engine_meta(meta, "10.7.0", (8, 7), "model.engine")


def test_shipped_profiles_parse_and_validate():
    names = shipped_profiles()
    expected = {"jetson-orin-nano-int8", "jetson-agx-orin-fp16", "desktop-fp16", "desktop-int8"}
    assert expected <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.get("precision.mode") == name.rsplit("-", 1)[1]
        assert profile.get("format") == "engine" and profile.get("onnx.scan") == "plugin"
        low, opt, high = (profile.get(f"tensorrt.{k}_batch") for k in ("min", "opt", "max"))
        assert 1 <= low <= opt <= high


def test_profile_errors_name_the_key(tmp_path):
    with pytest.raises(UserError, match="unknown key 'max_bacth'"):
        validate({"tensorrt": {"max_bacth": 4}}, "p.toml")
    with pytest.raises(UserError, match=re.escape("'precision.mode' is 'int4'")):
        validate({"precision": {"mode": "int4"}}, "p.toml")
    with pytest.raises(UserError, match="must be a int"):
        validate({"tensorrt": {"max_batch": "8"}}, "p.toml")
    with pytest.raises(UserError, match="min_batch <= opt_batch <= max_batch"):
        validate({"tensorrt": {"min_batch": 8, "opt_batch": 4, "max_batch": 16}}, "p.toml")
    with pytest.raises(UserError, match="no shipped profile"):
        load_profile("jetson-nano-int3")
    path = tmp_path / "mine.toml"
    path.write_text('format = "onnx"\n[onnx]\nscan = "portable"\n')
    assert load_profile(str(path)).values == {"format": "onnx", "onnx.scan": "portable"}


def test_command_line_wins_over_the_profile():
    kw = dict(scan=None, fp16=False, int8=False, fmt=None, opset=None, calib=None, calib_count=None,
              eval_spec=None, min_batch=None, opt_batch=None, max_batch=None, plugin=None,
              triton_platform=None, triton_name=None)  # fmt: skip
    plan = build_plan(profile="jetson-orin-nano-int8", **kw)
    assert (plan.format, plan.scan, plan.precision, plan.calib_count) == ("engine", "plugin", "int8", 256)
    assert (plan.batch.min, plan.batch.opt, plan.batch.max, plan.workspace_mib) == (1, 4, 16, 1024)
    plan = build_plan(
        profile="jetson-orin-nano-int8", **{**kw, "max_batch": 8, "fp16": True, "scan": "portable"}
    )
    assert (plan.batch.max, plan.precision, plan.scan) == (8, "fp16", "portable")
    assert build_plan(profile=None, **kw).precision == "fp32"
