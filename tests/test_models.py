"""Models: registry, parameter counts, PAR head, Vim mixer and VMamba cross-scan against explicit forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from partool.errors import UserError
from partool.models import count_parameters, create_model, list_models, model_info
from partool.models.head import PARHead
from partool.models.mamba import BiMamba
from partool.models.vim import resample_midcls_pos_embed
from partool.models.vmamba import SS2D
from partool.ops.causal_conv1d import causal_conv1d
from partool.ops.cross_scan import CrossScanWeights, cross_scan_fn

pytestmark = pytest.mark.usefixtures("seeded_single_thread")


@pytest.fixture
def cpu_backend(plugins_build):
    """The `cpu` kernel backend: libpartool_kernels from the session's plugin build (or one built before)."""
    from partool.ops import available_backends

    if not available_backends().get("cpu"):
        pytest.skip("kernel library not built (partool plugins build)")


# --- independent helpers (written from the equations, not from partool's code) -------------------------


def loop_scan(u, delta, A, B, C, D, z=None):
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t; y_t = C_t·h_t + D u_t; y·silu(z). B, C: (b, n, l)."""
    b, d, length = u.shape
    h = torch.zeros(b, d, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        dt = delta[:, :, t].double()
        h = (
            torch.exp(dt[..., None] * A.double()) * h
            + (dt * u[:, :, t].double())[..., None] * B[:, None, :, t].double()
        )
        ys.append((h * C[:, None, :, t].double()).sum(-1) + D.double() * u[:, :, t].double())
    y = torch.stack(ys, -1)
    return y * F.silu(z.double()) if z is not None else y


def official_causal_conv(x, conv):
    """Vim's fallback: nn.Conv1d with padding w-1, keep the first L outputs, SiLU."""
    return F.silu(
        F.conv1d(x, conv.weight, conv.bias, padding=conv.weight.shape[-1] - 1, groups=x.shape[1])[
            ..., : x.shape[-1]
        ]
    )


# --- registry --------------------------------------------------------------------------------------------


def test_registry_names_and_metadata():
    assert set(list_models()) == {
        "vim-t",
        "vim-s",
        "vmamba-t",
        "vmamba-s",
        "vmamba-b",
        "vit-s",
        "vit-b",
        "vim-s-text",
        "vmamba-b-text",
        "pafusion",
        "nasf",
        "asf",
        "mahdft",
        "maformer",
        "adamtf",
        "kdtm",
        "makdf",
    }
    info = model_info("vim-s")
    assert info.family == "vim" and info.input_size == (224, 224)
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)
    with pytest.raises(UserError, match="vim-s"):
        create_model("vim-x", 26)
    with pytest.raises(UserError, match="depthz"):
        create_model("vim-t", 26, depthz=2)


# --- parameter counts (meta device: no memory, no init) ---------------------------------------------------


def vim_backbone_params(embed: int, depth: int, tokens: int, d_state: int = 16, d_conv: int = 4) -> int:
    inner, rank = 2 * embed, math.ceil(embed / 16)
    direction = (
        inner * d_conv + inner + inner * (rank + 2 * d_state) + rank * inner + inner + inner * d_state + inner
    )
    layer = embed * 2 * inner + 2 * direction + inner * embed + embed  # in_proj, 2 directions, out_proj, norm
    return 3 * 16 * 16 * embed + embed + embed + tokens * embed + depth * layer + embed


def vmamba_v0_backbone_params(depths, dims, d_state: int = 16) -> int:
    total = 3 * 4 * 4 * dims[0] + dims[0] + 2 * dims[0]  # patch conv + LayerNorm
    for i, (depth, c) in enumerate(zip(depths, dims, strict=True)):
        inner, rank = 2 * c, math.ceil(c / 16)
        block = 2 * c + c * 2 * inner + inner * 9 + inner  # ln_1, in_proj, 3x3 depthwise conv
        block += 4 * (rank + 2 * d_state) * inner + 4 * inner * rank + 4 * inner  # x_proj, dt_projs (+bias)
        block += 4 * inner * d_state + 4 * inner + 2 * inner + inner * c  # A_logs, Ds, out_norm, out_proj
        total += depth * block
        if i < len(depths) - 1:
            total += 4 * c * 2 * c + 2 * 4 * c  # merge: reduction + LayerNorm(4C)
    return total  # no final LayerNorm: MambaPAR's VSSM.forward skips it


def test_vim_s_parameter_count():
    counts = count_parameters("vim-s", num_attrs=26)
    assert counts["backbone"] == vim_backbone_params(384, 24, 197) == 25_411_584
    # Published Vim-S size (26 M; 25.8 M counted with its 1000-class ImageNet head Linear(384, 1000)).
    assert abs(counts["backbone"] + 384 * 1000 + 1000 - 25.8e6) / 25.8e6 < 0.01
    assert counts["neck"] == 384 * 768 + 768
    assert count_parameters("vim-t")["backbone"] == vim_backbone_params(192, 24, 197)


def test_vmamba_b_parameter_count():
    counts = count_parameters("vmamba-b", num_attrs=26)
    assert counts["backbone"] == vmamba_v0_backbone_params([2, 2, 27, 2], [128, 256, 512, 1024])
    assert 75e6 <= counts["backbone"] <= 76e6
    assert counts["neck"] == 1024 * 768 + 768
    assert count_parameters("vmamba-t")["backbone"] == vmamba_v0_backbone_params(
        [2, 2, 9, 2], [96, 192, 384, 768]
    )


# --- PAR head --------------------------------------------------------------------------------------------


def test_par_head_matches_per_attribute_linears():
    head = PARHead(num_tokens=5, num_attrs=3, dim=8).eval()
    with torch.no_grad():
        head.bn.running_mean.uniform_(-1, 1)
        head.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(4, 5, 8)
    out = head(x)
    assert out.shape == (4, 3)
    feats = torch.einsum("at,btc->bac", head.token_mix.weight[:, :, 0], x) + head.token_mix.bias[:, None]
    for a in range(3):
        linear = torch.nn.Linear(8, 1)
        with torch.no_grad():
            linear.weight.copy_(head.weight[a : a + 1])
            linear.bias.copy_(head.bias[a : a + 1])
        logit = linear(feats[:, a])[:, 0]
        expect = (logit - head.bn.running_mean[a]) / torch.sqrt(head.bn.running_var[a] + head.bn.eps)
        expect = expect * head.bn.weight[a] + head.bn.bias[a]
        torch.testing.assert_close(out[:, a], expect)


# --- causal conv -----------------------------------------------------------------------------------------


def test_causal_conv1d_matches_explicit_sum_both_directions():
    x, w, bias = torch.randn(2, 3, 9), torch.randn(3, 4), torch.randn(3)
    causal = torch.zeros(2, 3, 9)
    anti = torch.zeros(2, 3, 9)
    for t in range(9):
        for k in range(4):
            if 0 <= t - 3 + k < 9:
                causal[..., t] += w[:, k] * x[..., t - 3 + k]
            if t + 3 - k < 9:
                anti[..., t] += w[:, k] * x[..., t + 3 - k]
    torch.testing.assert_close(causal_conv1d(x, w, bias, activation=None), causal + bias[:, None])
    torch.testing.assert_close(causal_conv1d(x, w, bias, activation="silu"), F.silu(causal + bias[:, None]))
    torch.testing.assert_close(causal_conv1d(x, w, None, activation=None, reverse=True), anti)
    flipped = causal_conv1d(x.flip(-1), w, bias, activation="silu").flip(-1)
    torch.testing.assert_close(causal_conv1d(x, w, bias, reverse=True), flipped)


# --- Vim bidirectional mixer ---------------------------------------------------------------------------------


def test_bimamba_matches_flip_based_official_form():
    mixer = BiMamba(d_model=8, d_state=4, d_conv=4, expand=2).double()
    hidden = torch.randn(2, 7, 8, dtype=torch.float64)
    m = mixer

    def branch(x, z, conv, x_proj, dt_proj, A_log, D):
        xc = official_causal_conv(x, conv)
        dt, B, C = torch.split(x_proj(xc.transpose(1, 2)), [m.dt_rank, m.d_state, m.d_state], dim=-1)
        delta = F.softplus(F.linear(dt, dt_proj.weight) + dt_proj.bias).transpose(1, 2)
        return loop_scan(xc, delta, -torch.exp(A_log), B.transpose(1, 2), C.transpose(1, 2), D, z)

    xz = m.in_proj(hidden).transpose(1, 2)
    x, z = xz.chunk(2, dim=1)
    out_f = branch(x, z, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D)
    out_b = branch(x.flip(-1), z.flip(-1), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b)
    expect = m.out_proj(((out_f + out_b.flip(-1)) / 2).transpose(1, 2))
    torch.testing.assert_close(mixer(hidden), expect, rtol=1e-6, atol=1e-8)


def test_vim_tiny_forward_backward_all_params_get_gradients():
    model = create_model("vim-t", 5, (64, 32), depth=2, embed_dim=32)
    assert model.num_tokens == 4 * 2 + 1 and model.img_size == (64, 32)
    logits = model(torch.randn(3, 3, 64, 32))
    assert logits.shape == (3, 5)
    logits.square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []


def test_vim_pos_embed_sizes_and_resampling():
    assert create_model("vim-s", 26, depth=1).backbone.pos_embed.shape == (1, 197, 384)
    model = create_model("vim-s", 26, (256, 128), depth=1)
    assert model.num_tokens == 129 and model.backbone.pos_embed.shape == (1, 129, 384)
    # A pos-embed whose patch part depends only on the row survives a resize as row-only (row-major order)
    # and the cls token stays at index M // 2.
    rows = torch.arange(14.0)[:, None, None].expand(14, 14, 2).reshape(1, 196, 2)
    cls = torch.full((1, 1, 2), -7.0)
    pe = torch.cat([rows[:, :98], cls, rows[:, 98:]], dim=1)
    out = resample_midcls_pos_embed(pe, (14, 14), (16, 8))
    assert out.shape == (1, 129, 2)
    torch.testing.assert_close(out[:, 64], cls[:, 0])
    patches = torch.cat([out[:, :64], out[:, 65:]], dim=1).reshape(16, 8, 2)
    torch.testing.assert_close(patches, patches[:, :1].expand(16, 8, 2))
    assert (patches[1:, 0, 0] > patches[:-1, 0, 0]).all()
    torch.testing.assert_close(resample_midcls_pos_embed(pe, (14, 14), (14, 14)), pe)


# --- VMamba ----------------------------------------------------------------------------------------------


def test_vmamba_grouped_scans_equal_four_separate_scans():
    ss2d = SS2D(d_model=4, d_state=3).double()
    b, d, h, w = 2, ss2d.d_inner, 3, 5
    x = torch.randn(b, d, h, w, dtype=torch.float64)
    # Sequence position -> (row, col) for each direction, written out explicitly.
    row_major = [(i, j) for i in range(h) for j in range(w)]
    col_major = [(i, j) for j in range(w) for i in range(h)]
    orders = [row_major, col_major, row_major[::-1], col_major[::-1]]
    expect = torch.zeros(b, d, h, w, dtype=torch.float64)
    A = -torch.exp(ss2d.A_logs).view(4, d, -1)
    for k, order in enumerate(orders):
        u = torch.stack([x[:, :, i, j] for i, j in order], dim=-1)  # (b, d, L)
        x_dbl = torch.einsum("bdl,cd->bcl", u, ss2d.x_proj_weight[k])
        dt, B, C = torch.split(x_dbl, [ss2d.dt_rank, ss2d.d_state, ss2d.d_state], dim=1)
        delta = F.softplus(
            torch.einsum("brl,dr->bdl", dt, ss2d.dt_projs_weight[k]) + ss2d.dt_projs_bias[k][:, None]
        )
        y = loop_scan(u, delta, A[k], B, C, ss2d.Ds.view(4, d)[k])
        for pos, (i, j) in enumerate(order):
            expect[:, :, i, j] += y[..., pos]
    weights = CrossScanWeights(
        ss2d.x_proj_weight, ss2d.dt_projs_weight, ss2d.dt_projs_bias, ss2d.A_logs, ss2d.Ds
    )
    got = cross_scan_fn(x, weights, cache_owner=ss2d)  # (b, h, w, d)
    torch.testing.assert_close(got, expect.permute(0, 2, 3, 1), rtol=1e-6, atol=1e-8)


def test_vmamba_tiny_forward_backward_and_sizes():
    model = create_model("vmamba-t", 4, (64, 32), depths=[1, 1, 1, 1], dims=16)
    assert model.num_tokens == 2 and isinstance(model.neck, torch.nn.Linear)  # 128 -> 768
    logits = model(torch.randn(2, 3, 64, 32))
    assert logits.shape == (2, 4)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert create_model("vmamba-b", 4, depths=[1, 1, 1, 1], dims=8).num_tokens == 49  # 224x224 -> 7x7
    with pytest.raises(UserError, match="multiples of 32"):
        create_model("vmamba-t", 4, (100, 50), depths=[1, 1, 1, 1], dims=8)


def test_vit_small_tokens_and_forward():
    model = create_model("vit-s", 3, (64, 32))
    assert model.num_tokens == 4 * 2 + 1 and model.backbone.out_dim == 384
    assert model(torch.randn(2, 3, 64, 32)).shape == (2, 3)
    assert create_model("vit-b", 3, (256, 128)).num_tokens == 129
    with pytest.raises(UserError, match="built for 64x32"):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("img_size", [(64, 32), (96, 96)])  # maps of 2x1 and 3x3 at the last stage
def test_vmamba_fused_kernel_path_matches_reference(cpu_backend, img_size, monkeypatch):
    """Inference on the `cpu` kernel backend runs SS2D's fused scan (one bidirectional call per block,
    flat layout, strided merge) and gives the logits of the sequential reference, before and after the
    weights change in place (the cached constants follow), in float32 and, within rounding, bf16."""
    from partool.ops import kernels, set_backend

    torch.manual_seed(0)
    model = create_model("vmamba-t", 5, img_size=img_size, depths=[1, 1, 2, 1], dims=16).eval()
    images = torch.randn(3, 3, *img_size)
    calls = []
    real = kernels.scan_bidirectional
    monkeypatch.setattr(kernels, "scan_bidirectional", lambda *a, **k: calls.append(1) or real(*a, **k))
    outputs = {}
    try:
        with torch.no_grad():
            for step in ("before", "after"):
                if step == "after":
                    for name, param in model.named_parameters():
                        if name.endswith(
                            ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")
                        ):
                            param.mul_(1.1)
                for backend in ("reference", "cpu"):
                    set_backend(backend)
                    outputs[step, backend] = model(images)
            model.to(torch.bfloat16)
            outputs["bf16"] = model(images.to(torch.bfloat16)).float()
    finally:
        set_backend(None)
    assert len(calls) == 3 * 5  # one call per block (5 blocks), three kernel-backend forwards
    for step in ("before", "after"):
        torch.testing.assert_close(outputs[step, "cpu"], outputs[step, "reference"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(outputs["after", "cpu"], outputs["before", "cpu"])
    torch.testing.assert_close(outputs["bf16"], outputs["after", "reference"], rtol=0, atol=0.05)


def test_vim_fused_kernel_path_matches_reference(cpu_backend):
    """Inference on the `cpu` kernel backend runs the fused conv + bidirectional scan; same logits."""
    from partool.ops import set_backend

    torch.manual_seed(0)
    model = create_model("vim-t", 5, img_size=(64, 32), depth=2).eval()
    images = torch.randn(2, 3, 64, 32)
    outputs = {}
    try:
        with torch.no_grad():
            for step in ("before", "after"):  # after: weights changed in place, cached constants must follow
                if step == "after":
                    for name, param in model.named_parameters():
                        if name.endswith(
                            (
                                "A_log",
                                "A_b_log",
                                "D",
                                "conv1d.weight",
                                "dt_proj_b.bias",
                                "x_proj_b.weight",
                                "dt_proj.weight",
                            )
                        ):
                            param.mul_(1.1)
                for backend in ("reference", "cpu"):
                    set_backend(backend)
                    outputs[step, backend] = model(images)
                    outputs[step, backend, "b=1"] = model(images[:1])
    finally:
        set_backend(None)
    for key in (("before",), ("after",), ("before", "b=1"), ("after", "b=1")):
        step, *rest = key
        torch.testing.assert_close(
            outputs[(step, "cpu", *rest)], outputs[(step, "reference", *rest)], rtol=1e-4, atol=1e-5
        )
    assert not torch.allclose(outputs["after", "cpu"], outputs["before", "cpu"])


def test_vim_flat_block_stack_matches_the_blocks(cpu_backend, monkeypatch):
    """Inference on a kernel backend runs Vim's blocks in the flat (E, B·T) layout with one add + RMSNorm
    kernel per block and one for norm_f; in half precision too, where the norms' float32 weights are
    cached and must follow in-place updates. Same tokens as the blocks' own forward."""
    from partool.ops import kernels, set_backend

    torch.manual_seed(0)
    backbone = create_model("vim-t", 5, img_size=(64, 32), depth=3).backbone.eval()
    calls = []
    real = kernels.add_rms_norm
    monkeypatch.setattr(kernels, "add_rms_norm", lambda *a, **k: calls.append(a[1] is None) or real(*a, **k))
    images = torch.randn(2, 3, 64, 32)
    try:
        set_backend("cpu")
        for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-2)):
            backbone.to(dtype)
            for step in ("before", "after"):
                if step == "after":
                    with torch.no_grad():
                        for layer in backbone.layers:
                            layer.norm.weight.mul_(1.5)
                calls.clear()
                with torch.no_grad():
                    got = backbone(images.to(dtype))
                    backbone.train()  # the per-block path, with its drop paths off
                    for module in (backbone, *backbone.layers):
                        module.drop_path = torch.nn.Identity()
                    want = backbone(images.to(dtype))
                    backbone.eval()
                assert calls == [True, False, False, False]  # the first block has no residual yet
                assert got.dtype == want.dtype == dtype
                torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    finally:
        set_backend(None)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("vim-t", {"depth": 2}),
        # Inductor's C++ build of VMamba's graph takes 30 s on 2 cores: CI's sweep step
        pytest.param("vmamba-t", {"depths": [1, 1, 1, 1], "dims": 16}, marks=pytest.mark.sweep),
    ],
)
def test_models_on_kernel_backend_compile_into_one_graph(cpu_backend, name, kwargs):
    """torch.compile(fullgraph=True) of a model on the `cpu` kernel backend: the kernels are traced as
    custom ops (no graph break; on a GPU, Inductor then fuses the norms and casts between them), and the
    logits equal the reference backend's eager ones."""
    from partool.ops import set_backend

    torch.manual_seed(0)
    model = create_model(name, 5, img_size=(64, 32), **kwargs).eval()
    images = torch.randn(2, 3, 64, 32)
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            set_backend("reference")
            want = model(images)
            set_backend("cpu")
            got = torch.compile(model, fullgraph=True, dynamic=False)(images)
    finally:
        set_backend(None)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


_TINY_HYBRID = {
    "vit_dim": 32,
    "vit_depth": 1,
    "vit_heads": 2,
    "embed_dim": 16,
    "depth": 2,
    "drop_path_rate": 0.0,
}


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [(name, _TINY_HYBRID) for name in ("pafusion", "nasf", "mahdft", "maformer", "adamtf", "kdtm", "makdf")]
    + [("asf", {**_TINY_HYBRID, "groups": 1})],
)
def test_hybrids_run_their_vim_blocks_flat_on_a_kernel_backend(cpu_backend, name, kwargs, monkeypatch):
    """The hybrids' Vim segments go through `run_blocks`: on the `cpu` kernel backend in inference they run
    in the flat layout (add + RMSNorm kernels) and give the logits of the chunked PyTorch path."""
    from partool.ops import kernels, set_backend

    torch.manual_seed(0)
    model = create_model(name, 5, img_size=(64, 32), **kwargs).eval()
    images = torch.randn(2, 3, 64, 32)
    calls = []
    real = kernels.add_rms_norm
    monkeypatch.setattr(kernels, "add_rms_norm", lambda *a, **k: calls.append(1) or real(*a, **k))
    try:
        with torch.no_grad():
            set_backend("chunked")
            want = model(images)
            assert not calls
            set_backend("cpu")
            got = model(images)
    finally:
        set_backend(None)
    assert calls, "the Vim blocks did not run flat"
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
