"""Hybrids start from both checkpoints: `--pretrained vim=FILE --pretrained vit=FILE|RUN`, each routed to its
part; the hybrid recipe; `partool models` saying what each model expects."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from partool.artifacts import build_meta
from partool.errors import UserError
from partool.models import create_model, load_checkpoints, model_info
from partool.models.pretrained import checkpoint_records
from partool.models.run_folder import save_run
from partool.models.vim import VimBackbone
from partool.train.recipe import recipe_for

IMG = (64, 32)  # 4 x 2 patches; Vim's middle cls token sits at index 4
TINY = {"vit_dim": 32, "vit_depth": 2, "vit_heads": 2, "embed_dim": 16, "depth": 2, "drop_path_rate": 0.0}
FILE_DEPTH = 4  # the fake files are deeper than the tiny hybrids, as Vim-S (24) and ViT-B (12) are


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.randn(v.shape) for k, v in state.items()}


def vim_file(tmp_path, dim: int = 16) -> tuple[str, dict[str, torch.Tensor]]:
    """An official-layout Vim checkpoint (`{"model": state}`, ImageNet head, middle cls token), random values."""
    state = _random(VimBackbone(IMG, embed_dim=dim, depth=FILE_DEPTH).state_dict())
    state |= {"head.weight": torch.randn(1000, dim), "head.bias": torch.randn(1000)}
    path = tmp_path / f"vim{dim}.pth"
    torch.save({"model": state}, path)
    return str(path), state


def vit_file(tmp_path) -> tuple[str, dict[str, torch.Tensor]]:
    """A timm-layout ViT checkpoint (plain state dict with its classifier), random values."""
    vit = VisionTransformer(img_size=IMG, patch_size=16, embed_dim=32, depth=FILE_DEPTH, num_heads=2)
    state = _random(vit.state_dict())
    path = tmp_path / "vit.pth"
    torch.save(state, path)
    return str(path), state


def _tiny(name: str, img_size: tuple[int, int] = IMG) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {**TINY, "groups": 2} if name == "asf" else TINY
    return create_model(name, 5, img_size=img_size, **kw)


def _cls_first(pe: torch.Tensor) -> torch.Tensor:
    """Vim's middle-cls position embedding (8 patches, cls at 4) with the cls row first."""
    return torch.cat([pe[:, 4:5], pe[:, :4], pe[:, 5:]], 1)


def _vim_expected(name: str, vim: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model key -> the Vim file tensor it must equal after loading (written out per hybrid)."""
    blocks = {
        "pafusion": {"layers.0.": 0, "layers.1.": 1},
        "nasf": {"vim.layers.0.": 0, "vim.layers.1.": 1},
        "asf": {"layers.0.": 0, "layers.1.": 1},
        "mahdft": {"layers.0.": 2, "layers.1.": 3},  # the file's last blocks
        "maformer": {"layers.0.": 0, "layers.1.": 2},  # evenly spaced (Vim-S's even ones)
        "adamtf": {"layers.0.": 0, "layers.1.": 1},
        "kdtm": {"vim.layers.0.": 0, "vim.layers.1.": 1},
        "makdf": {"layers.0.": 0, "layers.1.": 1, "aux_layers.0.": 0, "aux_layers.1.": 2},
    }[name]
    out = {}
    for dst, src in blocks.items():
        for suffix in ("mixer.in_proj.weight", "mixer.A_b_log", "mixer.conv1d_b.weight", "norm.weight"):
            out[f"backbone.{dst}{suffix}"] = vim[f"layers.{src}.{suffix}"]
    stem = {"pafusion": "", "adamtf": "stem.", "makdf": "stem.", "nasf": "vim.", "kdtm": "vim."}.get(name)
    if stem is not None:
        out[f"backbone.{stem}patch_embed.proj.weight"] = vim["patch_embed.proj.weight"]
        out[f"backbone.{stem}cls_token"] = vim["cls_token"]
        middle = name in ("nasf", "kdtm")  # a whole Vim keeps its middle cls token
        out[f"backbone.{stem}pos_embed"] = vim["pos_embed"] if middle else _cls_first(vim["pos_embed"])
    if name in ("mahdft", "nasf", "kdtm"):
        out[f"backbone.{'vim.' if name != 'mahdft' else ''}norm_f.weight"] = vim["norm_f.weight"]
    return out


def _vit_expected(name: str, vit: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model key -> the ViT file tensor it must equal after loading."""
    if name == "nasf":  # the Transformer blocks are the file's last two
        return {
            f"backbone.blocks.{j}.attn.qkv.weight": vit[f"blocks.{j + 2}.attn.qkv.weight"] for j in (0, 1)
        }
    out = {
        f"backbone.vit.blocks.{j}.{s}": vit[f"blocks.{j}.{s}"]
        for j in (0, 1)
        for s in ("attn.qkv.weight", "mlp.fc1.bias")
    }
    for key in ("pos_embed", "cls_token", "patch_embed.proj.weight", "norm.weight"):
        out[f"backbone.vit.{key}"] = vit[key]
    return out


HYBRIDS = ("pafusion", "nasf", "asf", "mahdft", "maformer", "adamtf", "kdtm", "makdf")


@pytest.mark.parametrize("name", HYBRIDS)
def test_both_checkpoints_load_into_their_parts(tmp_path, name: str) -> None:
    (vim_path, vim), (vit_path, vit) = vim_file(tmp_path), vit_file(tmp_path)
    model = _tiny(name)
    records = load_checkpoints(model, [f"vim={vim_path}", f"vit={vit_path}"], name)
    got = model.state_dict()
    for key, want in {**_vim_expected(name, vim), **_vit_expected(name, vit)}.items():
        assert torch.equal(got[key], want), key
    assert [r["role"] for r in records] == ["vim", "vit"] and records[0]["file"] == vim_path
    assert records[1]["into"] == ("backbone.blocks" if name == "nasf" else "backbone.vit")


def test_a_bare_file_keeps_its_meaning_and_the_record_names_the_part(tmp_path) -> None:
    vit_path, vit = vit_file(tmp_path)
    model = _tiny("pafusion")
    load_checkpoints(model, vit_path, "pafusion")  # a str: the form older last.pt files hold
    assert torch.equal(model.backbone.vit.blocks[1].attn.qkv.weight, vit["blocks.1.attn.qkv.weight"])
    records = checkpoint_records(model, [vit_path], "pafusion")
    assert records == [
        {"role": "vit", "file": vit_path, "source": "checkpoint", "into": "backbone.vit", "keys": "all"}
    ]


def test_single_backbone_models_take_their_family_as_a_role(tmp_path) -> None:
    vim_path, vim = vim_file(tmp_path)
    torch.manual_seed(0)
    model = create_model("vim-s", 5, img_size=IMG, embed_dim=16, depth=2)
    load_checkpoints(model, [f"vim={vim_path}"], "vim-s")
    assert torch.equal(model.backbone.layers[1].mixer.in_proj.weight, vim["layers.1.mixer.in_proj.weight"])


@pytest.mark.parametrize(
    ("model", "specs", "message"),
    [
        ("pafusion", ["vmb={vim}"], "unknown part 'vmb'"),
        ("vim-s", ["vit={vit}"], "has no vit part"),
        ("pafusion", ["vim={vit}"], "is a vit checkpoint, but the vim part takes a vim checkpoint"),
        ("pafusion", ["vim={wide}"], "does not fit this model (vim part)"),
        ("pafusion", ["{vit}", "vit={vit}"], "two files go to the vit part"),
    ],
)
def test_bad_pretrained_values_are_user_errors(tmp_path, model: str, specs: list[str], message: str) -> None:
    paths = {"vim": vim_file(tmp_path)[0], "vit": vit_file(tmp_path)[0], "wide": vim_file(tmp_path, 24)[0]}
    kw = {"embed_dim": 16, "depth": 2} if model == "vim-s" else TINY
    net = create_model(model, 5, img_size=IMG, **kw)
    with pytest.raises(UserError) as err:
        load_checkpoints(net, [s.format(**paths) for s in specs], model)
    assert message in str(err.value) and "\n" not in str(err.value)


def _vit_run(tmp_path, model: str = "vit-b") -> tuple[str, torch.nn.Module]:
    torch.manual_seed(1)
    net = create_model(model, 5, img_size=IMG, depth=2, embed_dim=32, num_heads=2)
    run = tmp_path / f"{model}-run"
    save_run(run, net, build_meta(net, [f"a{i}" for i in range(5)], "synth", 0.5))
    return str(run), net


@pytest.mark.parametrize("name", ["maformer", "mahdft", "kdtm", "makdf"])
def test_a_vit_b_run_folder_fills_the_frozen_vit(tmp_path, name: str) -> None:
    run, trained = _vit_run(tmp_path)
    model = _tiny(name)
    (record,) = load_checkpoints(model, [f"vit={run}"], name)
    for (key, got), want in zip(
        model.backbone.vit.state_dict().items(), trained.backbone.vit.state_dict().values(), strict=True
    ):
        assert torch.equal(got, want), key
    assert record["source"] == "run" and record["missing"] == 0
    assert not any(p.requires_grad for p in model.backbone.vit.parameters())  # still frozen


def test_a_run_folder_must_be_a_vit_b_at_the_model_input_size(tmp_path) -> None:
    run, _ = _vit_run(tmp_path, "vit-s")
    with pytest.raises(UserError, match="only from a vit-b run"):
        load_checkpoints(_tiny("maformer"), [f"vit={run}"], "maformer")
    run, _ = _vit_run(tmp_path)
    with pytest.raises(UserError, match="trained at 64x32, the model is built for 32x32"):
        load_checkpoints(_tiny("maformer", (32, 32)), [f"vit={run}"], "maformer")


def test_hybrids_get_the_hybrid_recipe_through_the_registry() -> None:
    for name in HYBRIDS:
        assert model_info(name).recipe == "hybrid", name
    hybrid = recipe_for(model_info("makdf").recipe)
    assert (hybrid.batch_size, hybrid.lr, hybrid.epochs) == (64, 2.5e-4, 60)
    assert "train_hybrid.sh" in hybrid.source
    assert model_info("vim-s").recipe == "vim" and model_info("vit-b").recipe == "vit"
    assert recipe_for(model_info("vit-b").recipe).batch_size == 128


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "partool", *args], capture_output=True, text=True, timeout=300
    )


def test_train_cli_refuses_an_unknown_role_with_exit_2(tmp_path) -> None:
    result = _cli(
        "train", "--model", "pafusion", "--data", "synth:8", "--out", str(tmp_path / "run"),
        "--pretrained", "vmb=x.pth", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown part 'vmb'" in lines[0] and "Traceback" not in result.stderr


def test_partool_json_records_the_parts_and_resume_keeps_them(tmp_path) -> None:
    from partool.artifacts import read_meta
    from partool.train.loop import TrainConfig, train

    vim_path, vit_path = vim_file(tmp_path)[0], vit_file(tmp_path)[0]
    config = TrainConfig(
        model="pafusion", data="synth:8", out=tmp_path / "run", epochs=2, batch_size=8, img_size=IMG,
        model_kwargs=TINY, workers=0, progress=False, pretrained=[f"vim={vim_path}", f"vit={vit_path}"],
        stop_after_epoch=1,
    )  # fmt: skip
    assert not train(config).finished
    result = train(
        TrainConfig(model="", data="", out=tmp_path / "run", resume=True, workers=0, progress=False)
    )
    assert result.finished and "train_hybrid.sh" in result.recipe["source"] and result.recipe["lr"] == 2.5e-4
    training = read_meta(tmp_path / "run")[1]["training"]
    assert training["config"]["pretrained"] == [f"vim={vim_path}", f"vit={vit_path}"]
    assert [(r["role"], r["file"], r["into"]) for r in training["pretrained"]] == [
        ("vim", vim_path, "backbone"),
        ("vit", vit_path, "backbone.vit"),
    ]
