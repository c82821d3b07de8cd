"""The per-shape choice of CUDA scan variant (partool.ops.scan_tuning): which variants are timed, that the
fastest wins and is remembered, what happens under graph capture, and the overrides. The timer is a fake
here (times set by the test); the real library's variant list, and (with a GPU) the tuned scans' results,
are checked against the library."""

from __future__ import annotations

import pytest
import torch
from scan_references import SCAN_VARIANTS, TOL, make_inputs, numpy_scan, rel_err

from partool.errors import UserError
from partool.ops import kernel_abi, scan_tuning
from partool.ops.scan_tuning import AUTO, TIMED_RUNS, WARMUP_RUNS, ScanTuner

EXPLICIT = [2, 3, 4, 6, 7, 8, 9, 10]


class FakeGpu:
    """run(variant) records calls; the timer answers `seconds[variant]` and counts timed runs."""

    def __init__(self, seconds: dict[int, float], failing: tuple[int, ...] = ()) -> None:
        self.seconds, self.failing = seconds, failing
        self.calls: list[int] = []
        self.timed: list[int] = []

    def run(self, variant: int) -> None:
        if variant in self.failing:
            raise RuntimeError("cuda error: too much shared memory")
        self.calls.append(variant)

    def timer(self, run, variant: int, runs: int) -> float:
        for _ in range(runs):
            run(variant)
        self.timed.append(variant)
        return self.seconds[variant]


def make_tuner(capturing: bool = False) -> ScanTuner:
    return ScanTuner(SCAN_VARIANTS, lambda: capturing)


def test_times_every_explicit_variant_once_and_keeps_the_fastest(monkeypatch):
    monkeypatch.delenv(scan_tuning.ENV, raising=False)
    tuner = make_tuner()
    gpu = FakeGpu({v: 1e-3 for v in EXPLICIT} | {9: 2e-4, 4: 3e-4})
    assert tuner.choose(("scan", 0, 64, 768), gpu.run, gpu.timer) == 9
    assert sorted(gpu.timed) == EXPLICIT  # the heuristic variants resolve to these, so are not timed apart
    assert len(gpu.calls) == len(EXPLICIT) * (WARMUP_RUNS + TIMED_RUNS)
    # the same shape again: the winner, no timing
    assert tuner.choose(("scan", 0, 64, 768), gpu.run, gpu.timer) == 9
    assert len(gpu.timed) == len(EXPLICIT)
    # another shape is timed on its own
    other = FakeGpu({v: 1e-3 for v in EXPLICIT} | {2: 1e-5})
    assert tuner.choose(("scan", 0, 1, 768), other.run, other.timer) == 2
    assert tuner.chosen() == {("scan", 0, 64, 768): "rows/states8", ("scan", 0, 1, 768): "chunked/tile4"}


def test_variants_that_fail_are_skipped_and_none_left_means_auto(monkeypatch):
    monkeypatch.delenv(scan_tuning.ENV, raising=False)
    tuner = make_tuner()
    gpu = FakeGpu({v: 1e-3 for v in EXPLICIT} | {10: 1e-6}, failing=(10,))
    assert tuner.choose(("k",), gpu.run, gpu.timer) != 10
    assert 10 not in gpu.timed
    nothing = FakeGpu({}, failing=tuple(EXPLICIT))
    assert tuner.choose(("k2",), nothing.run, nothing.timer) == AUTO


def test_graph_capture_never_times(monkeypatch):
    monkeypatch.delenv(scan_tuning.ENV, raising=False)
    capturing = {"now": False}
    tuner = ScanTuner(SCAN_VARIANTS, lambda: capturing["now"])
    gpu = FakeGpu({v: 1e-3 for v in EXPLICIT} | {7: 1e-4})
    capturing["now"] = True
    assert tuner.choose(("new",), gpu.run, gpu.timer) == AUTO  # unseen shape: the library's default
    assert gpu.calls == [] and tuner.chosen() == {}
    capturing["now"] = False
    assert tuner.choose(("new",), gpu.run, gpu.timer) == 7  # the warm-up forward tunes
    capturing["now"] = True
    calls = len(gpu.calls)
    assert tuner.choose(("new",), gpu.run, gpu.timer) == 7 and len(gpu.calls) == calls


def test_forced_and_environment_variants(monkeypatch):
    monkeypatch.delenv(scan_tuning.ENV, raising=False)
    tuner = make_tuner()
    gpu = FakeGpu({v: 1e-3 for v in EXPLICIT})
    with tuner.forced("rows/states16"):
        assert tuner.choose(("k",), gpu.run, gpu.timer) == 10
        with tuner.forced(None):
            assert tuner.choose(("k",), gpu.run, gpu.timer) in EXPLICIT  # tuned inside
        assert tuner.choose(("k",), gpu.run, gpu.timer) == 10
    monkeypatch.setenv(scan_tuning.ENV, "chunked/tile32")
    assert tuner.choose(("other",), gpu.run, gpu.timer) == 4
    monkeypatch.setenv(scan_tuning.ENV, "auto")
    assert tuner.choose(("other",), gpu.run, gpu.timer) == AUTO
    monkeypatch.setenv(scan_tuning.ENV, "rows/states3")
    with pytest.raises(
        UserError, match=r"unknown CUDA scan variant 'rows/states3'; choose one of auto, chunked"
    ):
        tuner.choose(("other",), gpu.run, gpu.timer)
    with pytest.raises(UserError, match="unknown CUDA scan variant"), tuner.forced("fastest"):
        pass


def test_library_names_its_variants_in_header_order(kernels):
    assert kernel_abi.scan_tuner().names == SCAN_VARIANTS
    with (
        pytest.raises(UserError, match="unknown CUDA scan variant"),
        kernel_abi.use_scan_variant("rows/states32"),
    ):
        pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_tuned_cuda_scans_match_the_reference(kernels, monkeypatch, dtype):
    """Every variant the tuner may pick gives the reference's result, and the tuned call remembers its winner."""
    if not kernel_abi.cuda_available():
        pytest.skip("library built without CUDA")
    monkeypatch.delenv(scan_tuning.ENV, raising=False)
    args = make_inputs(4, 96, 16, 197, 1, dtype, True)
    dev = [x.cuda() if x is not None else None for x in args]
    ref, _ = numpy_scan(*(None if x is None else x.float() for x in args), True, False)
    for name in kernel_abi.scan_tuner().names:
        with kernel_abi.use_scan_variant(name):
            out, _ = kernels.scan(*dev, delta_softplus=True)
        assert rel_err(out.cpu(), ref) <= TOL[dtype], name
    kernel_abi.scan_tuner().clear()
    out, _ = kernels.scan(*dev, delta_softplus=True)
    assert rel_err(out.cpu(), ref) <= TOL[dtype]
    assert len(kernel_abi.scan_tuner().chosen()) == 1
