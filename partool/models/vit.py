"""ViT baselines from timm, returning all tokens (cls + patches) after the final norm."""

from __future__ import annotations

import timm
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.checkpoint_files import VIT_B, VIT_S
from partool.models.registry import register_model


class ViTBackbone(nn.Module):
    """A timm VisionTransformer without classifier; forward(images) -> (B, 1 + gh·gw, embed_dim).

    The timm model sits at `vit`; its parameter names are timm's, so timm checkpoints load into it.
    """

    family = "vit"

    def __init__(
        self,
        timm_name: str,
        img_size: tuple[int, int] = (224, 224),
        drop_path_rate: float = 0.1,
        depth: int = 12,
        embed_dim: int = 384,
        num_heads: int = 6,
    ) -> None:
        super().__init__()
        h, w = img_size
        if h % 16 or w % 16 or h <= 0 or w <= 0:
            raise UserError(
                f"image size {h}x{w} is not a positive multiple of the patch size 16; change --img-size"
            )
        if depth < 1 or num_heads < 1 or embed_dim % num_heads:
            raise UserError(
                f"vit needs depth >= 1 and num_heads dividing embed_dim; got depth {depth}, "
                f"embed_dim {embed_dim}, num_heads {num_heads}"
            )
        sizes = {"depth": depth, "embed_dim": embed_dim, "num_heads": num_heads}
        self.vit = timm.create_model(
            timm_name,
            pretrained=False,
            num_classes=0,
            img_size=(h, w),
            drop_path_rate=drop_path_rate,
            **sizes,
        )
        self.img_size = (h, w)
        self.grid_size = tuple(self.vit.patch_embed.grid_size)
        self.num_tokens = self.vit.patch_embed.num_patches + self.vit.num_prefix_tokens
        self.out_dim = self.vit.embed_dim

    def checkpoint_root(self) -> nn.Module:
        """The module whose parameter names are those of official (timm) checkpoints."""
        return self.vit

    def forward(self, images: Tensor) -> Tensor:
        if tuple(images.shape[-2:]) != self.img_size:
            h, w = self.img_size
            raise UserError(
                f"input images are {images.shape[-2]}x{images.shape[-1]} but the model was built for {h}x{w}"
            )
        return self.vit.forward_features(images)


@register_model(
    "vit-s",
    "vit",
    "ViT-S/16 (timm vit_small_patch16_224, embed 384) Transformer baseline",
    checkpoints=(("vit", VIT_S),),
)
def vit_small(
    img_size: tuple[int, int] = (224, 224),
    drop_path_rate: float = 0.1,
    depth: int = 12,
    embed_dim: int = 384,
    num_heads: int = 6,
) -> ViTBackbone:
    """ViT-S/16; smaller depth / embed_dim / num_heads give reduced models (quick runs, tests)."""
    return ViTBackbone("vit_small_patch16_224", img_size, drop_path_rate, depth, embed_dim, num_heads)


@register_model(
    "vit-b",
    "vit",
    "ViT-B/16 (timm vit_base_patch16_224, embed 768) Transformer baseline",
    checkpoints=(("vit", VIT_B),),
)
def vit_base(
    img_size: tuple[int, int] = (224, 224),
    drop_path_rate: float = 0.1,
    depth: int = 12,
    embed_dim: int = 768,
    num_heads: int = 12,
) -> ViTBackbone:
    """ViT-B/16; smaller depth / embed_dim / num_heads give reduced models (quick runs, tests)."""
    return ViTBackbone("vit_base_patch16_224", img_size, drop_path_rate, depth, embed_dim, num_heads)
