"""PARModel: backbone tokens -> Linear to the head width (768) -> PAR head -> attribute logits."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from partool.models.head import PARHead

HEAD_DIM = 768  # every backbone's tokens are projected to this width (MambaPAR's Linear 384 -> 768)


class PARModel(nn.Module):
    """forward(images (B, 3, H, W)) -> logits (B, A).

    `backbone` must provide `num_tokens`, `out_dim`, `img_size` and `checkpoint_root()`; `neck` is
    Linear(out_dim -> head.dim) when the widths differ, else Identity.
    """

    def __init__(self, backbone: nn.Module, head: PARHead, default_cfg: dict[str, Any] | None = None) -> None:
        super().__init__()
        if head.num_tokens != backbone.num_tokens:
            raise ValueError(f"head expects {head.num_tokens} tokens, backbone yields {backbone.num_tokens}")
        self.backbone = backbone
        self.neck = nn.Linear(backbone.out_dim, head.dim) if backbone.out_dim != head.dim else nn.Identity()
        self.head = head
        self.default_cfg: dict[str, Any] = dict(default_cfg or {})

    @property
    def num_tokens(self) -> int:
        return self.backbone.num_tokens

    @property
    def img_size(self) -> tuple[int, int]:
        return self.backbone.img_size

    @property
    def num_attrs(self) -> int:
        return self.head.num_attrs

    def features(self, images: Tensor) -> Tensor:
        """Tokens in the head's width, (B, T, 768): what text fusion or distillation can hook into."""
        return self.neck(self.backbone(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))
