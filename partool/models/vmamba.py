"""VMamba v0 (the version MambaPAR used): SS2D blocks with a 4-direction cross-scan, no MLP.

Module and parameter names equal the official v0 `VSSM` (MzeroMiko/VMamba, `vssm*_ckpt_*.pth`) minus its
classifier `head`. SS2D's 4-direction scan (row-major, column-major, and both reversed) is one op,
`partool.ops.cross_scan.cross_scan_fn`, which picks its reference or kernel implementation per call.
The backbone returns the last stage's tokens as the blocks leave them, (B, H/32 · W/32, dims[-1]): no
final LayerNorm, as MambaPAR's `VSSM.forward` (Event-AHU/OpenPAR, MambaPAR_Empirical_Study/models/vmamba.py)
skips the classifier's norm; the loader drops an official checkpoint's `norm.*` (`pretrained.py`).
VMamba-B's drop-path rate defaults to 0.6, the rate of the checkpoint the paper fine-tunes
(`vssmbase_dp06`) and of the authors' `vssm_base` config; tiny and small keep 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.checkpoint_files import VMAMBA_B, VMAMBA_S, VMAMBA_T
from partool.models.mamba import dt_bias_init, linspace, s4d_real_log
from partool.models.registry import register_model
from partool.ops.cross_scan import DIRECTIONS, CrossScanWeights, cross_scan_fn


class SS2D(nn.Module):
    """2D selective-scan mixer on channel-last maps (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: int = 2) -> None:
        super().__init__()
        self.d_state = d_state
        self.d_inner = d_inner = expand * d_model
        self.dt_rank = rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(
            d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=True
        )
        # Per direction k: x_proj (rank + 2n, d_inner), dt_proj (d_inner, rank) + bias, A_log, D.
        bound = d_inner**-0.5  # nn.Linear's default init, as the official stacked Linears had
        self.x_proj_weight = nn.Parameter(
            torch.empty(DIRECTIONS, rank + 2 * d_state, d_inner).uniform_(-bound, bound)
        )
        dt_std = rank**-0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(DIRECTIONS, d_inner, rank).uniform_(-dt_std, dt_std))
        self.dt_projs_bias = nn.Parameter(torch.stack([dt_bias_init(d_inner) for _ in range(DIRECTIONS)]))
        self.A_logs = nn.Parameter(s4d_real_log(d_inner, d_state).repeat(DIRECTIONS, 1))  # (4·d_inner, n)
        self.Ds = nn.Parameter(torch.ones(DIRECTIONS * d_inner))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        xz = self.in_proj(x)
        x, z = xz[..., : self.d_inner], xz[..., self.d_inner :]
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        weights = CrossScanWeights(
            self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs, self.Ds
        )
        y = cross_scan_fn(x, weights, self)  # (B, H, W, d_inner)
        return self.out_proj(self.out_norm(y) * F.silu(z))


class VSSBlock(nn.Module):
    """x + drop_path(SS2D(LayerNorm(x))) — v0 has no MLP."""

    def __init__(self, dim: int, drop_path: float, d_state: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = SS2D(dim, d_state=d_state)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.self_attention(self.ln_1(x)))


class PatchMerging2D(nn.Module):
    """2×2 neighbourhoods -> LayerNorm(4C) -> Linear(4C -> 2C), halving H and W."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class VSSLayer(nn.Module):
    """One stage: blocks, then patch merging (all stages but the last)."""

    def __init__(self, dim: int, drop_paths: Sequence[float], d_state: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(VSSBlock(dim, p, d_state) for p in drop_paths)
        self.downsample = PatchMerging2D(dim) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed2D(nn.Module):
    """4×4 patches -> channel-last (B, H/4, W/4, C) with LayerNorm."""

    def __init__(self, embed_dim: int, patch_size: int = 4, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class VMambaBackbone(nn.Module):
    """VMamba v0 (VSSM) without classifier (and without its final norm); forward(images) -> (B, H/32 · W/32,
    dims[-1]) tokens."""

    family = "vmamba"

    def __init__(
        self,
        img_size: tuple[int, int] = (224, 224),
        depths: Sequence[int] = (2, 2, 27, 2),
        dims: Sequence[int] | int = 128,
        d_state: int = 16,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(len(depths))]
        if len(dims) != len(depths):
            raise ValueError(f"dims {list(dims)} and depths {list(depths)} must have the same length")
        stride = 4 * 2 ** (len(depths) - 1)
        h, w = img_size
        if h % stride or w % stride or h <= 0 or w <= 0:
            raise UserError(
                f"image size {h}x{w} does not suit VMamba: both sides must be positive multiples of {stride} "
                "(e.g. 224x224 or 256x128); change --img-size"
            )
        for i in range(len(dims) - 1):
            if dims[i + 1] != 2 * dims[i]:
                raise ValueError(f"VMamba v0 doubles the width at each merge; got dims {list(dims)}")
        self.img_size = (h, w)
        self.grid_size = (h // stride, w // stride)
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.out_dim = dims[-1]
        self.patch_embed = PatchEmbed2D(dims[0])
        rates = linspace(0.0, drop_path_rate, sum(depths))
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            VSSLayer(
                dims[i], rates[starts[i] : starts[i] + depths[i]], d_state, downsample=i < len(depths) - 1
            )
            for i in range(len(depths))
        )
        self.apply(_init_weights)

    def checkpoint_root(self) -> nn.Module:
        """The module whose parameter names are those of official checkpoints: the backbone itself."""
        return self

    def forward(self, images: Tensor) -> Tensor:
        if tuple(images.shape[-2:]) != self.img_size:
            h, w = self.img_size
            raise UserError(
                f"input images are {images.shape[-2]}x{images.shape[-1]} but the model was built for {h}x{w}"
            )
        x = self.patch_embed(images)
        for layer in self.layers:
            x = layer(x)
        return x.flatten(1, 2)


def _init_weights(m: nn.Module) -> None:
    """VSSM's init: trunc-normal(0.02) Linear weights, zero biases, unit LayerNorms (SS2D's params stay)."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _vmamba(
    img_size: tuple[int, int], depths: Sequence[int], dims: Sequence[int] | int, drop_path_rate: float
) -> VMambaBackbone:
    return VMambaBackbone(img_size, depths=depths, dims=dims, drop_path_rate=drop_path_rate)


@register_model(
    "vmamba-t",
    "vmamba",
    "VMamba v0 tiny: depths 2-2-9-2, dims 96-768, SS2D 4-direction scan",
    checkpoints=(("vmamba", VMAMBA_T),),
)
def vmamba_tiny(
    img_size: tuple[int, int] = (224, 224),
    depths: Sequence[int] = (2, 2, 9, 2),
    dims: Sequence[int] | int = 96,
    drop_path_rate: float = 0.1,
) -> VMambaBackbone:
    return _vmamba(img_size, depths, dims, drop_path_rate)


@register_model(
    "vmamba-s",
    "vmamba",
    "VMamba v0 small: depths 2-2-27-2, dims 96-768, SS2D 4-direction scan",
    checkpoints=(("vmamba", VMAMBA_S),),
)
def vmamba_small(
    img_size: tuple[int, int] = (224, 224),
    depths: Sequence[int] = (2, 2, 27, 2),
    dims: Sequence[int] | int = 96,
    drop_path_rate: float = 0.1,
) -> VMambaBackbone:
    return _vmamba(img_size, depths, dims, drop_path_rate)


VMAMBA_B_DROP_PATH = 0.6  # the authors' `vssm_base` config, as the `vssmbase_dp06` checkpoint was trained


@register_model(
    "vmamba-b",
    "vmamba",
    "VMamba v0 base (MambaPAR): depths 2-2-27-2, dims 128-1024, SS2D",
    checkpoints=(("vmamba", VMAMBA_B),),
)
def vmamba_base(
    img_size: tuple[int, int] = (224, 224),
    depths: Sequence[int] = (2, 2, 27, 2),
    dims: Sequence[int] | int = 128,
    drop_path_rate: float = VMAMBA_B_DROP_PATH,
) -> VMambaBackbone:
    return _vmamba(img_size, depths, dims, drop_path_rate)
