"""Options several commands share, so their names, defaults and help read the same everywhere."""

from __future__ import annotations

import typer

PRECISION_OPTION = typer.Option(
    "auto",
    "--precision",
    help="Run folders (PyTorch): auto (fp16 on CUDA, fp32 on the CPU), fp32, fp16 or bf16. "
    "Exported models run at the precision `partool export` gave them.",
)
CUDA_GRAPHS_OPTION = typer.Option(
    True,
    "--cuda-graphs/--no-cuda-graphs",
    help="Run folders on CUDA: replay the forward from CUDA graphs (one per batch size, captured on first use); "
    "--no-cuda-graphs launches its kernels one by one.",
)
