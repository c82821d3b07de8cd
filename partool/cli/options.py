"""Options several commands share, so their names, defaults, help and parsing read the same everywhere."""

from __future__ import annotations

import re

import typer

from partool.errors import UserError

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

_SIZE = re.compile(r"\s*([0-9]+)\s*[x×]\s*([0-9]+)\s*", re.IGNORECASE)


def parse_size(
    text: str, option: str = "--img-size", form: str = "HEIGHTxWIDTH", example: str = "256x128"
) -> tuple[int, int]:
    """'256x128' (or '256×128') -> (256, 128): two positive whole numbers in the order `form` names them.

    One parser for every command and benchmark that takes a size, so all accept and refuse the same text
    with one message that says what to pass."""
    match = _SIZE.fullmatch(text)
    sides = (int(match[1]), int(match[2])) if match else (0, 0)
    if min(sides) <= 0:
        raise UserError(f"{option} {text!r} is not {form} in positive whole numbers; write it like {example}")
    return sides


_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", re.IGNORECASE)
_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, option: str) -> float:
    """'90s', '10m', '1.5h' or plain seconds ('600') -> seconds, above zero."""
    match = _DURATION.fullmatch(text)
    seconds = float(match[1]) * _SECONDS[match[2].lower()] if match else 0.0
    if seconds <= 0:
        raise UserError(f"{option} {text!r} is not a duration above zero; write it like 90s, 10m or 1h")
    return seconds
