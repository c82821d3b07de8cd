"""FLOPs of a registered model at a given input size, counted without weights or data (meta device).

Convention (the one the Vim, VMamba and MambaPAR papers report, via fvcore): one multiply-add counts as
one FLOP for matrix products, convolutions and attention (PyTorch's FlopCounterMode counts it as two, so
its total is halved), and each selective scan adds mamba_ssm's estimate 9·b·l·d·n (+ b·d·l for D and
z). Elementwise ops, norms and activations are not counted. timm's ViT-S/16 comes out at 4.6 G at
224×224, its published figure.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from partool.models.registry import create_model
from partool.ops.selective_scan import count_scan_flops


def count_flops(
    name: str, num_attrs: int = 26, img_size: tuple[int, int] | None = None, **kw: Any
) -> dict[str, float]:
    """GFLOPs of one image: {matmul (products, convs, attention), scan, total}."""
    with torch.device("meta"):
        model = create_model(name, num_attrs, img_size, **kw).eval()
        images = torch.empty(1, 3, *model.img_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter, count_scan_flops() as scans:
        model(images)
    matmul = counter.get_total_flops() / 2 / 1e9
    scan = sum(scans) / 1e9
    return {"matmul": matmul, "scan": scan, "total": matmul + scan}
