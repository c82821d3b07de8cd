"""The models run what the authors' code runs (Event-AHU/OpenPAR, MambaPAR_Empirical_Study): blocks counted
with forward hooks, drop-path rates from torch.linspace, outputs from formulas written here."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from partool.models import count_parameters, create_model, load_pretrained
from partool.models.vmamba import VSSBlock
from partool.ops import set_backend

IMG = (64, 32)  # 4 x 2 patches + a cls token = 9 tokens
VIT = {"vit_dim": 32, "vit_heads": 2, "embed_dim": 16, "drop_path_rate": 0.0}


@pytest.fixture(autouse=True)
def _seed_and_backend():
    """Seeded, and on the chunked PyTorch scan: the kernel backends run Vim blocks flat, past the hooks."""
    torch.manual_seed(0)
    set_backend("chunked")
    yield
    set_backend(None)


def _count_calls(modules: dict[str, nn.Module]) -> tuple[Counter, dict[str, object]]:
    """Forward hooks on `modules`: how often each ran and what it returned last."""
    calls: Counter = Counter()
    outputs: dict[str, object] = {}
    for name, module in modules.items():

        def hook(_module: nn.Module, _args: object, out: object, name: str = name) -> None:
            calls[name] += 1
            outputs[name] = out

        module.register_forward_hook(hook)
    return calls, outputs


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _vim_rates(rate: float, depth: int) -> list[float]:
    """Vim's schedule: block i gets ([0] + linspace(0, rate, depth))[i]."""
    return [0.0, *torch.linspace(0, rate, depth).tolist()][:depth]


def _drop_prob(module: nn.Module) -> float:
    return getattr(module, "drop_prob", 0.0)  # nn.Identity stands for a rate of 0


# --- VMamba-B: no final LayerNorm, drop path 0.6 (models/base_block.py: VSSM.forward, vssm_base config) ---


def test_vmamba_returns_the_last_stages_tokens_unnormalised() -> None:
    backbone = create_model("vmamba-b", 3, (64, 64), depths=[1, 1, 1, 1], dims=8).backbone.eval()
    calls, outputs = _count_calls({"last stage": backbone.layers[-1]})
    with torch.no_grad():
        tokens = backbone(torch.randn(2, 3, 64, 64))
    assert calls["last stage"] == 1 and not hasattr(backbone, "norm")
    torch.testing.assert_close(tokens, outputs["last stage"].flatten(1, 2))  # (B, 2·2, 64), as it left


@pytest.mark.parametrize("name", ["vmamba-b", "vmamba-b-text"])
def test_vmamba_b_drop_path_rises_to_0_6(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, 26)
    blocks = [m for m in model.modules() if isinstance(m, VSSBlock)]
    assert len(blocks) == 2 + 2 + 27 + 2
    got = [_drop_prob(block.drop_path) for block in blocks]
    assert got == pytest.approx(torch.linspace(0, 0.6, 33).tolist())


def test_official_vmamba_checkpoints_final_norm_is_left_out(tmp_path) -> None:
    backbone = create_model("vmamba-b", 3, (64, 64), depths=[1, 1, 1, 1], dims=8).backbone
    state = {k: torch.randn_like(v) for k, v in backbone.state_dict().items()}
    for layout in ("norm", "classifier.norm"):  # v0 names it `norm`, later VMamba `classifier.norm`
        extra = {f"{layout}.weight": torch.ones(64), f"{layout}.bias": torch.zeros(64)}
        torch.save({"model": state | extra | {"head.weight": torch.zeros(1000, 64)}}, tmp_path / "v.pth")
        target = create_model("vmamba-b", 3, (64, 64), depths=[1, 1, 1, 1], dims=8)
        assert load_pretrained(target, tmp_path / "v.pth") == ([], [])
        for key, value in state.items():
            assert torch.equal(target.backbone.state_dict()[key], value), key


# --- MaHDFT: the last 4 Vim blocks, then norm_f (models/hybrid_5.py + Vim.py forward_by_layers) ---------


def test_mahdft_fuses_with_four_vim_blocks_and_norm_f() -> None:
    model = create_model("mahdft", 5, IMG, vit_depth=2, **VIT).eval()
    bb = model.backbone
    calls, outputs = _count_calls({f"vim {i}": layer for i, layer in enumerate(bb.layers)})
    with torch.no_grad():
        tokens = bb(torch.randn(2, 3, *IMG)).tokens
        hidden, residual = outputs["vim 3"]
        want = bb.final_pool(_rms_norm(residual + hidden, bb.norm_f.weight))
    assert calls == Counter({f"vim {i}": 1 for i in range(4)})
    torch.testing.assert_close(tokens, want)
    # the rates of blocks 20-23 of a Vim-S (the authors' drop path 0.1)
    model = create_model("mahdft", 5, IMG, vit_depth=2, **(VIT | {"drop_path_rate": 0.1}))
    rates = [_drop_prob(layer.drop_path) for layer in model.backbone.layers]
    assert rates == pytest.approx(_vim_rates(0.1, 24)[20:])
    assert _drop_prob(model.backbone.drop_path) == pytest.approx(0.1)  # on the last hidden, as Vim's


def test_mahdft_keeps_the_declared_384_to_768_neck() -> None:
    assert count_parameters("mahdft")["neck"] == 384 * 768 + 768


# --- N-ASF: the last 4 ViT blocks, no final norm (models/hybrid_2.py + vit.py forward_by_blocks) ----------


def test_nasf_runs_four_vit_blocks_and_no_final_norm() -> None:
    model = create_model("nasf", 5, IMG, depth=2, **VIT).eval()
    bb = model.backbone
    calls, outputs = _count_calls({f"vit {i}": block for i, block in enumerate(bb.blocks)})
    with torch.no_grad():
        tokens = bb(torch.randn(2, 3, *IMG))
    assert calls == Counter({f"vit {i}": 1 for i in range(4)})
    assert not hasattr(bb, "norm")
    torch.testing.assert_close(tokens, outputs["vit 3"])  # the last block's output, as it left
    model = create_model("nasf", 5, IMG, depth=2, **(VIT | {"drop_path_rate": 0.1}))
    rates = [_drop_prob(block.drop_path1) for block in model.backbone.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 12)[8:].tolist())  # ViT-B's blocks 8-11


# --- KDTM: the teacher is ViT blocks[:-1] without the norm (models/hybrid_7.py + vit.py ViT.forward) ------


def test_kdtm_teacher_runs_every_vit_block_but_the_last_and_no_norm() -> None:
    model = create_model("kdtm", 5, IMG, vit_depth=3, depth=2, **VIT).train()
    vit = model.backbone.vit
    modules = {f"vit {i}": block for i, block in enumerate(vit.blocks)} | {"norm": vit.norm}
    calls, outputs = _count_calls(modules)
    teacher = model.backbone(torch.randn(2, 3, *IMG)).teacher_tokens
    assert calls == Counter({"vit 0": 1, "vit 1": 1})  # block 2 and the norm never ran
    torch.testing.assert_close(teacher, outputs["vit 1"])


# --- MaKDF: the head reads the last guided hidden state (models/hybrid_8.py: conv_pool_vim(x_vim)) --------


def test_makdf_head_reads_the_raw_guided_hidden_state() -> None:
    model = create_model("makdf", 5, IMG, vit_depth=2, depth=2, **VIT).eval()
    bb = model.backbone
    images = torch.randn(2, 3, *IMG)
    with torch.no_grad():
        hidden, residual = bb.stem(images), None
        for i in range(2):
            hidden, residual = bb.layers[i](hidden, residual)
            hidden = hidden + bb.down_adapters[i](bb.up_adapters[i](bb.aux_layers[i](hidden, residual)[0]))
        torch.testing.assert_close(bb(images), hidden)
    assert not hasattr(bb, "norm_f")
