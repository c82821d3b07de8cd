"""Official-checkpoint loading: key names written from the official code, safe unpickling, resizing."""

from __future__ import annotations

import argparse
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from partool.errors import UserError
from partool.models import create_model, load_pretrained

pytestmark = pytest.mark.usefixtures("seeded_single_thread")


def official_vim_s_state_dict() -> dict[str, torch.Tensor]:
    """Names and shapes of hustvl/Vim `vim_small_patch16_224_bimambav2_..._midclstok_div2` (ImageNet head)."""
    e, inner, n, rank, w = 384, 768, 16, 24, 4
    sd = {
        "cls_token": (1, 1, e),
        "pos_embed": (1, 197, e),
        "patch_embed.proj.weight": (e, 3, 16, 16),
        "patch_embed.proj.bias": (e,),
        "head.weight": (1000, e),
        "head.bias": (1000,),
        "norm_f.weight": (e,),
    }
    for i in range(24):
        p = f"layers.{i}."
        sd[p + "norm.weight"] = (e,)
        sd[p + "mixer.A_log"] = (inner, n)
        sd[p + "mixer.D"] = (inner,)
        sd[p + "mixer.in_proj.weight"] = (2 * inner, e)
        sd[p + "mixer.out_proj.weight"] = (e, inner)
        sd[p + "mixer.A_b_log"] = (inner, n)
        sd[p + "mixer.D_b"] = (inner,)
        for s in ("", "_b"):
            sd[p + f"mixer.conv1d{s}.weight"] = (inner, 1, w)
            sd[p + f"mixer.conv1d{s}.bias"] = (inner,)
            sd[p + f"mixer.x_proj{s}.weight"] = (rank + 2 * n, inner)
            sd[p + f"mixer.dt_proj{s}.weight"] = (inner, rank)
            sd[p + f"mixer.dt_proj{s}.bias"] = (inner,)
    return {k: torch.randn(shape) for k, shape in sd.items()}


def official_vmamba_v0_state_dict(depths, dims, d_state=16) -> dict[str, torch.Tensor]:
    """Names and shapes of MzeroMiko/VMamba v0 `VSSM` (SS2D, d_conv 3, 4 directions, ImageNet head)."""
    sd = {
        "patch_embed.proj.weight": (dims[0], 3, 4, 4),
        "patch_embed.proj.bias": (dims[0],),
        "patch_embed.norm.weight": (dims[0],),
        "patch_embed.norm.bias": (dims[0],),
        "norm.weight": (dims[-1],),
        "norm.bias": (dims[-1],),
        "head.weight": (1000, dims[-1]),
        "head.bias": (1000,),
    }
    for i, (depth, c) in enumerate(zip(depths, dims, strict=True)):
        inner, rank = 2 * c, -(-c // 16)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            sd[p + "ln_1.weight"] = sd[p + "ln_1.bias"] = (c,)
            a = p + "self_attention."
            sd[a + "in_proj.weight"] = (2 * inner, c)
            sd[a + "conv2d.weight"] = (inner, 1, 3, 3)
            sd[a + "conv2d.bias"] = (inner,)
            sd[a + "x_proj_weight"] = (4, rank + 2 * d_state, inner)
            sd[a + "dt_projs_weight"] = (4, inner, rank)
            sd[a + "dt_projs_bias"] = (4, inner)
            sd[a + "A_logs"] = (4 * inner, d_state)
            sd[a + "Ds"] = (4 * inner,)
            sd[a + "out_norm.weight"] = sd[a + "out_norm.bias"] = (inner,)
            sd[a + "out_proj.weight"] = (c, inner)
        if i < len(depths) - 1:
            sd[f"layers.{i}.downsample.reduction.weight"] = (2 * c, 4 * c)
            sd[f"layers.{i}.downsample.norm.weight"] = sd[f"layers.{i}.downsample.norm.bias"] = (4 * c,)
    return {k: torch.randn(shape) for k, shape in sd.items()}


def test_official_vim_s_checkpoint_loads_at_256x128(tmp_path):
    sd = official_vim_s_state_dict()
    path = tmp_path / "vim_s_midclstok_80p5acc.pth"
    torch.save({"model": sd, "epoch": 299, "args": argparse.Namespace(model="vim_small", lr=5e-4)}, path)
    model = create_model("vim-s", 26, (256, 128))
    missing, unexpected = load_pretrained(model, path)
    assert missing == [] and unexpected == []
    bb = model.backbone
    torch.testing.assert_close(bb.layers[23].mixer.A_b_log, sd["layers.23.mixer.A_b_log"])
    torch.testing.assert_close(bb.layers[0].mixer.conv1d_b.weight, sd["layers.0.mixer.conv1d_b.weight"])
    torch.testing.assert_close(bb.norm_f.weight, sd["norm_f.weight"])
    # 197 -> 129 tokens; the middle cls token (index 98 of 197) lands at index 64 of 129.
    assert bb.pos_embed.shape == (1, 129, 384)
    torch.testing.assert_close(bb.pos_embed[:, 64], sd["pos_embed"][:, 98])


def test_official_vmamba_v0_checkpoint_with_yacs_config_loads(tmp_path, monkeypatch):
    depths, dims = [1, 1, 2, 1], [8, 16, 32, 64]
    sd = official_vmamba_v0_state_dict(depths, dims)
    # Swin/VMamba training checkpoints pickle their yacs CfgNode; fake the class only while saving.
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", config)
    path = tmp_path / "vssmbase_dp06_ckpt_epoch_241.pth"
    torch.save({"model": sd, "config": CfgNode(MODEL=CfgNode(NAME="vssm")), "max_accuracy": 83.2}, path)
    monkeypatch.delitem(sys.modules, "yacs.config")
    monkeypatch.delitem(sys.modules, "yacs")

    model = create_model("vmamba-b", 26, (64, 64), depths=depths, dims=dims)
    missing, unexpected = load_pretrained(model, path)
    assert missing == [] and unexpected == []
    sa = model.backbone.layers[2].blocks[1].self_attention
    torch.testing.assert_close(sa.x_proj_weight, sd["layers.2.blocks.1.self_attention.x_proj_weight"])
    torch.testing.assert_close(
        model.backbone.layers[0].downsample.reduction.weight, sd["layers.0.downsample.reduction.weight"]
    )
    assert "yacs" not in sys.modules


class _RunsCode:
    """Pickles as a call to open(marker, "w"): loading it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_carrying_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 32)}, "payload": _RunsCode(marker)}, path)
    model = create_model("vim-t", 3, (32, 32), depth=1, embed_dim=32)
    with pytest.raises(UserError, match="not a plain weights checkpoint"):
        load_pretrained(model, path)
    assert not marker.exists()


def test_safetensors_prefixed_and_errors(tmp_path):
    small = create_model("vim-t", 3, (32, 32), depth=2, embed_dim=32)
    state = {f"module.{k}": v.contiguous() for k, v in small.backbone.state_dict().items()}
    state["module.head.weight"] = torch.zeros(1000, 32)
    save_file(state, tmp_path / "w.safetensors")
    other = create_model("vim-t", 3, (32, 32), depth=2, embed_dim=32)
    assert load_pretrained(other, tmp_path / "w.safetensors") == ([], [])
    torch.testing.assert_close(other.backbone.layers[1].mixer.D_b, small.backbone.layers[1].mixer.D_b)

    with pytest.raises(UserError, match="does not exist"):
        load_pretrained(other, tmp_path / "missing.pth")
    with pytest.raises(UserError, match="does not fit"):
        load_pretrained(create_model("vim-t", 3, (32, 32), depth=2, embed_dim=64), tmp_path / "w.safetensors")
    vmamba = create_model("vmamba-t", 3, (64, 64), depths=[1, 1, 1, 1], dims=8)
    with pytest.raises(UserError, match="vim checkpoint"):
        load_pretrained(vmamba, tmp_path / "w.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_pretrained(other, tmp_path / "junk.pth")


def test_timm_vit_checkpoint_resizes_pos_embed(tmp_path):
    import timm

    ref = timm.create_model("vit_small_patch16_224", pretrained=False)  # 224x224, with its 1000-class head
    torch.save(ref.state_dict(), tmp_path / "vit_s.pth")
    model = create_model("vit-s", 26, (256, 128))
    missing, unexpected = load_pretrained(model, tmp_path / "vit_s.pth")
    assert missing == [] and unexpected == []
    assert model.backbone.vit.pos_embed.shape == (1, 129, 384)
    torch.testing.assert_close(model.backbone.vit.pos_embed[:, 0], ref.pos_embed[:, 0])  # cls first in ViT
    torch.testing.assert_close(model.backbone.vit.blocks[3].attn.qkv.weight, ref.blocks[3].attn.qkv.weight)
