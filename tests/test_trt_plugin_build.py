"""The TensorRT SelectiveScan plugin: its TensorRT-free logic (always, with g++) and, when TensorRT headers are
found (TENSORRT_INCLUDE_DIR, else every ~/.cache/partool/tensorrt/<version>/include), the CMake build of both plugin libraries,
their exported/undefined symbols, and a driver program that exercises the creator and plugin through
TensorRT's interfaces. TensorRT itself is never needed: the plugin compiles against its public headers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from emulation_build import build_emulation

from partool.plugins import tensorrt_include_dirs

pytestmark = pytest.mark.slow  # builds the TensorRT plugin with CMake

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
TRT_DIR = PLUGINS / "tensorrt"


def _cuda_include_dir() -> Path | None:
    """Where cuda_runtime_api.h lives (TensorRT's headers include it)."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(nvcc).resolve().parents[1]))
    roots.append("/usr/local/cuda")
    for root in filter(None, roots):
        if (Path(root) / "include" / "cuda_runtime_api.h").is_file():
            return Path(root) / "include"
    return None


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_scan_plugin_logic(tmp_path: Path) -> None:
    """Attribute parsing, the input-presence rule, shape checks and the kernel parameter block."""
    exe = tmp_path / "logic_test"
    build = _run(
        [
            "g++",
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{TRT_DIR}",
            f"-I{PLUGINS / 'kernels' / 'include'}",
            str(TRT_DIR / "tests" / "scan_plugin_logic_test.cpp"),
            "-o",
            str(exe),
        ]
    )
    assert build.returncode == 0, build.stderr
    run = _run([str(exe)])
    assert run.returncode == 0, run.stdout
    assert "0 failure(s)" in run.stdout


def _undefined_symbols(lib: Path) -> list[str]:
    out = _run(["nm", "-D", "--undefined-only", str(lib)])
    assert out.returncode == 0, out.stderr
    # Versioned symbols (name@GLIBC_2.x, @CXXABI_..., @GCC_...) come from the C/C++ runtimes; weak ones may stay unset.
    return [
        line.split()[-1]
        for line in out.stdout.splitlines()
        if line.split() and line.split()[-2] == "U" and "@" not in line.split()[-1]
    ]


def _defined_symbols(lib: Path) -> set[str]:
    out = _run(["nm", "-D", "--defined-only", str(lib)])
    assert out.returncode == 0, out.stderr
    return {line.split()[-1] for line in out.stdout.splitlines() if line.split()}


@pytest.fixture(
    scope="module", params=tensorrt_include_dirs() or [None], ids=lambda d: d.parent.name if d else "none"
)
def trt_build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Build plugins/ with the plugin enabled against one header folder; returns (include dir, build dir)."""
    include = request.param
    if include is None:
        pytest.skip(
            "no TensorRT headers: set TENSORRT_INCLUDE_DIR to TensorRT's include/ (or unpack it as "
            "~/.cache/partool/tensorrt/<version>/include)"
        )
    for tool in ("cmake", "nm", "nvcc", "g++"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    build = tmp_path_factory.mktemp(f"trt-{include.parent.name}")
    configure = _run(
        [
            "cmake",
            "-S",
            str(PLUGINS),
            "-B",
            str(build),
            f"-DTENSORRT_INCLUDE_DIR={include}",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DCMAKE_CUDA_ARCHITECTURES=80",  # one architecture keeps the kernels' build short in tests
        ]
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    jobs = str(min(2, os.cpu_count() or 1))
    made = _run(
        [
            "cmake",
            "--build",
            str(build),
            "-j",
            jobs,
            "--target",
            "partool_trt_plugins",
            "partool_trt_plugins_static",
        ]
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return include, build


def _find_lib(build: Path, name: str) -> Path:
    found = sorted(build.rglob(f"lib{name}.so"))
    assert found, f"lib{name}.so not built under {build}"
    return found[0]


def test_plugin_library_symbols(trt_build: tuple[Path, Path]) -> None:
    """The loadLibrary variant exports TensorRT's entry points; neither variant needs a libnvinfer symbol."""
    _, build = trt_build
    dynamic = _find_lib(build, "partool_trt_plugins")
    static = _find_lib(build, "partool_trt_plugins_static")
    assert {"getCreators", "setLoggerFinder"} <= _defined_symbols(dynamic)
    assert "getCreators" not in _defined_symbols(static)  # loadLibrary would register it a second time
    for lib in (dynamic, static):
        undefined = _undefined_symbols(lib)
        assert undefined, "expected the kernel library's entry points to be imported"
        assert all(name.startswith("partool_") for name in undefined), undefined
        data = lib.read_bytes()
        for text in (b"SelectiveScan\0", b"partool\0", b"delta_softplus\0", b"has_delta_bias\0"):
            assert text in data, text
    needed = _run(["readelf", "-d", str(dynamic)]).stdout
    assert re.search(r"NEEDED.*libpartool_kernels\.so", needed), needed
    assert "libnvinfer" not in needed


def _api_test_program(include: Path, out: Path) -> Path:
    """plugin_api_test.cpp compiled against the TensorRT headers in `include` (skips without the CUDA headers)."""
    cuda_include = _cuda_include_dir()
    if cuda_include is None:
        pytest.skip("no cuda_runtime_api.h (TensorRT's headers include it)")
    exe = out / "plugin_api_test"
    compiled = _run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-isystem", str(include), "-isystem",
                     str(cuda_include), str(TRT_DIR / "tests" / "plugin_api_test.cpp"), "-ldl", "-o", str(exe)])  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    return exe


def test_plugin_through_tensorrt_interfaces(trt_build: tuple[Path, Path], tmp_path: Path) -> None:
    """Creator and plugin driven through the IPluginV3 interfaces as TensorRT's builder and runtime call them."""
    include, build = trt_build
    run = _run([str(_api_test_program(include, tmp_path)), str(_find_lib(build, "partool_trt_plugins"))])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 failure(s)" in run.stdout
    # Refusals are explained in the log, naming the input and both shapes.
    assert "input C has shape (0, 2, 4, 6), expected B's shape (0, 2, 4, 5)" in run.stderr


def test_plugin_enqueue_under_every_tactic(trt_build: tuple[Path, Path], tmp_path: Path) -> None:
    """enqueue computing for real: the CUDA kernels on the CPU emulator stand in for the GPU (the emulation
    library, preloaded, defines the same entry points and takes host pointers); under each tactic the output in
    float32 and float16 matches a double-precision scan, and each tactic launches its own kernel configuration."""
    include, build = trt_build
    exe, emulated = _api_test_program(include, tmp_path), build_emulation()
    run = _run(
        [str(exe), str(_find_lib(build, "partool_trt_plugins"))],
        env=os.environ | {"LD_PRELOAD": str(emulated)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for dtype in ("float32", "float16"):
        assert f"enqueue on the emulated kernels: {dtype}, 8 tactics" in run.stdout, run.stdout
    assert "0 failure(s)" in run.stdout
