"""What several test modules share: the native plugins, built once a session (one CMake build makes the
kernels library and the ONNX Runtime custom op), and the seed and thread count the model tests pin."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest
import torch
from emulation_build import build_tools_missing

from partool.ops import kernel_abi
from partool.plugins import BuildResult, build_plugins


@pytest.fixture(scope="session")
def plugins_build() -> BuildResult | None:
    """`partool plugins build` into the default build dir (incremental), once a session; None where cmake or
    a C++ compiler is missing, so that each user skips with the reason that names what it needed."""
    return None if build_tools_missing() else build_plugins(quiet=True)


@pytest.fixture(scope="session")
def kernels(plugins_build: BuildResult | None) -> ModuleType:
    """The kernels module, with libpartool_kernels built and loaded."""
    if plugins_build is None:
        pytest.skip("cmake or a C++ compiler is missing: cannot build libpartool_kernels")
    import partool.ops.kernels as k

    assert kernel_abi.cpu_available()
    return k


@pytest.fixture
def seeded_single_thread() -> Iterator[None]:
    """Seed 0 and one torch thread (restored after), so small models give the same numbers on any machine."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
