"""VMamba v0 (the version MambaPAR used): SS2D blocks with a 4-direction cross-scan, no MLP.

Module and parameter names equal the official v0 `VSSM` (MzeroMiko/VMamba, `vssm*_ckpt_*.pth`) minus its
classifier `head`. Of the four scan directions (row-major, column-major, and both reversed), the two
forward ones are stacked on the channel axis and run as one selective-scan call with B/C grouped per
direction (b, 2, n, l); the reversed two run as one `reverse=True` call over the same unflipped sequences.
For inference on the `cpu`/`cuda` kernel backends `SS2D.fused_scan` runs both pairs as one bidirectional
kernel call in a flat (channels, batch·tokens) layout.
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
from partool.models.mamba import cached_per_version, dt_bias_init, kernel_inference, linspace, s4d_real_log
from partool.models.registry import register_model
from partool.ops import kernels
from partool.ops.selective_scan import selective_scan

DIRECTIONS = 4  # row-major, column-major, reversed row-major, reversed column-major


def transpose_hw(x: Tensor, rows: int, cols: int) -> Tensor:
    """(B, d, rows·cols), a map stored row by row, -> (B, d, cols·rows), the same map column by column.

    Under ONNX export it is written as three transposes through a channel-last layout, with reshapes
    between them so that no optimizer merges them back: ONNX Runtime's Transpose of the two small trailing
    axes of (B, d, rows, cols) takes a slow generic path (2 threads, (1, 768, 14, 14): 0.58 ms), while the
    (d, L) <-> (L, d) and (rows, cols, d) -> (cols, rows, d) transposes it runs fast (0.05 + 0.02 + 0.05 ms).
    """
    b, d, _ = x.shape
    if not torch.onnx.is_in_onnx_export():
        return x.reshape(b, d, rows, cols).transpose(2, 3).reshape(b, d, rows * cols)
    channel_last = x.transpose(1, 2).reshape(b, rows, cols, d)
    return channel_last.transpose(1, 2).reshape(b, cols * rows, d).transpose(1, 2)


def cross_scan(x: Tensor) -> Tensor:
    """(B, d, H, W) -> (B, 2, d, H·W): row-major and column-major orders. VMamba v0's two other directions
    are these sequences reversed; they are scanned with `reverse=True` instead of being flipped and copied."""
    _, _, height, width = x.shape
    rows = x.flatten(2)
    return torch.stack([rows, transpose_hw(rows, height, width)], dim=1)


def cross_merge(ys: Tensor, height: int, width: int) -> Tensor:
    """(B, 2, d, H·W) row-/column-major outputs (both scan directions summed) -> row-major sum (B, d, H·W)."""
    return ys[:, 0] + transpose_hw(ys[:, 1], width, height)


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

    def scan(self, x: Tensor) -> Tensor:
        """(B, d_inner, H, W) -> (B, d_inner, H·W): the summed 4-direction selective scan as two grouped scans.

        Directions 0/1 (row-, column-major) run forward and 2/3 (the same orders reversed) run as reverse
        scans of the same two sequences: no flipped copies in or out. Each call groups its two directions
        (channel block k uses direction k's B/C). The per-direction projections are batched matmuls with the
        weight first, (2, ·, d) @ (B, 2, d, L): channel-major outputs, one ONNX MatMul each (ONNX Runtime's
        Einsum took 3-4x as long) that quantize.py quantizes per output row."""
        b, d, h, w = x.shape
        length, r, n = h * w, self.dt_rank, self.d_state
        xs = cross_scan(x)  # (B, 2, d, L)
        A = -torch.exp(self.A_logs.float()).view(DIRECTIONS, d, n)
        D, bias = self.Ds.float().view(DIRECTIONS, d), self.dt_projs_bias.float()
        ys = None
        for first, reverse in ((0, False), (2, True)):
            k = slice(first, first + 2)
            x_dbl = torch.matmul(self.x_proj_weight[k].to(xs.dtype), xs)  # (B, 2, rank + 2n, L)
            # Slices (views, as torch.split's): torch.split/chunk export as ONNX sequence ops, slices as Slice.
            dts, Bs, Cs = x_dbl[:, :, :r], x_dbl[:, :, r : r + n], x_dbl[:, :, r + n :]
            dts = torch.matmul(self.dt_projs_weight[k].to(xs.dtype), dts)  # (B, 2, d, L)
            out = selective_scan(
                xs.reshape(b, 2 * d, length), dts.reshape(b, 2 * d, length), A[k].reshape(2 * d, n),
                Bs.contiguous(), Cs.contiguous(), D[k].reshape(-1), delta_bias=bias[k].reshape(-1),
                delta_softplus=True, reverse=reverse,
            )  # fmt: skip
            ys = out if ys is None else ys + out
        return cross_merge(ys.view(b, 2, d, length), h, w)

    def _kernel_constants(self) -> dict[str, Tensor]:
        """The fused path's weights, made once per weight version (`cached_per_version`). Per direction
        pair p (0: directions 0/1 forward, 1: directions 2/3 reversed) and group g (row-/column-major),
        direction k = 2p + g. x_proj of both pairs as one (2 [g], 2·rank + 4n, d) weight whose output rows are
        [dt of p0 | dt of p1 | B, C of p0 | B, C of p1]; dt_proj (2 [p], 2 [g], d, rank); float32 A, D and
        dt bias (2 [p], 2·d_inner, ·)."""

        def compute() -> dict[str, Tensor]:
            r, n, d = self.dt_rank, self.d_state, self.d_inner
            w = self.x_proj_weight  # (4 [k], rank + 2n, d)
            x_proj = torch.stack([
                torch.cat([w[g, :r], w[2 + g, :r], w[g, r:], w[2 + g, r:]]) for g in (0, 1)
            ])  # fmt: skip
            return {
                "x_proj": x_proj,
                "dt_proj": self.dt_projs_weight.view(2, 2, d, r),
                "A": (-torch.exp(self.A_logs.float())).view(2, 2 * d, n),
                "D": self.Ds.float().view(2, 2 * d),
                "delta_bias": self.dt_projs_bias.float().view(2, 2 * d),
            }

        params = [self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs, self.Ds]
        return cached_per_version(self, params, compute)

    def fused_scan(self, x: Tensor) -> Tensor:
        """`scan` + the cross-merge for inference on the kernel library: (B, d_inner, H, W) -> (B, H, W,
        d_inner), channel-last as out_norm takes it, in nine launches and without flipped copies.

        Both orders of the map are written once, side by side in the flat layout (2 [g], d_inner, B·H·W),
        so x_proj is one batched GEMM over the whole batch and each pair's dt_proj another; the kernels read
        u, delta, B and C in place through their strides (only B and C of a pair are packed, 2n rows). The
        forward pair and the reversed pair run as one bidirectional scan call whose out_scale = 1 sums
        them; one strided add then merges row- and column-major outputs into the channel-last result."""
        b, d, h, w = x.shape
        tokens, r, n = b * h * w, self.dt_rank, self.d_state
        c = self._kernel_constants()
        xs = x.new_empty(2, d, b, h * w)  # [g, channel, image, position]: row-major, then column-major
        xs[0].view(d, b, h, w).copy_(x.transpose(0, 1))
        xs[1].view(d, b, w, h).copy_(x.permute(1, 0, 3, 2))
        x_dbl = torch.bmm(c["x_proj"], xs.view(2, d, tokens))  # (2 [g], 2·rank + 4n, B·L)

        def per_image(m: Tensor) -> Tensor:  # (rows, B·L) -> (B, rows, L), a view
            return m.view(m.shape[0], b, h * w).transpose(0, 1)

        u = per_image(xs.view(2 * d, tokens))
        pairs = []
        for p in (0, 1):
            delta = torch.bmm(c["dt_proj"][p], x_dbl[:, p * r : (p + 1) * r])  # (2 [g], d, B·L)
            first = 2 * r + 2 * n * p
            bc = x_dbl[:, first : first + 2 * n].view(2, 2, n, tokens).transpose(0, 1).contiguous()
            B, C = (bc[i].view(2, n, b, h * w).permute(2, 0, 1, 3) for i in (0, 1))  # (B, 2 [g], n, L) views
            pairs.append({"u": u, "delta": per_image(delta.view(2 * d, tokens)), "A": c["A"][p], "B": B, "C": C,
                          "D": c["D"][p], "delta_bias": c["delta_bias"][p]})  # fmt: skip
        ys = kernels.scan_bidirectional(pairs[0], pairs[1], delta_softplus=True, out_scale=1.0)
        ys = ys.transpose(0, 1).view(2, d, b, h * w)  # u's layout
        y = x.new_empty(b, h, w, d)
        torch.add(
            ys[0].view(d, b, h, w).permute(1, 2, 3, 0), ys[1].view(d, b, w, h).permute(1, 3, 2, 0), out=y
        )
        return y

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        xz = self.in_proj(x)
        x, z = xz[..., : self.d_inner], xz[..., self.d_inner :]
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        if kernel_inference(x, self.in_proj.weight) and x.dtype == self.x_proj_weight.dtype:
            y = self.fused_scan(x)
        else:
            y = self.scan(x).transpose(1, 2).reshape(b, h, w, self.d_inner)
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
