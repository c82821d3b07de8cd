"""Hybrid Mamba-Transformer models: forward/backward, frozen ViTs, extra heads and training losses computed
by hand, reductions to the plain ViT, ONNX parity, sizes and a short training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partool.errors import UserError
from partool.export import export_onnx
from partool.models import count_parameters, create_model
from partool.models.head import PARHead
from partool.train.losses import WeightedBCELoss

IMG = (64, 32)  # 4 x 2 patches + a cls token = 9 tokens
TINY = {"vit_dim": 32, "vit_depth": 2, "vit_heads": 2, "embed_dim": 16, "depth": 2, "drop_path_rate": 0.0}
NAMES = ("pafusion", "nasf", "asf", "mahdft", "maformer", "adamtf", "kdtm", "makdf")
FROZEN_VIT = ("mahdft", "maformer", "kdtm", "makdf")


def _tiny(name: str, seed: int = 0, **kw: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, 5, img_size=IMG, **{**TINY, **kw})


def _criterion(targets: torch.Tensor) -> WeightedBCELoss:
    return WeightedBCELoss(targets.float().mean(0).clamp(0.1, 0.9))


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_reaches_every_trainable_parameter_and_no_frozen_one(name: str) -> None:
    model = _tiny(name, groups=2) if name == "asf" else _tiny(name)
    model.train()
    targets = torch.tensor([[1, 0, 1, 0, 1], [0, 1, 0, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.float32)
    out = model(torch.randn(3, 3, *IMG), with_aux=True)  # what the training loop calls
    assert out.logits.shape == (3, 5)
    criterion = _criterion(targets)
    (criterion(out.logits, targets) + out.aux_loss(criterion, targets)).backward()
    for n, p in model.named_parameters():
        if n.startswith("backbone.vit.") and name in FROZEN_VIT:
            assert not p.requires_grad and p.grad is None, n
        else:
            assert p.requires_grad and p.grad is not None, n
    mamba = next(p for n, p in model.named_parameters() if "mixer.in_proj" in n)
    attention = next(p for n, p in model.named_parameters() if "attn.qkv.weight" in n)
    assert float(mamba.grad.abs().sum()) > 0
    if name not in FROZEN_VIT:
        assert float(attention.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", FROZEN_VIT)
def test_frozen_transformer_stays_in_eval_mode(name: str) -> None:
    model = _tiny(name).train()
    vit = model.backbone.vit
    assert not vit.training and model.backbone.training and model.head.training
    assert all(not p.requires_grad for p in vit.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone.vit."))


def test_plain_model_adds_no_training_term() -> None:
    model = _tiny("pafusion").eval()
    images, targets = torch.randn(2, 3, *IMG), torch.tensor([[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]]).float()
    with torch.no_grad():
        out = model(images, with_aux=True)
        torch.testing.assert_close(out.logits, model(images))
    assert out.teacher_logits is None and out.backbone_loss is None
    assert float(out.aux_loss(_criterion(targets), targets)) == 0.0


def test_mahdft_output_is_the_mean_of_the_vim_and_vit_heads() -> None:
    model = _tiny("mahdft").eval()
    assert isinstance(model.fused_head, PARHead) and model.teacher_head is None
    images = torch.randn(2, 3, *IMG)
    with torch.no_grad():
        vim_logits = model.head(model.neck(model.backbone(images).tokens))
        vit_logits = model.fused_head(model.backbone.vit.forward_features(images))  # timm's own ViT pass
        torch.testing.assert_close(model(images), (vim_logits + vit_logits) / 2)
    assert not torch.allclose(vim_logits, vit_logits)


def _vit_blocks_but_last(vit: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The authors' teacher features from timm's own API: the output of the second-to-last block, cls
    token first, without the final norm."""
    ((patches, prefix),) = vit.forward_intermediates(
        images, indices=[len(vit.blocks) - 2], return_prefix_tokens=True, norm=False, output_fmt="NLC",
        intermediates_only=True,
    )  # fmt: skip
    return torch.cat([prefix, patches], 1)


def test_kdtm_loss_is_student_plus_teacher_bce_plus_logit_mse() -> None:
    model = _tiny("kdtm").train()
    images = torch.randn(4, 3, *IMG)
    targets = torch.tensor([[1, 0, 1, 0, 1], [0, 1, 0, 1, 1], [1, 1, 0, 0, 0], [0, 0, 1, 1, 2]]).float()
    criterion = _criterion(targets)
    out = model(images, with_aux=True)
    loss = criterion(out.logits, targets) + out.aux_loss(criterion, targets)
    student = model.head(model.neck(model.backbone.vim(images)))
    teacher = model.teacher_head(_vit_blocks_but_last(model.backbone.vit, images))
    torch.testing.assert_close(out.logits, student)
    torch.testing.assert_close(out.teacher_logits, teacher)
    expected = criterion(student, targets) + criterion(teacher, targets) + ((student - teacher) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    # The MSE pulls the student only: the teacher head's gradient is that of its own BCE.
    loss.backward()
    got = [p.grad.clone() for p in model.teacher_head.parameters()]
    model.zero_grad()
    criterion(model.teacher_head(_vit_blocks_but_last(model.backbone.vit, images)), targets).backward()
    for g, p in zip(got, model.teacher_head.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_kdtm_deployed_model_is_the_vim_student_alone() -> None:
    model = _tiny("kdtm").eval()
    student = create_model("vim-s", 5, img_size=IMG, embed_dim=16, depth=2, drop_path_rate=0.0).eval()
    state = {k.replace("backbone.vim.", "backbone.", 1): v for k, v in model.state_dict().items()}
    missing, unexpected = student.load_state_dict(state, strict=False)
    assert (
        not missing
        and unexpected
        and all(k.startswith(("backbone.vit.", "teacher_head.")) for k in unexpected)
    )
    images = torch.randn(3, 3, *IMG)
    with torch.no_grad():
        torch.testing.assert_close(model(images), student(images))
        assert model(images, with_aux=True).teacher_logits is None  # the teacher is not run in eval


def test_makdf_loss_is_the_mean_layerwise_mse_and_eval_ignores_the_vit() -> None:
    model = _tiny("makdf").train()
    bb = model.backbone
    images = torch.randn(2, 3, *IMG)
    out = model(images, with_aux=True)
    assert out.teacher_logits is None
    # ViT block outputs from timm's own API (patch tokens, cls left out) and the Mamba branch by hand.
    vit_out = bb.vit.forward_intermediates(images, norm=False, output_fmt="NLC", intermediates_only=True)
    hidden, residual, mses = bb.stem(images), None, []
    for i in range(2):
        hidden, residual = bb.layers[i](hidden, residual)
        guide = bb.up_adapters[i](bb.aux_layers[i](hidden, residual)[0])
        mses.append(((guide[:, 1:] - vit_out[i]) ** 2).mean())
        hidden = hidden + bb.down_adapters[i](guide)
    torch.testing.assert_close(out.backbone_loss, (mses[0] + mses[1]) / 2)
    targets = torch.tensor([[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]]).float()
    torch.testing.assert_close(out.aux_loss(_criterion(targets), targets), out.backbone_loss)
    model.eval()
    with torch.no_grad():
        before = model(images)
        for p in bb.vit.parameters():
            p.add_(torch.randn_like(p))
        torch.testing.assert_close(model(images), before)
        assert model(images, with_aux=True).backbone_loss is None


def test_pafusion_without_the_mamba_contribution_is_the_plain_vit() -> None:
    model = _tiny("pafusion").eval()
    backbone = model.backbone
    with torch.no_grad():
        for up in backbone.up_projs:
            up.weight.zero_()
            up.bias.zero_()
        images = torch.randn(2, 3, *IMG)
        torch.testing.assert_close(backbone(images), backbone.vit.forward_features(images))


def test_maformer_and_adamtf_without_the_mamba_contribution_are_the_plain_vit() -> None:
    images = torch.randn(2, 3, *IMG)
    with torch.no_grad():
        maformer = _tiny("maformer").eval().backbone
        for up in maformer.up_projs:
            up.weight.zero_()
            up.bias.zero_()
        torch.testing.assert_close(maformer(images), maformer.vit.forward_features(images))
        adamtf = _tiny("adamtf").eval().backbone
        for layer in (*(a[-1] for a in adamtf.adapters), adamtf.up_final):
            layer.weight.zero_()
            layer.bias.zero_()
        torch.testing.assert_close(adamtf(images), adamtf.vit.forward_features(images))


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("maformer", {"depth": 3}),
        ("adamtf", {"depth": 1}),
        ("adamtf", {"adapter_dim": 0}),
        ("makdf", {"depth": 5}),
    ],
)
def test_bad_sizes_are_user_errors(name: str, kw: dict[str, int]) -> None:
    with pytest.raises(UserError, match=name):
        _tiny(name, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pafusion", "mahdft", "maformer", "adamtf", "kdtm", "makdf"])
def test_portable_onnx_export_matches_torch(name: str, tmp_path) -> None:
    import onnx
    import onnxruntime as ort

    model = _tiny(name, vit_depth=1, depth=1).eval()
    path = export_onnx(model, tmp_path / "model.onnx", scan="portable")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).standard_normal((2, 3, *IMG)).astype(np.float32)
    (got,) = session.run(None, {"images": images})
    with torch.no_grad():
        want = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    if name in ("kdtm", "makdf"):  # a teacher-only ViT leaves nothing in the deployed graph
        weights = sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)
        teacher = ("backbone.vit.", "teacher_head.")
        student = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(teacher))
        vit = sum(p.numel() for p in model.backbone.vit.parameters())
        assert weights <= student + 2 * 5 < student + vit, (weights, student, vit)  # + the head's BN buffers


def test_full_size_parameter_counts_are_the_sum_of_their_parts() -> None:
    vit = count_parameters("vit-b")["backbone"]  # ViT-B/16 without classifier
    vim = count_parameters("vim-s")["backbone"]  # Vim-S: patch embed, cls, pos, 24 blocks, norm_f
    vim_embed = 384 * 3 * 16 * 16 + 384 + 384 + 197 * 384  # patch conv, cls token, position embedding
    vit_embed = 768 * 3 * 16 * 16 + 768 + 768 + 197 * 768
    up, down = 384 * 768 + 768, 768 * 384 + 384
    assert count_parameters("pafusion")["backbone"] == vit + vim - 384 + 12 * up + 11 * down
    vit_block = (vit - vit_embed - 2 * 768) // 12  # one ViT-B block
    assert count_parameters("nasf")["backbone"] == vim + 4 * vit_block + up  # the last 4 blocks, no norm
    assert count_parameters("asf")["backbone"] == vit + vim - vim_embed - 384 + 4 * (up + down)
    pools = 12 * (197 * 49 + 49) + (12 * 49 * 197 + 197)  # 12 block pools + the final pool
    vim_block = (vim - vim_embed - 384) // 24  # one Vim-S block
    assert count_parameters("mahdft")["backbone"] == vit + 4 * vim_block + 384 + pools + down  # + norm_f
    assert count_parameters("maformer")["backbone"] == vit + 12 * vim_block + 12 * (up + down)
    adapter = 1152 * 32 + 32 + 32 * 1152 + 1152
    assert count_parameters("adamtf")["backbone"] == vit + vim - 384 + 12 * adapter + up
    assert count_parameters("kdtm")["backbone"] == vit + vim
    assert count_parameters("makdf")["backbone"] == vit + vim - 384 + 12 * vim_block + 12 * (up + down)


@pytest.mark.parametrize("name", ["kdtm", "makdf"])
def test_learns_a_synth_batch_with_its_training_terms(name: str) -> None:
    """40 AdamW steps on 8 SynthPAR images with the loop's loss: the student, and KDTM's teacher, fit them."""
    from partool.data import open_dataset
    from partool.data.transforms import build_transforms

    data = open_dataset("synth:8", "train", build_transforms(IMG, (0.5,) * 3, (0.5,) * 3, train=False))
    images = torch.stack([data[i][0] for i in range(8)])
    targets = torch.stack([torch.as_tensor(data[i][1]) for i in range(8)]).float()
    torch.manual_seed(0)
    model = create_model(name, targets.shape[1], img_size=IMG, **TINY).train()
    criterion = _criterion(targets)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for _ in range(40):
        out = model(images, with_aux=True)
        own = criterion(out.logits, targets)
        loss = own + out.aux_loss(criterion, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        teacher = criterion(out.teacher_logits, targets) if out.teacher_logits is not None else own
        history.append((own.item(), teacher.item(), loss.item()))
    (own0, teacher0, loss0), (own1, teacher1, loss1) = history[0], history[-1]
    assert own1 < 0.6 * own0 and teacher1 < 0.6 * teacher0 and loss1 < 0.6 * loss0, history[::5]


def test_kdtm_trains_through_the_loop_with_its_teacher_terms(tmp_path) -> None:
    """The loop adds PAROutput.aux_loss: the teacher head (reached by nothing else) trains, the ViT does not."""
    from partool.models.run_folder import load_run
    from partool.train.loop import TrainConfig, train

    result = train(
        TrainConfig(
            model="kdtm", data="synth:16", out=tmp_path / "run", epochs=2, batch_size=8, img_size=IMG, lr=1e-2,
            optimizer="adamw", warmup_epochs=0, model_kwargs=TINY, workers=0, progress=False,
        )
    )  # fmt: skip
    assert result.finished and all(np.isfinite(h["train_loss"]) for h in result.history)
    model, _ = load_run(tmp_path / "run")
    torch.manual_seed(0)  # the loop builds the model right after seeding with config.seed (0)
    init = create_model("kdtm", model.num_attrs, img_size=IMG, **TINY)
    for (n, p), q in zip(model.backbone.vit.named_parameters(), init.backbone.vit.parameters(), strict=True):
        assert torch.equal(p, q), n  # frozen teacher ViT: untouched
    for p, q in zip(model.teacher_head.parameters(), init.teacher_head.parameters(), strict=True):
        assert not torch.equal(p, q)  # trained, and only the aux loss reaches the teacher head
