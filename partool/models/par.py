"""PARModel: backbone tokens -> Linear to the head width (768) -> PAR head -> attribute logits.

Two-stream backbones (hybrids) hook in through one explicit, typed channel, and `model(images)` still
returns the plain deployed logits tensor (export, eval, predict and ONNX see nothing else):

- A backbone may return a `BackboneOutput` instead of a token tensor: the main `tokens` (to neck and
  head, as always), and optionally `fused_tokens`, `teacher_tokens` and a label-free `aux_loss`.
- A backbone that sets `fused_stream = StreamSpec(T, D)` gets a second `PARHead` (`fused_head`) on its
  fused tokens; the deployed logits are the mean of both heads' logits (MaHDFT: the frozen ViT's own
  head averaged with the Vim branch's).
- A backbone that sets `teacher_stream = StreamSpec(T, D)` gets a `teacher_head` on its teacher tokens.
  The teacher never reaches the deployed logits; its backbone returns teacher tokens only in training
  mode, so an eval-mode graph (and an export) holds no teacher at all (KDTM).
- Training calls `model(images, with_aux=True)` (through DDP too) and gets a `PAROutput`; the loss is
  `criterion(out.logits, targets) + out.aux_loss(criterion, targets)`, where `aux_loss` adds the
  teacher's own loss, the MSE between deployed and (detached) teacher logits, and the backbone's term
  (e.g. MaKDF's layer-wise distillation). For a plain backbone it is zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partool.models.head import PARHead

HEAD_DIM = 768  # every backbone's tokens are projected to this width (MambaPAR's Linear 384 -> 768)

Criterion = Callable[[Tensor, Tensor], Tensor]  # criterion(logits (B, A) float32, targets (B, A)) -> scalar


@dataclass(frozen=True)
class StreamSpec:
    """Shape (tokens, width) of a backbone's second token stream, which gets its own PARHead."""

    num_tokens: int
    dim: int


@dataclass(frozen=True)
class BackboneOutput:
    """What a two-stream backbone returns in place of its token tensor (see the module docstring)."""

    tokens: Tensor  # (B, T, out_dim): the main stream, to the neck and the head
    fused_tokens: Tensor | None = None  # (B, T_f, D_f) for `fused_head`; needed whenever fused_stream is set
    teacher_tokens: Tensor | None = None  # (B, T_t, D_t) for `teacher_head`; training mode only
    aux_loss: Tensor | None = None  # a scalar training term that needs no labels


@dataclass(frozen=True)
class PAROutput:
    """`model(images, with_aux=True)`: the deployed logits and what the training loss adds to them."""

    logits: Tensor  # (B, A): exactly what `model(images)` returns
    teacher_logits: Tensor | None = None  # (B, A) of the teacher head, when the backbone has one
    backbone_loss: Tensor | None = None  # the backbone's own label-free term

    def aux_loss(self, criterion: Criterion, targets: Tensor) -> Tensor:
        """criterion(teacher) + MSE(logits, teacher.detach()) + the backbone's term; 0 when none.

        The teacher is detached in the MSE so it learns from the labels only and the student follows it.
        """
        loss = self.logits.new_zeros((), dtype=torch.float32)
        if self.teacher_logits is not None:
            teacher = self.teacher_logits.float()
            loss = loss + criterion(teacher, targets) + F.mse_loss(self.logits.float(), teacher.detach())
        if self.backbone_loss is not None:
            loss = loss + self.backbone_loss.float()
        return loss


def _as_output(out: Tensor | BackboneOutput) -> BackboneOutput:
    return out if isinstance(out, BackboneOutput) else BackboneOutput(out)


class PARModel(nn.Module):
    """forward(images (B, 3, H, W)) -> logits (B, A); forward(images, with_aux=True) -> PAROutput.

    `backbone` must provide `num_tokens`, `out_dim`, `img_size` and `checkpoint_root()`, and may provide
    `fused_stream` / `teacher_stream` (StreamSpec); `neck` is Linear(out_dim -> head.dim) when the widths
    differ, else Identity.
    """

    def __init__(self, backbone: nn.Module, head: PARHead, default_cfg: dict[str, Any] | None = None) -> None:
        super().__init__()
        if head.num_tokens != backbone.num_tokens:
            raise ValueError(f"head expects {head.num_tokens} tokens, backbone yields {backbone.num_tokens}")
        self.backbone = backbone
        self.neck = nn.Linear(backbone.out_dim, head.dim) if backbone.out_dim != head.dim else nn.Identity()
        self.head = head
        fused: StreamSpec | None = getattr(backbone, "fused_stream", None)
        teacher: StreamSpec | None = getattr(backbone, "teacher_stream", None)
        self.fused_head = PARHead(fused.num_tokens, head.num_attrs, fused.dim) if fused else None
        self.teacher_head = PARHead(teacher.num_tokens, head.num_attrs, teacher.dim) if teacher else None
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
        """Main-stream tokens in the head's width, (B, T, 768): what text fusion or distillation can hook into."""
        return self.neck(_as_output(self.backbone(images)).tokens)

    @overload
    def forward(self, images: Tensor, with_aux: Literal[False] = False) -> Tensor: ...

    @overload
    def forward(self, images: Tensor, with_aux: Literal[True]) -> PAROutput: ...

    def forward(self, images: Tensor, with_aux: bool = False) -> Tensor | PAROutput:
        out = _as_output(self.backbone(images))
        logits = self.head(self.neck(out.tokens))
        if self.fused_head is not None:
            if out.fused_tokens is None:
                raise ValueError(f"{type(self.backbone).__name__} declares a fused stream but returned none")
            logits = (logits + self.fused_head(out.fused_tokens)) / 2
        if not with_aux:
            return logits
        teacher = None
        if self.teacher_head is not None and out.teacher_tokens is not None:
            teacher = self.teacher_head(out.teacher_tokens)
        return PAROutput(logits, teacher, out.aux_loss)
