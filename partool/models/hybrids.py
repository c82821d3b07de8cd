"""Hybrid Mamba-Transformer backbones of MambaPAR (arXiv 2407.10374, the figure of hybrid designs).

Each is a backbone for the shared PAR head: forward(images) -> tokens (B, T, out_dim). The Transformer is
timm's VisionTransformer (ViT-B/16 at full size; parameter names are timm's, so `--pretrained` loads a
timm/ImageNet ViT checkpoint into it), the Mamba blocks are partool's Vim blocks (bimamba v2, fp32 residual).
The authors' code (Event-AHU/OpenPAR, MambaPAR_Empirical_Study/models/hybrid_{1,2,3,5}.py) was read for
details; choices and deviations are listed per class.

Widths: the Vim blocks stay at Vim-S width (384) as in the authors' code, with Linear maps 768 <-> 384
where the streams meet, so a Vim-S checkpoint's blocks keep their shapes.

Checkpoints: as the authors, every hybrid starts from both a Vim-S and a ViT-B checkpoint,
`--pretrained vim=FILE --pretrained vit=FILE` (each hybrid's `checkpoint_parts` routes the Vim file to its
Vim blocks and stem, the ViT file to its Transformer); a bare `--pretrained FILE` loads the checkpoint root.
The frozen-ViT hybrids (MaHDFT, MaFormer, KDTM, MaKDF) also take `vit=RUN`, a partool vit-b PAR run, as the
authors' `ckpt_best_F1.pth` (train_hybrid.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from timm.layers import DropPath, trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.checkpoint_files import VIM_S, VIT_B
from partool.models.mamba import BiMamba, RMSNorm, linspace
from partool.models.par import BackboneOutput, StreamSpec
from partool.models.pretrained import CheckpointPart, KeyMap, StateDict, block_count, block_map
from partool.models.registry import register_model
from partool.models.vim import Block, PatchEmbed, VimBackbone, run_blocks


def _vit(
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


VIM_S_DEPTH, VIT_B_DEPTH = 24, 12  # the full stacks the authors' hybrids take their last blocks from


def _vim_layers(
    dim: int, depth: int, drop_path_rate: float, schedule_depth: int | None = None
) -> nn.ModuleList:
    """`depth` Vim blocks (bimamba v2 + RMSNorm) with Vim's stochastic-depth schedule (block i gets rates[i]).

    With `schedule_depth`, the blocks stand for the last `depth` of a Vim that deep and get their rates."""
    total = max(depth, schedule_depth or depth)
    rates = [0.0, *linspace(0.0, drop_path_rate, total)][total - depth : total]
    return nn.ModuleList(Block(dim, BiMamba(dim), rate, 1e-5) for rate in rates)


def _last_vit_blocks(
    img_size: tuple[int, int], dim: int, depth: int, heads: int, drop_path_rate: float
) -> nn.Sequential:
    """The last `depth` blocks of a timm ViT of max(depth, 12) blocks: timm's blocks, init and the
    stochastic-depth rates those positions have in the full stack (numbered from 0 here)."""
    vit = _vit(img_size, dim, max(depth, VIT_B_DEPTH), heads, drop_path_rate)
    return nn.Sequential(*vit.blocks[len(vit.blocks) - depth :])


PAR_VIT_B = "a vit-b PAR run folder (their ckpt_best_F1.pth)"  # train_hybrid.py, hybrids 4, 5, 7, 8
BOTH = (("vim", VIM_S), ("vit", VIT_B))
FROZEN = (("vim", VIM_S), ("vit", f"{PAR_VIT_B}, or {VIT_B}"))
STEM: KeyMap = [("patch_embed.", "patch_embed."), ("cls_token", "cls_token"), ("pos_embed", "pos_embed")]


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


def _check_images(images: Tensor, img_size: tuple[int, int]) -> None:
    if tuple(images.shape[-2:]) != tuple(img_size):
        h, w = img_size
        raise UserError(
            f"input images are {images.shape[-2]}x{images.shape[-1]} but the model was built for {h}x{w}"
        )


def _embed(vit: VisionTransformer, images: Tensor) -> Tensor:
    """timm's token embedding: patches, cls token and position embedding (as forward_features starts)."""
    return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))


class _ViTHybrid(nn.Module, ABC):
    """Common parts of the hybrids built around a full timm ViT: metadata and the checkpoint root."""

    family = "vit"

    def _setup(self, vit: VisionTransformer, img_size: tuple[int, int]) -> None:
        self.vit = vit
        self.img_size = tuple(img_size)
        self.grid_size = tuple(vit.patch_embed.grid_size)
        self.num_tokens = vit.patch_embed.num_patches + vit.num_prefix_tokens

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


class PaFusion(_ViTHybrid):
    """Parallel ViT and Vim streams; after each ViT block the Vim output (384) is projected and added.

    Per ViT block i: the ViT stream runs block i, the Vim stream runs vim_depth/vit_depth Vim blocks; then
    x = x + up_i(vim) and the Vim stream continues from down_i(x) (its fp32 residual carried on), as in
    the authors' hybrid_1. Choices: both streams keep a cls token first (the authors drop it; keeping it
    lets a timm ViT checkpoint load unchanged); the authors' final `x + up_final(down(x))` is left out, as
    x already holds the last Vim output. Output: ViT's final LayerNorm of x, (B, 1 + N, vit_dim).
    """

    def __init__(
        self,
        img_size: tuple[int, int],
        vit_dim: int = 768,
        vit_depth: int = 12,
        vit_heads: int = 12,
        embed_dim: int = 384,
        depth: int = 24,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if depth % vit_depth:
            raise UserError(f"pafusion needs depth ({depth}) to be a multiple of vit_depth ({vit_depth})")
        self._setup(_vit(img_size, vit_dim, vit_depth, vit_heads, drop_path_rate), img_size)
        self.out_dim = vit_dim
        self.per_block = depth // vit_depth
        self.patch_embed = PatchEmbed(self.img_size, 16, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.pos_embed, std=0.02)
        self.layers = _vim_layers(embed_dim, depth, drop_path_rate)
        self.up_projs = nn.ModuleList(nn.Linear(embed_dim, vit_dim) for _ in range(vit_depth))
        self.down_projs = nn.ModuleList(nn.Linear(vit_dim, embed_dim) for _ in range(vit_depth - 1))

    def forward(self, images: Tensor) -> Tensor:
        _check_images(images, self.img_size)
        x = _embed(self.vit, images)
        v = self.patch_embed(images)
        hidden = torch.cat([self.cls_token.expand(v.shape[0], -1, -1).to(v.dtype), v], 1) + self.pos_embed
        residual = None
        for i, block in enumerate(self.vit.blocks):
            x = block(x)
            hidden, residual = run_blocks(
                self.layers[i * self.per_block : (i + 1) * self.per_block], hidden, residual
            )
            x = x + self.up_projs[i](hidden.to(x.dtype))
            if i < len(self.down_projs):
                hidden = self.down_projs[i](x)
        return self.vit.norm(x)

    def _vim_part(self) -> CheckpointPart:
        """The Vim stem and all blocks; the position embedding gets its cls row first (the authors start it
        fresh, hybrid_1's pos_embed_vim)."""
        keys = prefixed("", same_blocks("layers.", len(self.layers)))
        return vim_part(self, "patch_embed, cls_token, pos_embed, layers", keys, self.grid_size)


class NASF(nn.Module):
    """N-ASF: a whole Vim, Linear(384 -> 768), then the last Transformer blocks of a ViT-B, no final norm.

    As the authors' hybrid_2: the Vim's tokens (middle cls token, after norm_f) feed ViT blocks directly,
    with no second patch or position embedding, and the blocks' raw output goes to the head. The blocks are
    the last `vit_depth` (4) of a timm ViT-B, with the drop-path rates of those positions: the authors run
    `blocks[-4:]` (`ViT.forward_by_blocks`; the `blocks[:6]` their class also keeps is never run).
    The authors' four blocks are ViT-B's ImageNet blocks 8-11: `--pretrained vit=FILE` loads the file's last
    blocks into them (a bare FILE loads the Vim, the checkpoint root).
    """

    family = "vim"

    def __init__(
        self,
        img_size: tuple[int, int],
        vit_dim: int = 768,
        vit_depth: int = 4,
        vit_heads: int = 12,
        embed_dim: int = 384,
        depth: int = 24,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.vim = VimBackbone(img_size, embed_dim=embed_dim, depth=depth, drop_path_rate=drop_path_rate)
        self.img_size, self.num_tokens, self.out_dim = self.vim.img_size, self.vim.num_tokens, vit_dim
        self.grid_size = self.vim.grid_size
        self.dim_proj = nn.Linear(embed_dim, vit_dim)
        self.blocks = _last_vit_blocks(self.img_size, vit_dim, vit_depth, vit_heads, drop_path_rate)

    def checkpoint_root(self) -> nn.Module:
        """Official Vim checkpoints load into the Mamba part."""
        return self.vim

    def checkpoint_parts(self) -> dict[str, CheckpointPart]:
        """vim= fills the whole Vim; vit= the Transformer blocks, from the file's last blocks (ViT-B's 8-11,
        the authors' `blocks[-4:]`)."""
        vim = CheckpointPart("vim", self.vim, grid_size=self.grid_size)
        keys = last_blocks("blocks.", "", len(self.blocks))
        return {"vim": vim, "vit": CheckpointPart("vit", self.blocks, "the last ViT blocks", keys=keys)}

    def forward(self, images: Tensor) -> Tensor:
        return self.blocks(self.dim_proj(self.vim(images).to(self.dim_proj.weight.dtype)))


class ASF(_ViTHybrid):
    """ASF: `groups` alternations of a run of ViT blocks and a run of Vim blocks, then the ViT LayerNorm.

    Group g: x = ViT blocks(x); the Vim stream continues from down_g(x) (fp32 residual carried across
    groups, as the authors' hybrid_3) and its output replaces x through up_g. The authors' code runs 4
    groups of one ViT block and 8 Vim layers, with overlapping Vim indices and a last ViT block; here the
    vit_depth ViT blocks and depth Vim blocks are split evenly (default 4 groups: 3 ViT + 6 Vim blocks).
    """

    def __init__(
        self,
        img_size: tuple[int, int],
        vit_dim: int = 768,
        vit_depth: int = 12,
        vit_heads: int = 12,
        embed_dim: int = 384,
        depth: int = 24,
        groups: int = 4,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if groups < 1 or vit_depth % groups or depth % groups:
            raise UserError(
                f"asf needs vit_depth ({vit_depth}) and depth ({depth}) divisible by groups ({groups})"
            )
        self._setup(_vit(img_size, vit_dim, vit_depth, vit_heads, drop_path_rate), img_size)
        self.out_dim, self.groups = vit_dim, groups
        self.layers = _vim_layers(embed_dim, depth, drop_path_rate)
        self.down_projs = nn.ModuleList(nn.Linear(vit_dim, embed_dim) for _ in range(groups))
        self.up_projs = nn.ModuleList(nn.Linear(embed_dim, vit_dim) for _ in range(groups))

    def forward(self, images: Tensor) -> Tensor:
        _check_images(images, self.img_size)
        x = _embed(self.vit, images)
        nt, nm = len(self.vit.blocks) // self.groups, len(self.layers) // self.groups
        residual = None
        for g in range(self.groups):
            for block in self.vit.blocks[g * nt : (g + 1) * nt]:
                x = block(x)
            hidden = self.down_projs[g](x)
            hidden, residual = run_blocks(self.layers[g * nm : (g + 1) * nm], hidden, residual)
            x = self.up_projs[g](hidden.to(x.dtype))
        return self.vit.norm(x)

    def _vim_part(self) -> CheckpointPart:
        """The Vim blocks, in order (ASF has no Vim stem: its Vim blocks read the ViT's tokens)."""
        return vim_part(self, "layers", same_blocks("layers.", len(self.layers)))


class MaHDFT(_ViTHybrid):
    """MaHDFT: a frozen ViT; every block's tokens pooled by a 1x1 Conv1d (T -> T // 4), joined, projected
    768 -> 384 and fused by 4 Vim blocks and norm_f; a 1x1 Conv1d maps the joined tokens back to T; output
    (B, T, 384).

    The fusion is what the authors' `forward_by_layers` runs: the last 4 blocks of a Vim-S (`layers[-4:]`),
    then norm_f(residual + drop_path(hidden)); the `depth` (4) blocks get the drop-path rates of the last
    blocks of a 24-block Vim.

    "Frozen": every ViT parameter has requires_grad=False and the ViT stays in eval mode (no stochastic
    depth), so the optimizer (which takes only trainable parameters) leaves it as loaded.
    The ViT's own PAR head: the ViT's final tokens (timm's forward_features, as the `vit-b` model's) are the
    `fused_stream`, so PARModel gives them a second PARHead and the output logits are the mean of that
    head's and the Vim branch's, as the paper. The authors freeze that head too, as they load it from a
    trained ViT-B PAR run; here it is trained with the rest (`vit=RUN` loads that run's ViT, not its head).
    The authors pool 11 of the 12 blocks (the last is never run, their ViT head reads block 11 without the
    final norm); here all vit_depth blocks are pooled, as the paper's text says.
    The authors' 4 Vim blocks and norm_f are Vim-S's last ImageNet ones, as `--pretrained vim=FILE` loads
    them (a bare FILE loads the ViT, the checkpoint root). Differences: their Vim branch
    has its own head at width 384 (Linear(384 -> 1) per attribute); here PARModel's Linear(384 -> 768)
    neck and the 768-wide head follow, since every registry model's head, and `PARModel.features` that
    text fusion and distillation read, are 768 wide. Neck then per-attribute Linear(768 -> 1) is again an
    affine map per attribute of the same 384 features, with 296k more parameters.
    """

    def __init__(
        self,
        img_size: tuple[int, int],
        vit_dim: int = 768,
        vit_depth: int = 12,
        vit_heads: int = 12,
        embed_dim: int = 384,
        depth: int = 4,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self._setup(_vit(img_size, vit_dim, vit_depth, vit_heads, 0.0), img_size)
        self.vit.requires_grad_(False)
        self.vit.eval()
        self.out_dim = embed_dim
        self.fused_stream = StreamSpec(self.num_tokens, vit_dim)
        pooled = self.num_tokens // 4
        if pooled < 1:
            raise UserError(f"mahdft needs at least 4 tokens to pool, the image gives {self.num_tokens}")
        self.pools = nn.ModuleList(nn.Conv1d(self.num_tokens, pooled, 1) for _ in range(vit_depth))
        self.dim_proj = nn.Linear(vit_dim, embed_dim)
        self.layers = _vim_layers(embed_dim, depth, drop_path_rate, VIM_S_DEPTH)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm_f = RMSNorm(embed_dim)
        self.final_pool = nn.Conv1d(pooled * vit_depth, self.num_tokens, 1)

    def train(self, mode: bool = True) -> MaHDFT:
        super().train(mode)
        self.vit.eval()  # frozen: always the inference behaviour
        return self

    def forward(self, images: Tensor) -> BackboneOutput:
        _check_images(images, self.img_size)
        x = _embed(self.vit, images)
        joined = []
        for block, pool in zip(self.vit.blocks, self.pools, strict=True):
            x = block(x)
            joined.append(pool(x))
        hidden, residual = self.dim_proj(torch.cat(joined, 1)), None
        hidden, residual = run_blocks(self.layers, hidden, residual)
        fused = self.norm_f(residual + self.drop_path(hidden).float())
        tokens = self.final_pool(fused.to(hidden.dtype))
        return BackboneOutput(tokens, fused_tokens=self.vit.norm(x))

    def _vim_part(self) -> CheckpointPart:
        """The file's last blocks and norm_f, as the authors' `layers[-4:]` of Vim-S."""
        blocks = last_blocks("layers.", "layers.", len(self.layers))
        return vim_part(self, "layers, norm_f", lambda state: [*blocks(state), ("norm_f.", "norm_f.")])


@register_model(
    "pafusion",
    "vit",
    "PaFusion hybrid: ViT-B/16 and Vim-S blocks in parallel, outputs added per block",
    recipe="hybrid",
    checkpoints=BOTH,
)
def pafusion(
    img_size: tuple[int, int] = (224, 224),
    vit_dim: int = 768,
    vit_depth: int = 12,
    vit_heads: int = 12,
    embed_dim: int = 384,
    depth: int = 24,
    drop_path_rate: float = 0.1,
) -> PaFusion:
    return PaFusion(img_size, vit_dim, vit_depth, vit_heads, embed_dim, depth, drop_path_rate)


@register_model(
    "nasf",
    "vim",
    "N-ASF hybrid: all Vim-S blocks, then the last 4 ViT-B/16 Transformer blocks",
    recipe="hybrid",
    checkpoints=BOTH,
)
def nasf(
    img_size: tuple[int, int] = (224, 224),
    vit_dim: int = 768,
    vit_depth: int = 4,
    vit_heads: int = 12,
    embed_dim: int = 384,
    depth: int = 24,
    drop_path_rate: float = 0.1,
) -> NASF:
    return NASF(img_size, vit_dim, vit_depth, vit_heads, embed_dim, depth, drop_path_rate)


@register_model(
    "asf",
    "vit",
    "ASF hybrid: runs of ViT-B/16 blocks alternating with runs of Vim-S blocks",
    recipe="hybrid",
    checkpoints=BOTH,
)
def asf(
    img_size: tuple[int, int] = (224, 224),
    vit_dim: int = 768,
    vit_depth: int = 12,
    vit_heads: int = 12,
    embed_dim: int = 384,
    depth: int = 24,
    groups: int = 4,
    drop_path_rate: float = 0.1,
) -> ASF:
    return ASF(img_size, vit_dim, vit_depth, vit_heads, embed_dim, depth, groups, drop_path_rate)


@register_model(
    "mahdft",
    "vit",
    "MaHDFT hybrid: frozen ViT-B/16, every block's tokens pooled, joined and fused by 4 Vim-S blocks",
    recipe="hybrid",
    checkpoints=FROZEN,
)
def mahdft(
    img_size: tuple[int, int] = (224, 224),
    vit_dim: int = 768,
    vit_depth: int = 12,
    vit_heads: int = 12,
    embed_dim: int = 384,
    depth: int = 4,
    drop_path_rate: float = 0.1,
) -> MaHDFT:
    return MaHDFT(img_size, vit_dim, vit_depth, vit_heads, embed_dim, depth, drop_path_rate)
