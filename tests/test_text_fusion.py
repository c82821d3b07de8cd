"""Image-text fusion models: phrases and vocabulary, the Mamba mixer, folding, training, ONNX export."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from safetensors.torch import save_file

from partool.artifacts import build_meta
from partool.data.synth import ATTRIBUTES
from partool.errors import UserError
from partool.export import export_onnx
from partool.export.onnx_export import count_scan_nodes
from partool.models import count_parameters, create_model, load_pretrained
from partool.models.run_folder import load_run, save_run
from partool.models.text_encoder import Mamba, build_text_encoder
from partool.models.text_phrases import attribute_phrase, encode_phrases
from partool.ops.mamba_inner import mamba_inner_export
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
    assert meta["model_kwargs"] == {**TINY, "attributes": list(ATTRIBUTES)}  # word vocabulary: nothing stored
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


@pytest.mark.slow
def test_exported_graph_has_no_text_encoder(exported: dict[str, object]) -> None:
    proto = onnx.load(str(exported["plugin"]))
    # Vim: 2 scans per bidirectional layer; VSF: 1 per layer. The text Mamba's 2 scans are folded away.
    assert count_scan_nodes(proto) == 2 * TINY["depth"] + 2
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"SplitToSequence", "SequenceAt"}  # the VSF mixers export like Vim's (no chunk/split)
    model = exported["model"]
    vocab_rows = model.backbone.text.embedding.weight.shape[0]
    shapes = [tuple(t.dims) for t in proto.graph.initializer]
    assert not any(shape and shape[0] == vocab_rows for shape in shapes)  # no word embedding table
    folded = model.backbone.folded.numpy()
    constants = [numpy_helper.to_array(t) for t in proto.graph.initializer if np.prod(t.dims) == folded.size]
    assert any(
        np.array_equal(c.reshape(folded.shape), folded) for c in constants
    )  # the tokens, as a constant


def test_vsf_mixer_export_layout_computes_the_same_function() -> None:
    torch.manual_seed(3)
    mixer = Mamba(32).eval()
    hidden = torch.randn(2, 11, 32)
    with torch.no_grad():
        exported = mamba_inner_export(
            hidden, mixer.in_proj.weight, mixer.out_proj.weight, (mixer.direction(),)
        )
        torch.testing.assert_close(exported, mixer(hidden), atol=1e-5, rtol=1e-4)


def test_portable_export_matches_torch_in_onnx_runtime(exported: dict[str, object]) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported["portable"]), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).standard_normal((3, 3, *IMG)).astype(np.float32)
    (got,) = session.run(None, {"images": images})
    with torch.no_grad():
        want = exported["model"](torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


# --- a pretrained text encoder: a mamba_ssm MambaLMHeadModel checkpoint and a Hugging Face tokenizer ---

LM = {"vocab": 53, "d_model": 16, "n_layer": 2, "d_inner": 32, "d_state": 4, "d_conv": 4, "dt_rank": 3}
# sizes, and the fusion width: the checkpoint's
PRETRAINED = {k: v for k, v in TINY.items() if k not in ("text_dim", "text_depth", "fusion_dim")}


def _mamba_lm_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny checkpoint with MambaLMHeadModel's exact key names (the layout of state-spaces/mamba-130m)."""
    g = torch.Generator().manual_seed(seed)
    d, di, n, r, k = LM["d_model"], LM["d_inner"], LM["d_state"], LM["dt_rank"], LM["d_conv"]

    def rnd(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    state = {"backbone.embedding.weight": rnd(LM["vocab"], d, scale=1.0)}
    for i in range(LM["n_layer"]):
        p = f"backbone.layers.{i}."
        state |= {
            p + "norm.weight": 1 + rnd(d, scale=0.1),
            p + "mixer.A_log": torch.log(torch.rand(di, n, generator=g) * 4 + 0.5),
            p + "mixer.D": rnd(di, scale=1.0),
            p + "mixer.in_proj.weight": rnd(2 * di, d),
            p + "mixer.conv1d.weight": rnd(di, 1, k),
            p + "mixer.conv1d.bias": rnd(di),
            p + "mixer.x_proj.weight": rnd(r + 2 * n, di),
            p + "mixer.dt_proj.weight": rnd(di, r),
            p + "mixer.dt_proj.bias": rnd(di) - 2,
            p + "mixer.out_proj.weight": rnd(d, di),
        }
    state["backbone.norm_f.weight"] = 1 + rnd(d, scale=0.1)
    state["lm_head.weight"] = state["backbone.embedding.weight"]  # tied, as mamba_ssm saves it
    return state


def _reference_lm(state: dict[str, torch.Tensor], ids: list[int]) -> torch.Tensor:
    """mamba_ssm's MixerModel written from the formulas, one token at a time: (L, d_model) hidden states."""

    def w(name: str) -> torch.Tensor:
        return state["backbone." + name]

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight

    di, n, r = LM["d_inner"], LM["d_state"], LM["dt_rank"]
    hidden, residual = w("embedding.weight")[ids], None
    for i in range(LM["n_layer"]):
        m = f"layers.{i}.mixer."
        residual = hidden if residual is None else hidden + residual  # Block: add, then norm, then mix
        xz = rms(residual, w(f"layers.{i}.norm.weight")) @ w(m + "in_proj.weight").T
        x, z = xz[:, :di], xz[:, di:]
        taps, k = w(m + "conv1d.weight")[:, 0], LM["d_conv"]
        conv = [
            w(m + "conv1d.bias") + sum(taps[:, j] * x[t - k + 1 + j] for j in range(k) if t - k + 1 + j >= 0)
            for t in range(len(ids))
        ]  # causal depthwise conv: output t sees inputs t-k+1 .. t
        xc = F.silu(torch.stack(conv))
        x_dbl = xc @ w(m + "x_proj.weight").T
        dt, B, C = x_dbl[:, :r], x_dbl[:, r : r + n], x_dbl[:, r + n :]
        delta = F.softplus(dt @ w(m + "dt_proj.weight").T + w(m + "dt_proj.bias"))
        A = -torch.exp(w(m + "A_log"))
        h, ys = torch.zeros(di, n), []
        for t in range(len(ids)):
            h = torch.exp(delta[t, :, None] * A) * h + delta[t, :, None] * B[t] * xc[t, :, None]
            ys.append(h @ C[t] + w(m + "D") * xc[t])
        hidden = (torch.stack(ys) * F.silu(z)) @ w(m + "out_proj.weight").T
    return rms(hidden + residual, w("norm_f.weight"))


def _word_tokenizer(folder, words: list[str], first_id: int = 5, step: int = 2):
    """A WordLevel tokenizer.json (the `tokenizers` library's format) with ids unlike the word vocabulary's."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0} | {word: first_id + step * i for i, word in enumerate(sorted(words, reverse=True))}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return tokenizer


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("mamba-lm")
    state = _mamba_lm_state()
    (root / "mamba-130m").mkdir()
    torch.save(state, root / "mamba-130m" / "pytorch_model.bin")
    _, _, words = encode_phrases([attribute_phrase(a) for a in ATTRIBUTES])
    tokenizer = _word_tokenizer(root / "gpt-neox-20b", words)
    return {"root": root, "state": state, "tokenizer": tokenizer}


def _pretrained_model(pretrained: dict[str, object], **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    root = pretrained["root"]
    args = {"text_checkpoint": str(root / "mamba-130m"), "tokenizer": str(root / "gpt-neox-20b"), **kw}
    return create_model(
        "vim-s-text", len(ATTRIBUTES), img_size=IMG, attributes=list(ATTRIBUTES), **PRETRAINED, **args
    )


def test_mamba_checkpoint_and_tokenizer_load_into_the_text_encoder(pretrained: dict[str, object]) -> None:
    state, tokenizer = pretrained["state"], pretrained["tokenizer"]
    fusion = _pretrained_model(pretrained).backbone
    text = fusion.text.state_dict()
    assert len(text) == len(state) - 1  # every tensor but the (tied) LM head
    for key, value in state.items():
        if key != "lm_head.weight":
            assert torch.equal(text[key.removeprefix("backbone.")], value), key
    assert fusion.text_proj.in_features == LM["d_model"] and fusion.vocab is None
    for row, phrase in enumerate(fusion.phrases):  # the tokenizer's ids, right-padded and masked
        ids = tokenizer.encode(phrase).ids
        assert fusion.token_ids[row, : len(ids)].tolist() == ids and fusion.token_mask[row].sum() == len(ids)
        assert not fusion.token_mask[row, len(ids) :].any()
    with torch.no_grad():
        pooled = fusion.text(fusion.token_ids, fusion.token_mask)
    for row, phrase in enumerate(fusion.phrases):  # each phrase alone, unpadded, through the formulas
        want = _reference_lm(state, tokenizer.encode(phrase).ids).mean(0)
        torch.testing.assert_close(pooled[row], want, atol=1e-5, rtol=1e-4)

    lone = pretrained["root"] / "lone.safetensors"  # a weights file (not a folder), safetensors, no LM head
    save_file({k: v.clone() for k, v in state.items() if k != "lm_head.weight"}, str(lone))
    again = _pretrained_model(pretrained, text_checkpoint=str(lone)).backbone.text.state_dict()
    assert all(torch.equal(again[k], v) for k, v in text.items())


def test_vsf_layers_start_as_copies_of_the_language_models_last_two(pretrained: dict[str, object]) -> None:
    """The authors deep-copy mamba-130m's `backbone.layers[-2:]` as the VSF layers (models/base_block.py)."""
    state = pretrained["state"]
    fusion = _pretrained_model(pretrained).backbone
    assert len(fusion.fusion) == 2 and fusion.out_dim == LM["d_model"]  # fused at the LM's width
    for i, layer in enumerate(fusion.fusion):
        source = f"backbone.layers.{LM['n_layer'] - 2 + i}."
        copied = layer.state_dict()
        assert sorted(copied) == sorted(k[len(source) :] for k in state if k.startswith(source))
        for key, value in copied.items():
            assert torch.equal(value, state[source + key]), key
    with torch.no_grad():  # copies, not shared: the text encoder keeps its weights when the fusion changes
        for p in fusion.fusion.parameters():
            p.add_(1.0)
    assert torch.equal(fusion.text.layers[-1].mixer.D, state[f"backbone.layers.{LM['n_layer'] - 1}.mixer.D"])


def test_vsf_layers_that_cannot_be_copied_are_user_errors(pretrained: dict[str, object]) -> None:
    from partool.models.text_fusion import TextFusionBackbone
    from partool.models.vim import VimBackbone

    with pytest.raises(UserError, match="fusion_dim=64 but the text encoder is 16 wide"):
        _pretrained_model(pretrained, fusion_dim=64)
    root = pretrained["root"]
    with pytest.raises(UserError, match="fusion_depth 3 copies more layers than the text encoder's 2"):
        TextFusionBackbone(
            VimBackbone(IMG, embed_dim=32, depth=1), list(ATTRIBUTES), fusion_depth=3,
            text_checkpoint=root / "mamba-130m", tokenizer=root / "gpt-neox-20b",
        )  # fmt: skip


def test_tokenizer_alone_feeds_a_text_mamba_trained_from_scratch(pretrained: dict[str, object]) -> None:
    model = _pretrained_model(pretrained, text_checkpoint=None, text_dim=8, text_depth=1).train()
    embedding = model.backbone.text.embedding
    assert embedding.weight.shape == (5 + 2 * 23 + 1, 8)  # the largest id (24 words from 5 in steps of 2) + 1
    assert embedding.padding_idx is None  # id 0 is a real token ("[UNK]") of a tokenizer
    model(torch.randn(2, 3, *IMG)).square().mean().backward()
    used = model.backbone.token_ids[model.backbone.token_mask].unique()
    rows_with_grad = embedding.weight.grad.abs().sum(1).nonzero().flatten()
    assert torch.equal(rows_with_grad, used)  # the phrases' tokens learn, the padding does not


def test_bad_text_checkpoints_and_tokenizers_are_user_errors(pretrained, tmp_path, monkeypatch) -> None:
    root, state = pretrained["root"], pretrained["state"]
    tok = str(root / "gpt-neox-20b")
    phrases = [attribute_phrase(a) for a in ATTRIBUTES]

    def fails(match: str, checkpoint: object = None, tokenizer: object = tok, **kw: object) -> None:
        with pytest.raises(UserError, match=match):
            build_text_encoder(phrases, text_checkpoint=checkpoint, tokenizer=tokenizer, **kw)

    def saved(name: str, changed: dict[str, torch.Tensor]) -> str:
        torch.save(changed, tmp_path / name)
        return str(tmp_path / name)

    with pytest.raises(UserError, match="pass --model-arg tokenizer="):  # through the registry, as the CLI
        _pretrained_model(pretrained, tokenizer=None)
    fails("does not exist", tmp_path / "nowhere.bin")
    fails("folder without model.safetensors or pytorch_model.bin", tmp_path)
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    fails("cannot read text_checkpoint .*junk.bin", tmp_path / "junk.bin")
    without_a = {k: v for k, v in state.items() if k != "backbone.layers.0.mixer.A_log"}
    fails("has no backbone.layers.0.mixer.A_log", saved("no_a.bin", without_a))
    without_d = {k: v for k, v in state.items() if k != "backbone.layers.1.mixer.D"}
    fails("missing backbone.layers.1.mixer.D", saved("no_d.bin", without_d))
    bad = dict(state, **{"backbone.layers.1.mixer.x_proj.weight": torch.zeros(7, 32)})
    fails(
        r"backbone.layers.1.mixer.x_proj.weight has shape \(7, 32\), expected \(11, 32\)", saved("s.bin", bad)
    )
    mamba2 = dict(state, **{"backbone.layers.0.mixer.A_log": torch.zeros(4)})  # Mamba-2 keeps A per head
    fails("a Mamba-2 checkpoint", saved("m2.bin", mamba2))
    fails(
        "not a mamba_ssm MambaLMHeadModel name",
        saved("vit.bin", {"blocks.0.attn.qkv.weight": torch.zeros(3)}),
    )
    fails("text_dim=32 but text_checkpoint .* has 16", root / "mamba-130m", text_dim=32)
    _word_tokenizer(tmp_path / "far", encode_phrases(phrases)[2], first_id=40, step=3)  # ids 40..109
    fails(
        "gives token id 109 for 'a female pedestrian', past the 53 embedding rows",
        root / "mamba-130m",
        tmp_path / "far",
    )
    fails("no tokenizer.json there", root / "mamba-130m", tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{")
    fails("cannot read tokenizer", None, tmp_path / "broken")
    shape = {
        "vocab_size": 53,
        "d_model": 16,
        "n_layer": 2,
        "d_inner": 32,
        "d_state": 4,
        "d_conv": 4,
        "dt_rank": 1,
    }
    fails("pass one of text_checkpoint/text_shape", root / "mamba-130m", text_shape=shape)
    fails("text_shape needs the tokenizer", None, None, text_shape=shape)
    fails("is not a text encoder's sizes", None, text_shape={"d_model": 16})
    tokens = {"ids": [[1, 2]] * len(phrases), "mask": [[1, 0]] * len(phrases), "rows": 53}
    fails("pass one of tokenizer/text_tokens", None, tok, text_tokens=tokens)
    fails("text_tokens do not hold", None, None, text_tokens=dict(tokens, ids=[[1, 2]]))  # one phrase's
    fails("text_tokens do not hold", None, None, text_tokens=dict(tokens, rows=2))  # id 2 past 2 rows
    fails("text_tokens do not hold", None, None, text_tokens={"ids": "x"})
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # the optional dependency not installed
    fails("pip install tokenizers", None, tok)


@pytest.mark.slow
def test_a_run_with_the_pretrained_text_encoder_reloads_and_exports_folded(pretrained, tmp_path) -> None:
    """The run folder stands alone: with the language model and tokenizer it was trained from deleted, it
    rebuilds from the sizes and token ids its partool.json stores, and the run's weights win."""
    copies = tmp_path / "downloads"
    for name in ("mamba-130m", "gpt-neox-20b"):
        shutil.copytree(pretrained["root"] / name, copies / name)
    trained = _pretrained_model(
        pretrained, text_checkpoint=str(copies / "mamba-130m"), tokenizer=str(copies / "gpt-neox-20b")
    )
    with torch.no_grad():
        trained.backbone.text.norm_f.weight.mul_(1.5)  # stands for fine-tuning: the run's weights must win
    save_run(tmp_path / "run", trained, build_meta(trained, list(ATTRIBUTES), "synth"))
    shutil.rmtree(copies)
    model, meta = load_run(tmp_path / "run")
    kwargs = meta["model_kwargs"]
    assert "text_checkpoint" not in kwargs and "tokenizer" not in kwargs
    assert (
        kwargs["text_shape"]["d_model"] == LM["d_model"] and kwargs["text_shape"]["vocab_size"] == LM["vocab"]
    )
    for row, phrase in enumerate(trained.backbone.phrases):
        ids = pretrained["tokenizer"].encode(phrase).ids
        assert kwargs["text_tokens"]["ids"][row][: len(ids)] == ids and sum(
            kwargs["text_tokens"]["mask"][row]
        ) == len(ids)
    with torch.no_grad():
        assert torch.equal(model.backbone.folded, trained.eval().backbone.folded)
    path = export_onnx(model, tmp_path / "model.onnx", scan="plugin", meta=meta)
    proto = onnx.load(str(path))
    assert count_scan_nodes(proto) == 2 * PRETRAINED["depth"] + 2  # the LM's 2 scans folded away
    assert not any(t.dims and t.dims[0] == LM["vocab"] for t in proto.graph.initializer)  # no embedding
    folded = model.backbone.folded.numpy()
    constants = [numpy_helper.to_array(t) for t in proto.graph.initializer if np.prod(t.dims) == folded.size]
    assert any(np.array_equal(c.reshape(folded.shape), folded) for c in constants)
