"""Image-text fusion models: phrases and vocabulary, the Mamba mixer, folding, training, ONNX export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from partool.artifacts import build_meta, load_run
from partool.data.synth import ATTRIBUTES
from partool.export import export_onnx
from partool.export.onnx_export import count_scan_nodes
from partool.models import count_parameters, create_model, load_pretrained
from partool.models.text_fusion import Mamba, attribute_phrase, encode_phrases
from partool.train.loop import TrainConfig, train

IMG = (64, 32)  # 4 x 2 patches + the middle cls token = 9 vision tokens
TINY = {"embed_dim": 32, "depth": 1, "drop_path_rate": 0.0, "text_dim": 16, "text_depth": 2, "fusion_dim": 64}


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("vim-s-text", len(ATTRIBUTES), img_size=IMG, attributes=list(ATTRIBUTES), **TINY)


def test_phrases_and_word_vocabulary() -> None:
    assert attribute_phrase("AgeOver60") == "age over 60"  # the table
    assert attribute_phrase("upperBodyShortSleeve") == "upper body short sleeve"  # PETA spelling, split
    assert attribute_phrase("ub-TShirt") == "upper body t shirt"  # RAP prefix spelled out
    ids, mask, vocab = encode_phrases(["a red hat", "hat"])
    assert vocab == ["a", "hat", "red"]
    assert ids.tolist() == [[1, 3, 2], [2, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]


def test_mamba_mixer_matches_a_step_by_step_recurrence() -> None:
    torch.manual_seed(1)
    mixer = Mamba(8, d_state=4, d_conv=3, expand=2)
    h = torch.randn(2, 5, 8)
    with torch.no_grad():
        out = mixer(h)
        # mamba_ssm's Mamba written out: causal depthwise conv + SiLU, then h_t = e^{ΔA} h + ΔB x, y = C h + D x.
        x, z = mixer.in_proj(h).chunk(2, dim=-1)  # (b, l, d_inner)
        conv = F.conv1d(x.transpose(1, 2), mixer.conv1d.weight, mixer.conv1d.bias, padding=2, groups=16)
        x = F.silu(conv[..., :5]).transpose(1, 2)
        dt, B, C = mixer.x_proj(x).split([mixer.dt_rank, 4, 4], dim=-1)
        delta = F.softplus(mixer.dt_proj(dt))  # (b, l, d_inner)
        A = -torch.exp(mixer.A_log)  # (d_inner, n)
        state = torch.zeros(2, 16, 4)
        ys = []
        for t in range(5):
            state = (
                torch.exp(delta[:, t, :, None] * A) * state
                + delta[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
            )
            ys.append((state * C[:, t, None, :]).sum(-1) + mixer.D * x[:, t])
        expected = mixer.out_proj(torch.stack(ys, 1) * F.silu(z))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_forward_backward_reaches_text_and_vision() -> None:
    model = _tiny().train()
    logits = model(torch.randn(2, 3, *IMG))
    assert logits.shape == (2, len(ATTRIBUTES))
    logits.square().mean().backward()
    fusion = model.backbone
    for param in (
        fusion.text.embedding.weight,
        fusion.text_proj.weight,
        fusion.vision.patch_embed.proj.weight,
    ):
        assert param.grad is not None and float(param.grad.abs().sum()) > 0
    assert fusion.text.embedding.weight.grad[0].abs().sum() == 0  # padding id learns nothing


def test_folding_gives_identical_outputs_and_follows_new_weights() -> None:
    model = _tiny().eval()
    fusion = model.backbone
    images = torch.randn(3, 3, *IMG)
    assert fusion.folded is not None and fusion.folded.shape == (len(ATTRIBUTES), 64)
    assert "backbone.folded" not in model.state_dict()  # derived from the weights, never stored
    with torch.no_grad():
        folded = model(images)
        fusion.folded = None  # eval without the constant: the text encoder runs
        live = model(images)
        assert torch.equal(folded, live)
        other = _tiny(seed=5).state_dict()
        model.load_state_dict(other)  # a model in eval mode refolds after loading
        assert torch.equal(fusion.folded, fusion.attribute_tokens())
    model.train()
    assert fusion.folded is None


def test_official_image_checkpoint_loads_into_the_vision_backbone(tmp_path) -> None:
    torch.manual_seed(3)
    vim = create_model("vim-s", 5, img_size=IMG, embed_dim=32, depth=1).backbone
    torch.save({"model": vim.state_dict()}, tmp_path / "vim.pth")
    model = _tiny()
    missing, unexpected = load_pretrained(model, tmp_path / "vim.pth")
    assert missing == [] and unexpected == []
    for key, value in vim.state_dict().items():
        assert torch.equal(model.backbone.vision.state_dict()[key], value), key


def test_parameter_counts_include_the_text_branch() -> None:
    with torch.device("meta"):
        fusion = create_model("vim-s-text", 26).backbone
    # One VSF layer at d=768 (d_inner 1536, dt_rank 48, n 16, conv 4), counted by hand: in_proj 768·3072,
    # conv 1536·4 + 1536, x_proj 1536·80, dt_proj 48·1536 + 1536, A_log 1536·16, D 1536, out_proj 1536·768,
    # RMSNorm 768.
    per_layer = 2_359_296 + 7_680 + 122_880 + 75_264 + 24_576 + 1_536 + 1_179_648 + 768
    assert sum(p.numel() for p in fusion.fusion.parameters()) == 2 * per_layer
    plain = count_parameters("vim-s")["backbone"]
    text = count_parameters("vim-s-text")["backbone"]
    # + Linear(384->768), 2 modality embeddings, the text Mamba, Linear(256->768), the final RMSNorm
    assert 2 * per_layer + 1e6 < text - plain < 2 * per_layer + 2e6, text - plain


def test_training_records_the_attributes_and_load_run_rebuilds(tmp_path) -> None:
    result = train(
        TrainConfig(
            model="vim-s-text", data="synth:60", out=tmp_path / "run", epochs=1, batch_size=10, img_size=IMG,
            lr=1e-3, optimizer="adamw", warmup_epochs=0, model_kwargs=TINY, workers=0, progress=False,
        )
    )  # fmt: skip
    assert result.finished
    model, meta = load_run(tmp_path / "run")
    assert meta["model_kwargs"]["attributes"] == list(ATTRIBUTES) and meta["attributes"] == list(ATTRIBUTES)
    assert model.backbone.phrases[0] == "a female pedestrian" and model.backbone.folded is not None


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    model = _tiny().eval()
    meta = build_meta(model, list(ATTRIBUTES), "synth")
    paths = {}
    for scan in ("plugin", "portable"):
        path = tmp_path_factory.mktemp(f"text-{scan}") / "model.onnx"
        paths[scan] = export_onnx(model, path, scan=scan, meta=meta)
    return {"model": model, **paths}


def test_exported_graph_has_no_text_encoder(exported: dict[str, object]) -> None:
    proto = onnx.load(str(exported["plugin"]))
    # Vim: 2 scans per bidirectional layer; VSF: 1 per layer. The text Mamba's 2 scans are folded away.
    assert count_scan_nodes(proto) == 2 * TINY["depth"] + 2
    model = exported["model"]
    vocab_rows = model.backbone.text.embedding.weight.shape[0]
    shapes = [tuple(t.dims) for t in proto.graph.initializer]
    assert not any(shape and shape[0] == vocab_rows for shape in shapes)  # no word embedding table
    folded = model.backbone.folded.numpy()
    constants = [numpy_helper.to_array(t) for t in proto.graph.initializer if np.prod(t.dims) == folded.size]
    assert any(
        np.array_equal(c.reshape(folded.shape), folded) for c in constants
    )  # the tokens, as a constant


def test_portable_export_matches_torch_in_onnx_runtime(exported: dict[str, object]) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported["portable"]), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).standard_normal((3, 3, *IMG)).astype(np.float32)
    (got,) = session.run(None, {"images": images})
    with torch.no_grad():
        want = exported["model"](torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
