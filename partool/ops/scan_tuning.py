"""Which CUDA scan kernel runs for a shape: the fastest of the library's variants, timed on the GPU in use.

libpartool_kernels has two CUDA scan designs with several tilings each (`partool_scan_cuda_variant_t`):
the sequence-chunked kernel and the state-split row kernel. They compute the same scan; which is fastest
depends on the batch, the sequence length and the GPU (a Jetson Orin's 16 multiprocessors against an
H100's 132). A fixed heuristic could only be tuned on the GPUs at hand, so the first eager call of each
shape times every explicit variant (CUDA events, a few runs each) and later calls of that shape reuse the
winner, as TensorRT does with the plugin's tactics at engine build. A call made while a CUDA graph is
being captured never times: it takes the shape's winner, or the library's default when the shape was not
seen; a warm-up forward before capture (the torch runtime does two) is what tunes.

PARTOOL_SCAN_CUDA_VARIANT=auto|<variant name> (e.g. rows/states16) picks instead of timing, for the whole
process; `partool.ops.kernels.use_scan_variant(name)` does the same for a block of code (benchmarks comparing
variants).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence

import torch

from partool.errors import UserError

ENV = "PARTOOL_SCAN_CUDA_VARIANT"
AUTO = 0
HEURISTIC = ("auto", "chunked", "rows")  # resolve to one of the explicit variants, so never timed apart
WARMUP_RUNS, TIMED_RUNS = 1, 5

# A variant's mean time in seconds over `runs` calls of run(variant) (after the warm-up ones).
Timer = Callable[[Callable[[int], None], int, int], float]


def cuda_event_time(run: Callable[[int], None], variant: int, runs: int) -> float:
    """A `Timer` on the current CUDA stream (the caller's device), with CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(runs):
        run(variant)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / runs


class ScanTuner:
    """The per-shape choice. `names[i]` is variant i's name (the library's list); `capturing` says whether
    the current stream is being captured into a CUDA graph."""

    def __init__(self, names: Sequence[str], capturing: Callable[[], bool]) -> None:
        self.names = list(names)
        self._capturing = capturing
        self._best: dict[tuple, int] = {}
        self._forced: int | None = None

    def variant(self, name: str) -> int:
        """The number of the variant called `name`; UserError naming the choices otherwise."""
        if name not in self.names:
            raise UserError(f"unknown CUDA scan variant {name!r}; choose one of {', '.join(self.names)}")
        return self.names.index(name)

    def candidates(self) -> list[int]:
        return [i for i, name in enumerate(self.names) if name not in HEURISTIC]

    @contextlib.contextmanager
    def forced(self, name: str | None) -> Iterator[None]:
        """Every call in the block runs variant `name` (None: tune as usual)."""
        previous, self._forced = self._forced, None if name is None else self.variant(name)
        try:
            yield
        finally:
            self._forced = previous

    def choose(self, key: tuple, run: Callable[[int], None], timer: Timer) -> int:
        """The variant for a call of shape `key`: forced, the environment's, the shape's earlier winner, or,
        outside graph capture, the fastest by `timer` (variants whose run raises are skipped)."""
        if self._forced is not None:
            return self._forced
        env = os.environ.get(ENV)
        if env:
            return self.variant(env)
        best = self._best.get(key)
        if best is not None or self._capturing():
            return AUTO if best is None else best
        times: dict[int, float] = {}
        for variant in self.candidates():
            try:
                for _ in range(WARMUP_RUNS):
                    run(variant)
                times[variant] = timer(run, variant, TIMED_RUNS)
            except RuntimeError:  # a variant this device cannot launch for the shape
                continue
        self._best[key] = min(times, key=times.__getitem__) if times else AUTO
        return self._best[key]

    def chosen(self) -> dict[tuple, str]:
        """Each tuned shape's winner, by name (for reports)."""
        return {key: self.names[v] for key, v in self._best.items()}

    def clear(self) -> None:
        self._best.clear()
