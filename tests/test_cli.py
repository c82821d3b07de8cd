"""The console script itself: version, doctor, models, and the one-line exit-2 error policy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import partool


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "partool", *args], capture_output=True, text=True, timeout=300
    )


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"partool {partool.__version__}"


def test_doctor_json_reports_backends_and_tools():
    result = run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["torch"] and info["scan_backends"]["reference"] is True
    assert info["scan_auto_cpu"] in info["scan_backends"]
    assert {
        "nvcc",
        "cmake",
        "onnxruntime_providers",
        "kernels_library",
        "tensorrt",
        "onnxruntime_headers",
    } <= set(info)
    if info["openmp_runtimes"] is not None and info["scan_backends"].get("cpu"):
        assert len(info["openmp_runtimes"]) == 1  # the kernels share PyTorch's OpenMP runtime


@pytest.mark.slow
def test_models_json_lists_the_zoo_with_parameter_counts():
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"vim-t", "vim-s", "vmamba-t", "vmamba-s", "vmamba-b", "vit-s", "vit-b"} <= set(rows)
    # published sizes: Vim-S 25.8 M with its 1000-class ImageNet head (384·1000 + 1000 of it); VMamba-B 75-76 M
    assert abs(rows["vim-s"]["params"]["backbone"] + 385_000 - 25.8e6) / 25.8e6 < 0.01
    assert 75e6 <= rows["vmamba-b"]["params"]["backbone"] <= 76e6
    assert rows["vim-s"]["input_size"] == [224, 224]
    assert all(r["exports"] == ["plugin", "portable"] for r in rows.values())
    # the checkpoints each model starts from (`--pretrained ROLE=FILE`) and its recipe, as the authors' scripts name them
    assert rows["vim-s"]["checkpoints"] == {"vim": "vim_s_midclstok_ft_81p6acc.pth"}
    assert rows["vmamba-b"]["checkpoints"] == {"vmamba": "vssmbase_dp06_ckpt_epoch_241.pth"}
    assert rows["asf"]["checkpoints"] == {
        "vim": "vim_s_midclstok_ft_81p6acc.pth",
        "vit": "jx_vit_base_p16_224-80ecf9dd.pth",
    }
    assert "vit-b PAR run" in rows["kdtm"]["checkpoints"]["vit"]
    assert rows["kdtm"]["recipe"] == "hybrid" and rows["vim-s"]["recipe"] == "vim"
    # published FLOPs (multiply-adds) at 224x224: timm/DeiT ViT-S/16 4.6 G, ViT-B/16 17.6 G (+ our PAR head)
    assert rows["vit-s"]["gflops"]["total"] == pytest.approx(4.6, abs=0.1)
    assert rows["vit-b"]["gflops"]["total"] == pytest.approx(17.6, abs=0.1)
    # Vim-S: 24 layers x 2 directions, each scan 9·l·d·n + l·d for D and for z (l = 197, d = 768, n = 16)
    scans = 24 * 2 * (9 * 197 * 768 * 16 + 2 * 197 * 768)
    assert rows["vim-s"]["gflops"]["scan"] == pytest.approx(scans / 1e9, rel=1e-9)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    result = run_cli("eval", str(tmp_path / "missing-run"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing-run" in lines[0] and "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "eval", str(tmp_path / "missing-run"))
    assert result.returncode == 2
    assert "Traceback" in result.stderr
