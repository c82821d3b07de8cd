"""Hybrid Mamba-Transformer backbones: forward/backward, the frozen ViT, a reduction to plain ViT, ONNX, sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partool.export import export_onnx
from partool.models import count_parameters, create_model

IMG = (64, 32)  # 4 x 2 patches + a cls token = 9 tokens
TINY = {"vit_dim": 32, "vit_depth": 2, "vit_heads": 2, "embed_dim": 16, "depth": 2, "drop_path_rate": 0.0}
NAMES = ("pafusion", "nasf", "asf", "mahdft")


def _tiny(name: str, seed: int = 0, **kw: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, 5, img_size=IMG, **{**TINY, **kw})


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_reaches_both_branches(name: str) -> None:
    model = _tiny(name, groups=2) if name == "asf" else _tiny(name)
    model.train()
    logits = model(torch.randn(3, 3, *IMG))
    assert logits.shape == (3, 5)
    logits.square().mean().backward()
    mamba = next(p for n, p in model.named_parameters() if "mixer.in_proj" in n)
    attention = next(p for n, p in model.named_parameters() if "attn.qkv.weight" in n)
    assert mamba.grad is not None and float(mamba.grad.abs().sum()) > 0
    if name == "mahdft":
        assert attention.grad is None  # frozen Transformer
    else:
        assert attention.grad is not None and float(attention.grad.abs().sum()) > 0


def test_mahdft_transformer_is_frozen_and_stays_in_eval_mode() -> None:
    model = _tiny("mahdft").train()
    vit = model.backbone.vit
    assert not vit.training and model.backbone.layers.training
    assert all(not p.requires_grad for p in vit.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone.vit."))


def test_pafusion_without_the_mamba_contribution_is_the_plain_vit() -> None:
    model = _tiny("pafusion").eval()
    backbone = model.backbone
    with torch.no_grad():
        for up in backbone.up_projs:
            up.weight.zero_()
            up.bias.zero_()
        images = torch.randn(2, 3, *IMG)
        torch.testing.assert_close(backbone(images), backbone.vit.forward_features(images))


def test_portable_onnx_export_matches_torch(tmp_path) -> None:
    import onnxruntime as ort

    model = _tiny("pafusion", vit_depth=1, depth=1).eval()
    path = export_onnx(model, tmp_path / "model.onnx", scan="portable")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).standard_normal((2, 3, *IMG)).astype(np.float32)
    (got,) = session.run(None, {"images": images})
    with torch.no_grad():
        want = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_full_size_parameter_counts_are_the_sum_of_their_parts() -> None:
    vit = count_parameters("vit-b")["backbone"]  # ViT-B/16 without classifier
    vim = count_parameters("vim-s")["backbone"]  # Vim-S: patch embed, cls, pos, 24 blocks, norm_f
    vim_embed = 384 * 3 * 16 * 16 + 384 + 384 + 197 * 384  # patch conv, cls token, position embedding
    vit_embed = 768 * 3 * 16 * 16 + 768 + 768 + 197 * 768
    up, down = 384 * 768 + 768, 768 * 384 + 384
    assert count_parameters("pafusion")["backbone"] == vit + vim - 384 + 12 * up + 11 * down
    assert count_parameters("nasf")["backbone"] == vim + vit - vit_embed + up
    assert count_parameters("asf")["backbone"] == vit + vim - vim_embed - 384 + 4 * (up + down)
    pools = 12 * (197 * 49 + 49) + (12 * 49 * 197 + 197)  # 12 block pools + the final pool
    assert count_parameters("mahdft")["backbone"] == vit + vim - vim_embed + pools + down
