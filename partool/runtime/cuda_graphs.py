"""Replay a model's forward as CUDA graphs, one graph per batch size it is asked for, rounded up.

Why: a Vim-S forward on the kernel backend is about 180 small kernels. Launched one by one from Python,
their launch overhead, not their work, sets batch-1 latency; a captured graph replays all of them with one
launch. A video pipeline asks for a different batch each frame (the people in view), so a batch is padded
up to the next power of two (capped at the backend's max_batch): at most log2(max_batch) + 1 graphs, each
captured the first time its size is needed, all sharing one memory pool. Rows are independent images, so
the padding rows (zeros, or the previous call's images) never change the rows returned.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def graph_batch(rows: int, max_batch: int) -> int:
    """The captured batch size that serves `rows` images: the next power of two, capped at `max_batch`
    (a call over `max_batch` gets a graph of its own size)."""
    if rows < 1:
        raise ValueError(f"a graph needs at least one row, got {rows}")
    power = 1 << (rows - 1).bit_length()
    return min(power, max(max_batch, rows))


class GraphedForward:
    """`model(x)` for (n, *sample_shape) inputs on one CUDA device, replayed from captured graphs.

    Call it under `torch.inference_mode()`. The result is a new tensor (the graph's static output is
    copied), so it stays valid after the next call.
    """

    def __init__(
        self, model: nn.Module, sample_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, max_batch: int
    ) -> None:  # fmt: skip
        self.model = model
        self.sample_shape = tuple(sample_shape)
        self.dtype = dtype
        self.device = device
        self.max_batch = max_batch
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}
        self._pool: tuple[int, int] | None = None

    @property
    def captured(self) -> list[int]:
        """Batch sizes captured so far."""
        return sorted(self._graphs)

    def __call__(self, x: Tensor) -> Tensor:
        rows = x.shape[0]
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"input has shape {tuple(x.shape)}; the graphs take (n, {self.sample_shape})")
        size = graph_batch(rows, self.max_batch)
        graph, static_in, static_out = self._graphs.get(size) or self._capture(size)
        static_in[:rows].copy_(x)
        graph.replay()
        return static_out[:rows].clone()

    def _capture(self, size: int) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor]:
        """Warm up on a side stream (lazy initialisation, cached kernel constants, cuBLAS workspaces must not
        happen inside the capture), then capture one forward of `size` rows into the shared pool."""
        static_in = torch.zeros((size, *self.sample_shape), dtype=self.dtype, device=self.device)
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(2):
                self.model(static_in)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.model(static_in)
        self._pool = graph.pool()
        self._graphs[size] = (graph, static_in, static_out)
        return self._graphs[size]
