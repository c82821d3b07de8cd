"""Shared timing and reporting helpers for the benchmark scripts (they measure; they never pass/fail)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from partool.artifacts import atomic_write_bytes


def time_call(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn` in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def machine_facts() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


def write_json(path: str | None, payload: dict[str, object]) -> None:
    """Write the results atomically (partool's writer: a killed run leaves the old file or the new one)."""
    if not path:
        return
    target = Path(path)
    atomic_write_bytes(target, json.dumps(payload, indent=2).encode())
    print(f"wrote {target}")


def watch_library_calls(record: Callable[[str, float], None]) -> None:
    """Route every call into libpartool_kernels (`kernel_abi.launch`, the one way in) through `record(entry,
    seconds)`: the kernel_calls and cpu_time_split benchmarks count and time them this way. On the CPU the
    calls are synchronous, so the seconds are the kernels' own."""
    from partool.ops import kernel_abi

    launch = kernel_abi.launch

    def watched(entry, params, device, backward=False):
        start = time.perf_counter()
        try:
            return launch(entry, params, device, backward)
        finally:
            record(f"partool::{entry}{'_bwd' if backward else ''}", time.perf_counter() - start)

    kernel_abi.launch = watched
