"""Vision Mamba (Vim) backbones as MambaPAR uses them: middle cls token, bimamba v2, all tokens out.

Module and parameter names equal the official `VisionMamba` (hustvl/Vim, `vim_*_midclstok` models) minus
its classifier `head`, so an official state dict loads into `VimBackbone` without renaming.
Block semantics follow Vim's fused add+norm with the residual stream kept in float32:
residual = residual + drop_path(h); h = mixer(norm(residual)); after the last block h = norm_f(residual + h).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, lecun_normal_, trunc_normal_
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.checkpoint_files import VIM_S, VIM_T
from partool.models.mamba import BiMamba, RMSNorm, linspace
from partool.models.registry import register_model
from partool.ops.rms_norm import add_rms_norm


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> (B, gh·gw, E), row-major."""

    def __init__(self, img_size: tuple[int, int], patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        h, w = img_size
        if h % patch_size or w % patch_size or h <= 0 or w <= 0:
            raise UserError(
                f"image size {h}x{w} is not a positive multiple of the patch size {patch_size}; "
                f"pass --img-size with both sides divisible by {patch_size} (e.g. 256x128)"
            )
        self.img_size = (h, w)
        self.grid_size = (h // patch_size, w // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            h, w = self.img_size
            raise UserError(
                f"input images are {x.shape[-2]}x{x.shape[-1]} but the model was built for {h}x{w}"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class Block(nn.Module):
    """Add -> RMSNorm -> mixer, returning (mixer output, residual) like Vim's `Block`."""

    def __init__(self, dim: int, mixer: BiMamba, drop_path: float, eps: float) -> None:
        super().__init__()
        self.mixer = mixer
        self.norm = RMSNorm(dim, eps=eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, hidden: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
        residual = hidden.float() if residual is None else residual + self.drop_path(hidden).float()
        hidden = self.mixer(self.norm(residual).to(hidden.dtype))
        return hidden, residual


def run_blocks(layers: Sequence[Block], hidden: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
    """`hidden, residual = block(hidden, residual)` through `layers`, token-major in and out. In inference on a
    kernel backend the blocks run in the mixers' flat layout instead (`flat_blocks`) and the results are
    views of it; a residual that is such a view goes back in without a copy."""
    if not runs_flat(layers, hidden):
        for layer in layers:
            hidden, residual = layer(hidden, residual)
        return hidden, residual
    batch = hidden.shape[0]
    h, res = flat_blocks(layers, to_flat(hidden), None if residual is None else to_flat(residual), batch)
    return from_flat(h, batch), from_flat(res, batch)


def runs_flat(layers: Sequence[Block], hidden: Tensor) -> bool:
    """Whether `layers` run in the flat layout on `hidden`: inference (no drop path) on a kernel backend."""
    return (
        bool(layers) and not any(layer.training for layer in layers) and layers[0].mixer.uses_kernels(hidden)
    )


def flat_blocks(
    layers: Sequence[Block], h: Tensor, residual: Tensor | None, batch: int
) -> tuple[Tensor, Tensor]:
    """Blocks on the kernel library (inference) in the flat layout (1, E, B·T): per block one `add_rms_norm`,
    then the mixer's `forward_flat`. Same function as the blocks' forward with drop path off."""
    for layer in layers:
        normed, residual = add_rms_norm(h, residual, layer.norm.float_weight(), layer.norm.eps)
        h = layer.mixer.forward_flat(normed[0], batch)[None]
    return h, residual


def to_flat(tokens: Tensor) -> Tensor:
    """(B, T, E) -> the flat (1, E, B·T): a copy, or a view when `tokens` is a `from_flat` view."""
    b, t, e = tokens.shape
    return tokens.permute(2, 0, 1).reshape(1, e, b * t)


def from_flat(x: Tensor, batch: int) -> Tensor:
    """The flat (1, E, B·T) -> (B, T, E), a view."""
    return x[0].view(x.shape[1], batch, -1).permute(1, 2, 0)


def midcls_index(num_patches: int) -> int:
    """Where Vim puts the cls token among the patch tokens (`token_position = M // 2`)."""
    return num_patches // 2


def resample_midcls_pos_embed(
    pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> Tensor:
    """Bicubic-resize a (1, 1 + gh·gw, E) middle-cls pos-embed to a new patch grid, keeping cls in the middle.

    Differs from the MambaPAR authors' loader (OpenPAR `models/base_block.py::create_Vim`), which treats the
    first position as the cls one: with Vim's middle cls token that resizes a grid holding the cls position and
    missing the first patch's. Here the cls position is taken from, and put back in, the middle."""
    old_n, new_n = old_grid[0] * old_grid[1], new_grid[0] * new_grid[1]
    if pos_embed.shape[1] != old_n + 1:
        raise ValueError(
            f"pos_embed has {pos_embed.shape[1]} tokens, expected {old_n + 1} for grid {old_grid}"
        )
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    c = midcls_index(old_n)
    cls, patches = pos_embed[:, c : c + 1], torch.cat([pos_embed[:, :c], pos_embed[:, c + 1 :]], dim=1)
    dim = pos_embed.shape[-1]
    grid = patches.reshape(1, *old_grid, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, new_n, dim).to(pos_embed.dtype)
    c = midcls_index(new_n)
    return torch.cat([patches[:, :c], cls, patches[:, c:]], dim=1)


class VimBackbone(nn.Module):
    """Vim with a middle cls token; forward(images) -> all 1 + gh·gw tokens after norm_f, (B, T, E)."""

    family = "vim"

    def __init__(
        self,
        img_size: tuple[int, int] = (224, 224),
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 24,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        drop_path_rate: float = 0.1,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.img_size = tuple(img_size)
        self.out_dim = embed_dim
        self.patch_embed = PatchEmbed(self.img_size, patch_size, embed_dim)
        self.num_tokens = self.patch_embed.num_patches + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        rates = [0.0, *linspace(0.0, drop_path_rate, depth)]  # Vim's off-by-one: layer i gets rates[i]
        self.layers = nn.ModuleList(
            Block(embed_dim, BiMamba(embed_dim, d_state, d_conv, expand), rates[i], norm_eps)
            for i in range(depth)
        )
        self.norm_f = RMSNorm(embed_dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """Vim's init: lecun-normal patch conv, trunc-normal tokens, out_proj rescaled by 1/sqrt(depth)."""
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for layer in self.layers:
            w = layer.mixer.out_proj.weight
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            with torch.no_grad():
                w /= math.sqrt(depth)

    def checkpoint_root(self) -> nn.Module:
        """The module whose parameter names are those of official checkpoints: the backbone itself."""
        return self

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    def _fused_layers(self, hidden: Tensor) -> Tensor:
        """The blocks and norm_f on the kernel library (inference), in the mixers' flat layout (E, B·T) from
        the first block to the last (`flat_blocks`): every projection one GEMM over the batch, one add +
        RMSNorm kernel between mixers, and norm_f as one more."""
        batch = hidden.shape[0]
        h, residual = flat_blocks(self.layers, to_flat(hidden), None, batch)
        if self.norm_f.weight.dtype == torch.float32:  # norm_f's output has its weight's dtype
            h = h.float()
        out, _ = add_rms_norm(h, residual, self.norm_f.float_weight(), self.norm_f.eps, return_residual=False)
        return from_flat(out, batch).to(self.norm_f.weight.dtype)

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images)
        c = midcls_index(x.shape[1])
        x = torch.cat([x[:, :c], self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x[:, c:]], dim=1)
        hidden = x + self.pos_embed.to(x.dtype)
        if runs_flat(self.layers, hidden):
            return self._fused_layers(hidden)
        hidden, residual = run_blocks(self.layers, hidden, None)
        return self.norm_f(residual + self.drop_path(hidden).float())


@register_model(
    "vim-t",
    "vim",
    "Vision Mamba tiny: embed 192, depth 24, middle cls token, bimamba v2",
    checkpoints=(("vim", VIM_T),),
)
def vim_tiny(
    img_size: tuple[int, int] = (224, 224), embed_dim: int = 192, depth: int = 24, drop_path_rate: float = 0.1
) -> VimBackbone:
    return VimBackbone(img_size, embed_dim=embed_dim, depth=depth, drop_path_rate=drop_path_rate)


@register_model(
    "vim-s",
    "vim",
    "Vision Mamba small (MambaPAR): embed 384, depth 24, middle cls token, bimamba v2",
    checkpoints=(("vim", VIM_S),),
)
def vim_small(
    img_size: tuple[int, int] = (224, 224), embed_dim: int = 384, depth: int = 24, drop_path_rate: float = 0.1
) -> VimBackbone:
    return VimBackbone(img_size, embed_dim=embed_dim, depth=depth, drop_path_rate=drop_path_rate)
