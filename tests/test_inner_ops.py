"""The ops that run a mixer's whole inner path (`partool.ops.mamba_inner`, `cross_scan`) and Vim's add +
RMSNorm: each implementation counts the scans it runs, and the PyTorch add + RMSNorm is the kernel's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partool.models import create_model
from partool.ops import count_scan_flops, set_backend
from partool.ops.rms_norm import add_rms_norm
from partool.ops.selective_scan import scan_flops


@pytest.mark.parametrize(
    ("name", "kwargs", "scans"),
    [("vim-t", {"depth": 2}, 4), ("vmamba-t", {"depths": [1, 1, 1, 1], "dims": 16}, 8)],
)
def test_kernel_and_reference_implementations_count_the_same_scans(kernels, name, kwargs, scans):
    """The kernel implementations run scans without `selective_scan`; `count_scan_flops` still sees each
    one, with the FLOPs the reference implementation's calls report."""
    model = create_model(name, 5, img_size=(64, 32), **kwargs).eval()
    images = torch.randn(2, 3, 64, 32)
    counts = {}
    try:
        for backend in ("reference", "cpu"):
            set_backend(backend)
            with torch.no_grad(), count_scan_flops() as counter:
                model(images)
            counts[backend] = counter
    finally:
        set_backend(None)
    assert len(counts["reference"]) == scans
    assert sorted(counts["cpu"]) == sorted(counts["reference"])


def test_scan_flops_is_mamba_ssms_formula():
    # 9·b·l·d·n for the recurrence, plus b·d·l for D and for the z gate
    assert scan_flops(2, 768, 16, 197, True, True) == 9 * 2 * 197 * 768 * 16 + 2 * 2 * 768 * 197
    assert scan_flops(1, 8, 4, 5, False, False) == 9 * 5 * 8 * 4


@pytest.mark.parametrize("with_residual", [False, True])
def test_add_rms_norm_pytorch_and_kernel_match_the_formula(kernels, with_residual):
    """r = residual + x, out = r / sqrt(mean_d(r²) + eps) · w over the channel axis of (b, d, l), written
    in numpy here; the PyTorch implementation (training, no kernel backend) and the kernel agree with it."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 6, 5)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    res = rng.standard_normal((2, 6, 5)).astype(np.float32) if with_residual else None
    r = x + res if with_residual else x
    want = r / np.sqrt((r**2).mean(axis=1, keepdims=True) + 0.25) * w[:, None]
    args = (torch.from_numpy(x), None if res is None else torch.from_numpy(res), torch.from_numpy(w), 0.25)
    try:
        for backend in ("chunked", "cpu"):
            set_backend(backend)
            out, r_out = add_rms_norm(*args)
            np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(r_out.numpy(), r, rtol=1e-6)
            assert add_rms_norm(*args, return_residual=False)[1] is None
    finally:
        set_backend(None)
