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

import torch
from timm.layers import DropPath
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.hybrid_parts import (
    BOTH,
    FROZEN,
    FrozenViTHybrid,
    ViTHybrid,
    add_vim_stem,
    block_runs,
    last_blocks,
    prefixed,
    register_hybrid,
    same_blocks,
    vim_layers,
    vim_part,
    vim_stem_tokens,
    vit_trunk,
)
from partool.models.mamba import RMSNorm
from partool.models.par import BackboneOutput, StreamSpec
from partool.models.pretrained import CheckpointPart
from partool.models.vim import VimBackbone, run_blocks

VIM_S_DEPTH, VIT_B_DEPTH = 24, 12  # the full stacks the authors' hybrids take their last blocks from


def _last_vit_blocks(
    img_size: tuple[int, int], dim: int, depth: int, heads: int, drop_path_rate: float
) -> nn.Sequential:
    """The last `depth` blocks of a timm ViT of max(depth, 12) blocks: timm's blocks, init and the
    stochastic-depth rates those positions have in the full stack (numbered from 0 here)."""
    vit = vit_trunk(img_size, dim, max(depth, VIT_B_DEPTH), heads, drop_path_rate)
    return nn.Sequential(*vit.blocks[len(vit.blocks) - depth :])


@register_hybrid(
    "pafusion",
    "PaFusion hybrid: ViT-B/16 and Vim-S blocks in parallel, outputs added per block",
    BOTH,
)
class PaFusion(ViTHybrid):
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
        self._setup(vit_trunk(img_size, vit_dim, vit_depth, vit_heads, drop_path_rate), img_size)
        self.out_dim = vit_dim
        add_vim_stem(self, self.img_size, embed_dim)  # at the root: patch_embed, cls_token, pos_embed
        self.layers = vim_layers(embed_dim, depth, drop_path_rate)
        self.up_projs = nn.ModuleList(nn.Linear(embed_dim, vit_dim) for _ in range(vit_depth))
        self.down_projs = nn.ModuleList(nn.Linear(vit_dim, embed_dim) for _ in range(vit_depth - 1))

    def forward(self, images: Tensor) -> Tensor:
        x = self._embed(images)
        hidden, residual = vim_stem_tokens(self, images), None
        runs = block_runs(self.layers, len(self.vit.blocks))
        for i, (block, run) in enumerate(zip(self.vit.blocks, runs, strict=True)):
            x = block(x)
            hidden, residual = run_blocks(run, hidden, residual)
            x = x + self.up_projs[i](hidden.to(x.dtype))
            if i < len(self.down_projs):
                hidden = self.down_projs[i](x)
        return self.vit.norm(x)

    def _vim_part(self) -> CheckpointPart:
        """The Vim stem and all blocks; the position embedding gets its cls row first (the authors start it
        fresh, hybrid_1's pos_embed_vim)."""
        keys = prefixed("", same_blocks("layers.", len(self.layers)))
        return vim_part(self, "patch_embed, cls_token, pos_embed, layers", keys, self.grid_size)


@register_hybrid(
    "nasf",
    "N-ASF hybrid: all Vim-S blocks, then the last 4 ViT-B/16 Transformer blocks",
    BOTH,
)
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


@register_hybrid(
    "asf",
    "ASF hybrid: runs of ViT-B/16 blocks alternating with runs of Vim-S blocks",
    BOTH,
)
class ASF(ViTHybrid):
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
        self._setup(vit_trunk(img_size, vit_dim, vit_depth, vit_heads, drop_path_rate), img_size)
        self.out_dim, self.groups = vit_dim, groups
        self.layers = vim_layers(embed_dim, depth, drop_path_rate)
        self.down_projs = nn.ModuleList(nn.Linear(vit_dim, embed_dim) for _ in range(groups))
        self.up_projs = nn.ModuleList(nn.Linear(embed_dim, vit_dim) for _ in range(groups))

    def forward(self, images: Tensor) -> Tensor:
        x = self._embed(images)
        residual = None
        vit_runs, vim_runs = block_runs(self.vit.blocks, self.groups), block_runs(self.layers, self.groups)
        for g, (vit_run, vim_run) in enumerate(zip(vit_runs, vim_runs, strict=True)):
            x = vit_run(x)
            hidden = self.down_projs[g](x)
            hidden, residual = run_blocks(vim_run, hidden, residual)
            x = self.up_projs[g](hidden.to(x.dtype))
        return self.vit.norm(x)

    def _vim_part(self) -> CheckpointPart:
        """The Vim blocks, in order (ASF has no Vim stem: its Vim blocks read the ViT's tokens)."""
        return vim_part(self, "layers", same_blocks("layers.", len(self.layers)))


@register_hybrid(
    "mahdft",
    "MaHDFT hybrid: frozen ViT-B/16, every block's tokens pooled, joined and fused by 4 Vim-S blocks",
    FROZEN,
)
class MaHDFT(FrozenViTHybrid):
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
        self._setup_frozen(img_size, vit_dim, vit_depth, vit_heads)
        self.out_dim = embed_dim
        self.fused_stream = StreamSpec(self.num_tokens, vit_dim)
        pooled = self.num_tokens // 4
        if pooled < 1:
            raise UserError(f"mahdft needs at least 4 tokens to pool, the image gives {self.num_tokens}")
        self.pools = nn.ModuleList(nn.Conv1d(self.num_tokens, pooled, 1) for _ in range(vit_depth))
        self.dim_proj = nn.Linear(vit_dim, embed_dim)
        self.layers = vim_layers(embed_dim, depth, drop_path_rate, VIM_S_DEPTH)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm_f = RMSNorm(embed_dim)
        self.final_pool = nn.Conv1d(pooled * vit_depth, self.num_tokens, 1)

    def forward(self, images: Tensor) -> BackboneOutput:
        x = self._embed(images)
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
