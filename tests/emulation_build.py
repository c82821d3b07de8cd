"""Native builds for the tests: whether this machine has the tools (cmake and a C++ compiler; conftest's
plugin build asks here too), and libpartool_kernels_cudaemu (the CUDA kernels on the CPU emulator,
plugins/kernels/emulation) for the tests that run CUDA code paths without a GPU, skipping the calling test
where the tools are missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from partool.plugins import source_dir

BUILD = source_dir().parent / "build" / "cudaemu"
LIBRARY = BUILD / "lib" / "libpartool_kernels_cudaemu.so"
CHECK_PROGRAM = BUILD / "lib" / "partool_kernels_check_cudaemu"


def build_tools_missing() -> bool:
    """cmake or a C++ compiler is missing, so no native library can be built here."""
    return shutil.which("cmake") is None or not any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def build_emulation() -> Path:
    """The emulation library and its check program, built (incrementally) into build/cudaemu with CMake."""
    if build_tools_missing():
        pytest.skip("cmake or a C++ compiler is missing")
    configure = ["cmake", "-S", str(source_dir()), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release",
                 "-DPARTOOL_BUILD_CUDA=OFF", "-DPARTOOL_BUILD_TRT_PLUGIN=OFF", "-DPARTOOL_BUILD_CUDA_EMULATION=ON"]  # fmt: skip
    done = subprocess.run(configure, capture_output=True, text=True)
    if done.returncode != 0:
        if "needs the CUDA headers" in done.stderr:
            pytest.skip("no CUDA headers (cuda_fp16.h) on this machine")
        raise AssertionError(done.stdout + done.stderr)
    subprocess.run(["cmake", "--build", str(BUILD), "--target", "partool_kernels_cudaemu", "partool_kernels_check_cudaemu",
                    "-j2"], check=True, capture_output=True)  # fmt: skip
    return LIBRARY
