"""Every registered model exports with each lowering it claims (`ModelInfo.exports`, shown by `partool
models`), and ONNX Runtime reproduces PyTorch's logits. Tiny configurations of each design; models whose
exports are tested with both lowerings elsewhere are listed in ELSEWHERE."""

from __future__ import annotations

import inspect

import numpy as np
import onnx
import pytest
import torch

from partool.artifacts import build_meta
from partool.export import export_onnx
from partool.export.onnx_export import count_scan_nodes
from partool.models import create_model, list_models, model_info
from partool.ops import count_scan_flops, set_backend
from partool.runtime.ort_session import create_session

IMG = (64, 32)
_HYBRID = {"vit_dim": 32, "vit_depth": 1, "vit_heads": 2, "embed_dim": 16, "depth": 1, "drop_path_rate": 0.0}
TINY: dict[str, dict[str, object]] = {
    "vim-s": {"embed_dim": 32, "depth": 1},
    "vit-s": {"embed_dim": 32, "depth": 1, "num_heads": 2},
    "vit-b": {"embed_dim": 32, "depth": 1, "num_heads": 2},
    "vmamba-b-text": {"depths": [1, 1, 1, 1], "dims": 16, "text_dim": 16, "text_depth": 1, "fusion_dim": 32},
    "pafusion": _HYBRID,
    "nasf": _HYBRID,
    "asf": {**_HYBRID, "groups": 1},
    "mahdft": _HYBRID,
    "maformer": _HYBRID,
    "adamtf": _HYBRID,
    "kdtm": _HYBRID,
    "makdf": _HYBRID,
}
ELSEWHERE = {  # model -> the test module exporting it with both lowerings
    "vim-t": "test_export.py",
    "vmamba-t": "test_export.py",
    "vmamba-s": "test_export.py (vmamba-t: the same VMamba builder, only the default sizes differ)",
    "vmamba-b": "test_export.py (vmamba-t: the same VMamba builder, only the default sizes differ)",
    "vim-s-text": "test_text_fusion.py",
}
ATTRS = [f"attr{i}" for i in range(5)]


def test_every_registered_model_is_covered() -> None:
    assert set(list_models()) == set(TINY) | set(ELSEWHERE)


# By default one model of each builder that no other module exports with both lowerings; the rest of the zoo
# (the same ViT builder at other sizes, hybrids test_hybrids.py also exports) is CI's sweep step.
REPRESENTATIVE = {"vim-s", "vit-s", "asf", "nasf", "mahdft"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n if n in REPRESENTATIVE else pytest.param(n, marks=pytest.mark.sweep) for n in sorted(TINY)]
)
def test_model_exports_with_each_lowering_and_matches_torch(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    kwargs = dict(TINY[name])
    if "attributes" in inspect.signature(model_info(name).builder).parameters:  # text models
        kwargs["attributes"] = ATTRS
    model = create_model(name, len(ATTRS), img_size=IMG, **kwargs).eval()
    images = torch.randn(2, 3, *IMG)
    set_backend("chunked")  # the selective_scan path (the kernels' fused Vim path bypasses the counter)
    try:
        with torch.no_grad(), count_scan_flops() as scans:
            want = model(images).numpy()
    finally:
        set_backend(None)
    meta = build_meta(model, ATTRS, "synth")
    for scan in model_info(name).exports:
        path = export_onnx(model, tmp_path / f"{scan}.onnx", scan=scan, meta=meta)
        if scan == "plugin":  # one partool::SelectiveScan node per scan the PyTorch forward runs
            assert count_scan_nodes(onnx.load(str(path))) == len(scans)
        got = create_session(path).run(None, {"images": images.numpy()})[0]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4, err_msg=f"{name} ({scan})")
