"""Where the external headers are looked for: the variable alone when it is set, else the newest version in the
per-user cache (numerically: 1.21 is newer than 1.9), else the system folder; and CMake follows the same rule."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from partool.plugins import onnxruntime_include_dir, source_dir, tensorrt_include_dirs


def _headers(root: Path, library: str, versions: list[str], header: str, body: str = "") -> dict[str, Path]:
    out = {}
    for version in versions:
        include = root / "partool" / library / version / "include"
        include.mkdir(parents=True)
        (include / header).write_text(body)
        out[version] = include
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty per-user cache ($XDG_CACHE_HOME) and no header variables."""
    for var in ("ONNXRUNTIME_ROOT", "TENSORRT_INCLUDE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_onnxruntime_headers_newest_cached_version_unless_the_variable_is_set(cache, tmp_path, monkeypatch):
    found = _headers(cache, "onnxruntime", ["1.9.0", "1.21.0", "1.17.1"], "onnxruntime_c_api.h")
    (cache / "partool" / "onnxruntime" / "1.99.0" / "include").mkdir(
        parents=True
    )  # no header: not a candidate
    assert onnxruntime_include_dir() == found["1.21.0"]
    release = tmp_path / "onnxruntime-linux-x64-1.30.0"
    monkeypatch.setenv("ONNXRUNTIME_ROOT", str(release))
    assert onnxruntime_include_dir() is None  # named but empty: never silently another version
    (release / "include").mkdir(parents=True)
    (release / "include" / "onnxruntime_c_api.h").write_text("")
    assert onnxruntime_include_dir() == release / "include"


def test_tensorrt_headers_every_cached_version_newest_first_or_the_variable_alone(
    cache, tmp_path, monkeypatch
):
    found = _headers(cache, "tensorrt", ["10.9", "10.16", "11.1"], "NvInferRuntime.h")
    assert tensorrt_include_dirs() == [found["11.1"], found["10.16"], found["10.9"]]
    monkeypatch.setenv("TENSORRT_INCLUDE_DIR", str(found["10.9"]))
    assert tensorrt_include_dirs() == [found["10.9"]]
    monkeypatch.setenv("TENSORRT_INCLUDE_DIR", str(tmp_path / "nowhere"))
    assert tensorrt_include_dirs() == []


@pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and c++"
)
def test_cmake_picks_the_same_onnxruntime_headers(cache, tmp_path):
    """plugins/CMakeLists.txt, configured with only the cache to go by, enables the custom op against the
    include folder that onnxruntime_include_dir() names."""
    _headers(cache, "onnxruntime", ["1.9.0", "1.21.0"], "onnxruntime_c_api.h", "#define ORT_API_VERSION 21\n")
    configure = subprocess.run(
        ["cmake", "-S", str(source_dir()), "-B", str(tmp_path / "build"), "-DPARTOOL_BUILD_CUDA=OFF",
         "-DPARTOOL_BUILD_TRT_PLUGIN=OFF"],
        capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(cache)},
    )  # fmt: skip
    assert configure.returncode == 0, configure.stderr
    chosen = re.search(r"ONNX Runtime custom op against C API version 21 in (\S+)", configure.stdout)
    assert (
        chosen
        and Path(chosen[1]) == onnxruntime_include_dir() == cache / "partool/onnxruntime/1.21.0/include"
    )
