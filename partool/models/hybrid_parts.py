"""The parts the hybrid backbones (`partool.models.hybrids`, `partool.models.hybrids_guided`) are built from.

One home for what several hybrids share, so each hybrid module holds only its own wiring: the timm ViT
trunk and its token embedding, Vim blocks with Vim's stochastic-depth schedule and their split into runs
(one run per ViT block or group), the Vim stem (patches, a leading cls token, a position embedding), the
base classes of the hybrids built around a whole (optionally frozen) ViT, the routing of a Vim-S
checkpoint's blocks and stem into each hybrid's layout (`checkpoint_parts`), and their registration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.checkpoint_files import VIM_S, VIT_B
from partool.models.mamba import BiMamba, linspace
from partool.models.pretrained import CheckpointPart, KeyMap, StateDict, block_count, block_map
from partool.models.registry import register_model
from partool.models.vim import Block, PatchEmbed

Blocks = TypeVar("Blocks", nn.ModuleList, nn.Sequential)
Hybrid = TypeVar("Hybrid", bound=type[nn.Module])

PAR_VIT_B = "a vit-b PAR run folder (their ckpt_best_F1.pth)"  # train_hybrid.py, hybrids 4, 5, 7, 8
BOTH = (("vim", VIM_S), ("vit", VIT_B))  # the registry's `checkpoints` of the hybrids that train everything
FROZEN = (("vim", VIM_S), ("vit", f"{PAR_VIT_B}, or {VIT_B}"))  # ... and of the frozen-ViT ones
STEM: KeyMap = [("patch_embed.", "patch_embed."), ("cls_token", "cls_token"), ("pos_embed", "pos_embed")]


def register_hybrid(
    name: str, description: str, checkpoints: tuple[tuple[str, str], ...]
) -> Callable[[Hybrid], Hybrid]:
    """Class decorator: register a hybrid under `name`, with its class's checkpoint `family`, the authors'
    hybrid recipe (train_hybrid.sh) and the `checkpoints` it starts from (`BOTH` or `FROZEN`)."""

    def wrap(cls: Hybrid) -> Hybrid:
        return register_model(name, cls.family, description, recipe="hybrid", checkpoints=checkpoints)(cls)

    return wrap


def vit_trunk(
    img_size: tuple[int, int], dim: int, depth: int, heads: int, drop_path_rate: float
) -> VisionTransformer:
    """A timm ViT/16 without classifier (ViT-B/16 at dim 768, depth 12, 12 heads)."""
    h, w = img_size
    if h % 16 or w % 16 or h <= 0 or w <= 0:
        raise UserError(
            f"image size {h}x{w} is not a positive multiple of the patch size 16; change --img-size"
        )
    if dim % heads:
        raise UserError(f"vit_dim {dim} is not divisible by vit_heads {heads}")
    return VisionTransformer(
        img_size=(h, w), patch_size=16, embed_dim=dim, depth=depth, num_heads=heads, num_classes=0,
        drop_path_rate=drop_path_rate,
    )  # fmt: skip


def vit_embed(vit: VisionTransformer, images: Tensor) -> Tensor:
    """timm's token embedding: patches, cls token and position embedding (as forward_features starts)."""
    return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))


def check_images(images: Tensor, img_size: tuple[int, int]) -> None:
    """UserError when `images` are not the size the model was built for (timm's ViT would resample)."""
    if tuple(images.shape[-2:]) != tuple(img_size):
        h, w = img_size
        raise UserError(
            f"input images are {images.shape[-2]}x{images.shape[-1]} but the model was built for {h}x{w}"
        )


def vim_layers(
    dim: int, depth: int, drop_path_rate: float, schedule_depth: int | None = None
) -> nn.ModuleList:
    """`depth` Vim blocks (bimamba v2 + RMSNorm) with Vim's stochastic-depth schedule (block i gets rates[i]).

    With `schedule_depth`, the blocks stand for the last `depth` of a Vim that deep and get their rates."""
    total = max(depth, schedule_depth or depth)
    rates = [0.0, *linspace(0.0, drop_path_rate, total)][total - depth : total]
    return nn.ModuleList(Block(dim, BiMamba(dim), rate, 1e-5) for rate in rates)


def check_runs(name: str, depth: int, vit_depth: int) -> None:
    """UserError unless the `depth` Vim blocks split into one run of at least one block per ViT block."""
    if depth < vit_depth or depth % vit_depth:
        raise UserError(f"{name} needs depth ({depth}) to be a positive multiple of vit_depth ({vit_depth})")


def block_runs(blocks: Blocks, count: int) -> list[Blocks]:
    """`blocks` cut into `count` consecutive runs of equal length (the Vim blocks of each ViT block or group)."""
    size = len(blocks) // count
    return [blocks[i * size : (i + 1) * size] for i in range(count)]


def add_vim_stem(module: nn.Module, img_size: tuple[int, int], dim: int) -> None:
    """Give `module` a Vim stem under Vim's names (patch_embed, cls_token, pos_embed): patches at the Vim
    width, a cls token first (aligned with the ViT's tokens, so the streams can be mixed or compared token by
    token) and a position embedding. PaFusion holds it at its root, the others as a `VimStem`."""
    module.patch_embed = PatchEmbed(img_size, 16, dim)
    module.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    module.pos_embed = nn.Parameter(torch.zeros(1, module.patch_embed.num_patches + 1, dim))
    trunc_normal_(module.cls_token, std=0.02)
    trunc_normal_(module.pos_embed, std=0.02)


def vim_stem_tokens(module: nn.Module, images: Tensor) -> Tensor:
    """The tokens of the stem `add_vim_stem` gave `module`: (B, 1 + N, dim), cls first."""
    v = module.patch_embed(images)
    return torch.cat([module.cls_token.expand(v.shape[0], -1, -1).to(v.dtype), v], 1) + module.pos_embed


class VimStem(nn.Module):
    """The Vim stream's own tokens as a module (`add_vim_stem`)."""

    def __init__(self, img_size: tuple[int, int], dim: int) -> None:
        super().__init__()
        add_vim_stem(self, img_size, dim)

    def forward(self, images: Tensor) -> Tensor:
        return vim_stem_tokens(self, images)


def vim_part(
    root: nn.Module, what: str, keys: Callable[[StateDict], KeyMap], grid_size: tuple[int, int] | None = None
) -> CheckpointPart:
    """A hybrid's Vim part: the Vim-S file's blocks (and stem, with a leading cls token) routed by `keys`."""
    return CheckpointPart("vim", root, what, grid_size=grid_size, cls_first=True, keys=keys)


def same_blocks(dst: str, count: int) -> Callable[[StateDict], KeyMap]:
    """File blocks 0..count-1 into `dst` 0..count-1."""
    return lambda state: block_map("layers.", dst, list(range(count)))


def every_nth_block(dst: str, count: int) -> Callable[[StateDict], KeyMap]:
    """`count` file blocks evenly spaced from the first (a 24-block file into 12: the even ones)."""

    def keys(state: StateDict) -> KeyMap:
        step = max(1, block_count(state, "layers.") // count)
        return block_map("layers.", dst, [j * step for j in range(count)])

    return keys


def last_blocks(src: str, dst: str, count: int) -> Callable[[StateDict], KeyMap]:
    """The file's last `count` blocks under `src` into `dst` 0..count-1."""

    def keys(state: StateDict) -> KeyMap:
        total = block_count(state, src)
        return block_map(src, dst, list(range(max(0, total - count), total)))

    return keys


def prefixed(stem: str, keys: Callable[[StateDict], KeyMap]) -> Callable[[StateDict], KeyMap]:
    """`keys` plus the Vim stem (patch_embed, cls_token, pos_embed) under `stem`."""
    return lambda state: [(src, stem + dst) for src, dst in STEM] + keys(state)


class ViTHybrid(nn.Module, ABC):
    """Common parts of the hybrids built around a full timm ViT: metadata and the checkpoint root."""

    family = "vit"

    def _setup(self, vit: VisionTransformer, img_size: tuple[int, int]) -> None:
        self.vit = vit
        self.img_size = tuple(img_size)
        self.grid_size = tuple(vit.patch_embed.grid_size)
        self.num_tokens = vit.patch_embed.num_patches + vit.num_prefix_tokens

    def _embed(self, images: Tensor) -> Tensor:
        """The ViT's input tokens (`vit_embed`) of images of the size the model was built for."""
        check_images(images, self.img_size)
        return vit_embed(self.vit, images)

    def checkpoint_root(self) -> nn.Module:
        """Official (timm) ViT checkpoints load into the Transformer."""
        return self.vit

    def checkpoint_parts(self) -> dict[str, CheckpointPart]:
        """`--pretrained vit=` fills the Transformer, `vim=` the Vim part (`_vim_part`)."""
        vit = CheckpointPart(
            "vit", self.vit, grid_size=self.grid_size, prefix_tokens=self.vit.num_prefix_tokens
        )
        return {"vim": self._vim_part(), "vit": vit}

    @abstractmethod
    def _vim_part(self) -> CheckpointPart:
        """The blocks a Vim-S checkpoint fills: each hybrid lays out its Vim part differently."""


class FrozenViTHybrid(ViTHybrid):
    """A hybrid whose ViT is frozen: no gradients, always in eval mode (no stochastic depth), built without
    drop path, so the optimizer (which takes only trainable parameters) leaves it as loaded."""

    def _setup_frozen(self, img_size: tuple[int, int], dim: int, depth: int, heads: int) -> None:
        self._setup(vit_trunk(img_size, dim, depth, heads, 0.0), img_size)
        self.vit.requires_grad_(False)
        self.vit.eval()

    def train(self, mode: bool = True) -> FrozenViTHybrid:
        super().train(mode)
        self.vit.eval()  # frozen: always the inference behaviour
        return self
