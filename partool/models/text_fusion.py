"""Image-text fusion of MambaPAR (`vim-s-text`, `vmamba-b-text`): attribute phrases meet the image in Mamba.

The paper's design (arXiv 2407.10374; Event-AHU/OpenPAR, MambaPAR_Empirical_Study/models/base_block.py):
each attribute's phrase is encoded by a text Mamba and mean-pooled, projected to 768 and given a learned
text-modality embedding; the vision tokens, projected to 768, get a vision-modality embedding; [vision
tokens, attribute tokens] pass two Vision-Semantic-Fusion (VSF) Mamba layers, each `x + mixer(norm(x))`
(mamba_ssm's pre-norm Block with the residual added outside), then an RMSNorm; the last A tokens are the
per-attribute features. The VSF layers are unidirectional, so with the attribute tokens last every one of
them has read the whole image. With `text_checkpoint` the VSF layers start as copies of the language
model's last two layers, fused at its width (the authors deep-copy mamba-130m's `backbone.layers[-2:]`,
768 wide); without one they start fresh at `fusion_dim` (768).

The phrases and their tokens are `text_phrases.py`'s job, the text encoder `text_encoder.py`'s; each lists
where it differs from the authors' code. Here, where the fusion differs, and why: the registry puts the
shared PAR head on top, so the A attribute tokens pass its 1×1 token-mixing conv (A -> A) before the
per-attribute linears; the paper's text model feeds them to the linears directly.

A run folder must rebuild without the files a run was trained from: `build_meta` stores, in place of
`text_checkpoint`, the encoder's sizes (`text_shape`; its weights are in the run's own weights file) and,
in place of `tokenizer`, the phrases' token ids and the embedding rows (`text_tokens`)
(`TextFusionBackbone.self_contained_kwargs`), so evaluating, exporting or deploying a copied run needs
neither the 500 MB language model nor the tokenizer.

The text branch depends on weights only, not on the image, so in eval mode its output (A, 768) is computed
once and kept in a buffer (`fold`); ONNX export (which puts the model in eval mode) then traces a graph
with the attribute tokens as constants and no text encoder in it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.checkpoint_files import VIM_S, VMAMBA_B
from partool.models.mamba import RMSNorm
from partool.models.registry import BackboneBuilder, model_info, register_model
from partool.models.text_checkpoint import MambaShape
from partool.models.text_encoder import MambaBlock, TextMamba, build_text_encoder
from partool.models.text_phrases import PA100K_ATTRIBUTES, attribute_phrase

FUSION_DIM = 768  # the width the paper fuses at (mamba-130m's d_model); `fusion_dim` changes it


class TextFusionBackbone(nn.Module):
    """forward(images) -> (B, A, 768): the fused attribute tokens, one per attribute, in output order."""

    folded: Tensor | None
    token_ids: Tensor
    token_mask: Tensor

    def __init__(
        self,
        vision: nn.Module,
        attributes: Sequence[str] | None = None,
        phrases: Sequence[str] | None = None,
        text_dim: int | None = None,
        text_depth: int | None = None,
        fusion_depth: int = 2,
        dim: int | None = None,
        text_checkpoint: str | Path | None = None,
        tokenizer: str | Path | None = None,
        text_shape: dict[str, int] | None = None,
        text_tokens: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        attributes = list(attributes or PA100K_ATTRIBUTES)
        phrases = list(phrases) if phrases is not None else [attribute_phrase(a) for a in attributes]
        if len(phrases) != len(attributes):
            raise ValueError(f"{len(phrases)} phrases for {len(attributes)} attributes")
        self.phrases = phrases
        self.vision = vision
        self.family = vision.family
        self.img_size = vision.img_size
        self.text, tokens, shape = build_text_encoder(
            phrases, text_dim, text_depth, text_checkpoint, tokenizer, text_shape, text_tokens
        )
        self.vocab = tokens.vocab
        dim = fusion_width(shape, dim)
        self.fusion = build_fusion_layers(self.text, shape is not None, fusion_depth, dim)
        self.num_tokens, self.out_dim = len(attributes), dim
        self.vision_proj = nn.Linear(vision.out_dim, dim) if vision.out_dim != dim else nn.Identity()
        self.vision_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self._self_contained: dict[str, Any] = {}
        if shape is not None:
            self._self_contained["text_shape"] = asdict(shape)
        if self.vocab is None:  # a tokenizer's ids (read now, or the run's text_tokens)
            rows = self.text.embedding.num_embeddings
            self._self_contained["text_tokens"] = {
                "ids": tokens.ids.tolist(),
                "mask": tokens.mask.int().tolist(),
                "rows": rows,
            }
        self.text_proj = nn.Linear(self.text.embedding.embedding_dim, dim)
        self.text_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = RMSNorm(dim)
        self.register_buffer("token_ids", tokens.ids, persistent=False)
        self.register_buffer("token_mask", tokens.mask, persistent=False)
        self.register_buffer("folded", None, persistent=False)
        self.register_load_state_dict_post_hook(_refold)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.vision.grid_size

    def checkpoint_root(self) -> nn.Module:
        """Official image checkpoints load into the vision backbone."""
        return self.vision.checkpoint_root()

    def self_contained_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The factory's `kwargs` with `text_checkpoint` and `tokenizer` (paths) replaced by what they
        contributed to the architecture (`text_shape`, `text_tokens`): what a run folder stores."""
        kept = {k: v for k, v in kwargs.items() if k not in ("text_checkpoint", "tokenizer")}
        return kept | self._self_contained

    def attribute_tokens(self) -> Tensor:
        """(A, 768): the encoded phrases, projected, plus the text-modality embedding."""
        return self.text_proj(self.text(self.token_ids, self.token_mask)) + self.text_embed[0]

    def fold(self) -> None:
        """Keep the attribute tokens as a constant buffer (eval mode uses it; training recomputes)."""
        if self.text_proj.weight.is_meta:
            return
        with torch.no_grad():
            self.folded = self.attribute_tokens().detach().clone()

    def train(self, mode: bool = True) -> TextFusionBackbone:
        super().train(mode)
        if mode:
            self.folded = None
        else:
            self.fold()
        return self

    def forward(self, images: Tensor) -> Tensor:
        vision = self.vision_proj(self.vision(images)) + self.vision_embed
        text = self.folded if self.folded is not None and not self.training else self.attribute_tokens()
        text = text.to(vision.dtype).unsqueeze(0).expand(vision.shape[0], -1, -1)
        x = torch.cat([vision, text], dim=1)
        for layer in self.fusion:
            x = layer(x)
        return self.norm(x)[:, -self.num_tokens :]


def fusion_width(shape: MambaShape | None, dim: int | None) -> int:
    """The width vision and text fuse at: a pretrained text encoder's (the VSF layers are copies of its
    layers), else `dim` (768 when not given)."""
    if shape is None:
        return dim or FUSION_DIM
    if dim is not None and dim != shape.d_model:
        raise UserError(
            f"fusion_dim={dim} but the text encoder is {shape.d_model} wide and the fusion layers are copies "
            f"of its last layers; leave fusion_dim out (the checkpoint sets it) or pass {shape.d_model}"
        )
    return shape.d_model


def build_fusion_layers(text: TextMamba, pretrained: bool, depth: int, dim: int) -> nn.ModuleList:
    """The VSF layers: copies of a pretrained text encoder's last `depth` layers (its checkpoint's weights,
    or a run's, loaded later), else fresh `dim`-wide Mamba blocks. Copies, as the authors' deepcopy: the
    encoder and the fusion then train apart."""
    if not pretrained:
        return nn.ModuleList(MambaBlock(dim) for _ in range(depth))
    if depth > len(text.layers):
        raise UserError(f"fusion_depth {depth} copies more layers than the text encoder's {len(text.layers)}")
    return copy.deepcopy(text.layers[len(text.layers) - depth :])


def _refold(module: nn.Module, incompatible: Any) -> None:
    """New weights change the attribute tokens: refresh the folded copy of a model in eval mode."""
    if not module.training:
        module.fold()


def _fused_with_text(vision_model: str) -> BackboneBuilder:
    """The builder of the registered `vision_model` (registered before: `partool.models` imports the plain
    backbones first) with the attribute phrases fused in. Its signature, which `create_model` checks options
    against, is that model's options, whose defaults stay in its own builder, and the text options below,
    keyword-only as `create_model` passes them."""
    vision = model_info(vision_model).builder

    def build(
        img_size: tuple[int, int],
        *,
        attributes: Sequence[str] | None = None,
        phrases: Sequence[str] | None = None,
        text_dim: int | None = None,
        text_depth: int | None = None,
        fusion_dim: int | None = None,
        text_checkpoint: str | None = None,
        tokenizer: str | None = None,
        text_shape: dict[str, int] | None = None,
        text_tokens: dict[str, Any] | None = None,
        **vision_options: Any,
    ) -> TextFusionBackbone:
        return TextFusionBackbone(
            vision(img_size=img_size, **vision_options), attributes, phrases, text_dim, text_depth,
            dim=fusion_dim, text_checkpoint=text_checkpoint, tokenizer=tokenizer, text_shape=text_shape,
            text_tokens=text_tokens,
        )  # fmt: skip

    img_size, *text_params, _ = inspect.signature(build).parameters.values()
    _, *vision_params = inspect.signature(vision).parameters.values()
    keyword_only = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in vision_params]
    build.__signature__ = inspect.Signature([img_size, *keyword_only, *text_params])  # type: ignore[attr-defined]
    return build


register_model(
    "vim-s-text",
    "vim",
    "Vim-S + attribute phrases (text Mamba) fused by two VSF Mamba layers (MambaPAR)",
    checkpoints=(("vim", VIM_S),),
)(_fused_with_text("vim-s"))
register_model(
    "vmamba-b-text",
    "vmamba",
    "VMamba-B + attribute phrases (text Mamba) fused by two VSF Mamba layers (MambaPAR)",
    checkpoints=(("vmamba", VMAMBA_B),),
)(_fused_with_text("vmamba-b"))
