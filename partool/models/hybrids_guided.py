"""Hybrids of MambaPAR (arXiv 2407.10374) where one branch guides or teaches the other: MaFormer, AdaMTF,
KDTM and MaKDF. Same parts (`partool.models.hybrid_parts`) and conventions as `partool.models.hybrids`
(timm ViT-B/16 at full size with timm's parameter names, so `--pretrained` loads a timm/ImageNet ViT into
it; partool's Vim blocks at Vim-S width 384). The authors' code (Event-AHU/OpenPAR,
MambaPAR_Empirical_Study/models/hybrid_4.py MaFormer, hybrid_6.py AdaMTF, hybrid_7.py KDTM, hybrid_8.py
MaKDF) was read for details; choices and deviations are listed per class.

KDTM and MaKDF train with extra loss terms and a teacher that the deployed model does not need: they use
PARModel's teacher stream and auxiliary loss (see `partool.models.par`), and in eval mode (eval, predict,
export) they never run the ViT, so an exported graph holds the Vim student only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.hybrid_parts import (
    BOTH,
    FROZEN,
    FrozenViTHybrid,
    VimStem,
    ViTHybrid,
    block_runs,
    check_images,
    check_runs,
    every_nth_block,
    prefixed,
    register_hybrid,
    same_blocks,
    vim_layers,
    vim_part,
    vit_embed,
    vit_trunk,
)
from partool.models.par import BackboneOutput, StreamSpec
from partool.models.pretrained import CheckpointPart, KeyMap, StateDict
from partool.models.vim import VimBackbone, run_blocks


@register_hybrid(
    "maformer",
    "MaFormer hybrid: frozen ViT-B/16 with a Vim-S side chain added into each block",
    FROZEN,
)
class MaFormer(FrozenViTHybrid):
    """MaFormer: a frozen ViT with a trainable Mamba side chain added into every block.

    Per ViT block i: the side chain takes down_i(x) (768 -> 384) of the block's input, runs depth/vit_depth
    Vim blocks (fp32 residual carried along the chain) and its output is projected up and added to the
    block's output: x = block_i(x) + up_i(chain). Output: the ViT's (frozen) final LayerNorm of x,
    (B, 1 + N, vit_dim). Trainable: the Vim blocks, the projections, neck and head.
    Choices vs the authors' hybrid_4: one Vim block per ViT block by default (depth 12; the authors build
    a 24-layer Vim-S but run only its even layers), all vit_depth blocks run (they skip the last) and the
    final LayerNorm is applied (they feed the head the raw block output); timm's embeddings are used
    (they add a new zero position embedding, frozen too by their "vit" name filter).
    """

    def __init__(
        self,
        img_size: tuple[int, int],
        vit_dim: int = 768,
        vit_depth: int = 12,
        vit_heads: int = 12,
        embed_dim: int = 384,
        depth: int = 12,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        check_runs("maformer", depth, vit_depth)
        self._setup_frozen(img_size, vit_dim, vit_depth, vit_heads)
        self.out_dim = vit_dim
        self.layers = vim_layers(embed_dim, depth, drop_path_rate)
        self.down_projs = nn.ModuleList(nn.Linear(vit_dim, embed_dim) for _ in range(vit_depth))
        self.up_projs = nn.ModuleList(nn.Linear(embed_dim, vit_dim) for _ in range(vit_depth))

    def forward(self, images: Tensor) -> Tensor:
        x = self._embed(images)
        residual = None
        runs = block_runs(self.layers, len(self.vit.blocks))
        for i, (block, run) in enumerate(zip(self.vit.blocks, runs, strict=True)):
            hidden, residual = run_blocks(run, self.down_projs[i](x), residual)
            x = block(x) + self.up_projs[i](hidden.to(x.dtype))
        return self.vit.norm(x)

    def _vim_part(self) -> CheckpointPart:
        """Evenly spaced file blocks: a Vim-S's even ones for the default 12, the ones the authors run."""
        return vim_part(self, "layers", every_nth_block("layers.", len(self.layers)))


@register_hybrid(
    "adamtf",
    "AdaMTF hybrid: ViT-B/16 and Vim-S streams joined by adapters fed back to both",
    BOTH,
)
class AdaMTF(ViTHybrid):
    """AdaMTF: ViT and Vim streams side by side; after each ViT block (and its depth/vit_depth Vim blocks)
    an adapter reads both streams' tokens and its output is added back to both.

    Adapter i: [x, v] (768 + 384) -> Linear -> GELU -> Linear -> split, x += first 768, v += last 384.
    Output: the ViT's final LayerNorm of x + up(v), (B, 1 + N, vit_dim). Everything trains (the paper's
    figure shows no frozen part here, and the authors' code freezes nothing for it).
    Choices vs the authors' hybrid_6: the paper says the features are summed; the code concatenates them
    (768 + 384, which no sum could join) and so does this. Their adapter is three Linears without an
    activation (1152 -> 32 -> 32 -> 1152, a rank-32 linear map); here the usual bottleneck adapter with a
    GELU (`adapter_dim` 32). Both streams keep a cls token first (they drop it) so a timm ViT checkpoint
    loads unchanged; the final LayerNorm is applied (they feed the head the raw sum).
    """

    def __init__(
        self,
        img_size: tuple[int, int],
        vit_dim: int = 768,
        vit_depth: int = 12,
        vit_heads: int = 12,
        embed_dim: int = 384,
        depth: int = 24,
        adapter_dim: int = 32,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        check_runs("adamtf", depth, vit_depth)
        if adapter_dim < 1:
            raise UserError(f"adamtf needs adapter_dim >= 1, got {adapter_dim}")
        self._setup(vit_trunk(img_size, vit_dim, vit_depth, vit_heads, drop_path_rate), img_size)
        self.out_dim = vit_dim
        self.stem = VimStem(self.img_size, embed_dim)
        self.layers = vim_layers(embed_dim, depth, drop_path_rate)
        joint = vit_dim + embed_dim
        self.adapters = nn.ModuleList(
            nn.Sequential(nn.Linear(joint, adapter_dim), nn.GELU(), nn.Linear(adapter_dim, joint))
            for _ in range(vit_depth)
        )
        self.up_final = nn.Linear(embed_dim, vit_dim)

    def forward(self, images: Tensor) -> Tensor:
        x = self._embed(images)
        hidden, residual = self.stem(images), None
        d = x.shape[-1]
        runs = block_runs(self.layers, len(self.vit.blocks))
        for i, (block, run) in enumerate(zip(self.vit.blocks, runs, strict=True)):
            x = block(x)
            hidden, residual = run_blocks(run, hidden, residual)
            mix = self.adapters[i](torch.cat([x, hidden.to(x.dtype)], -1))
            x, hidden = x + mix[..., :d], hidden + mix[..., d:].to(hidden.dtype)
        return self.vit.norm(x + self.up_final(hidden.to(x.dtype)))

    def _vim_part(self) -> CheckpointPart:
        """The Vim stem (cls row moved first) and all blocks, in order."""
        keys = prefixed("stem.", same_blocks("layers.", len(self.layers)))
        return vim_part(self, "stem, layers", keys, self.grid_size)


@register_hybrid(
    "kdtm",
    "KDTM hybrid: frozen ViT-B/16 teacher with its own head distilled into a Vim-S student",
    FROZEN,
)
class KDTM(FrozenViTHybrid):
    """KDTM: a frozen ViT teacher with its own PAR head, distilled into a Vim student.

    The student is a whole Vim (middle cls token, as `vim-s`); its tokens are the main stream, so the
    deployed model is exactly a Vim PAR model. The teacher's tokens are those of the authors' `ViT.forward`:
    the embeddings through every block but the last, without the final LayerNorm. They are the
    `teacher_stream`: PARModel gives them their own trainable PARHead, and the training loss is
    BCE(student) + BCE(teacher) + MSE(student logits, teacher logits) (PAROutput.aux_loss; the teacher's
    logits are detached in the MSE so only the student is pulled). In eval mode the ViT is not run.
    Choices vs the authors' hybrid_7: they load a trained ViT-B PAR run and freeze its head too; here the
    ViT comes from `--pretrained vit=` (an ImageNet file, or a vit-b PAR run's backbone) and its head is
    trained alongside.
    (`partool train --teacher RUN` distils from a fully trained run instead.) The last block and the final
    norm are kept, frozen and never run, as in the authors' model, so a ViT checkpoint loads whole.
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
        self._setup_frozen(img_size, vit_dim, vit_depth, vit_heads)
        self.vim = VimBackbone(self.img_size, embed_dim=embed_dim, depth=depth, drop_path_rate=drop_path_rate)
        self.out_dim = embed_dim
        self.teacher_stream = StreamSpec(self.num_tokens, vit_dim)

    def forward(self, images: Tensor) -> Tensor | BackboneOutput:
        check_images(images, self.img_size)
        tokens = self.vim(images)
        if not self.training:
            return tokens
        with torch.no_grad():
            teacher = self._teacher_tokens(images)
        return BackboneOutput(tokens, teacher_tokens=teacher)

    def _teacher_tokens(self, images: Tensor) -> Tensor:
        """The authors' teacher features: embeddings, `blocks[:-1]`, no final norm."""
        x = vit_embed(self.vit, images)
        for block in self.vit.blocks[:-1]:
            x = block(x)
        return x

    def _vim_part(self) -> CheckpointPart:
        """The student is a whole Vim: the file loads into it as into `vim-s`."""
        return CheckpointPart("vim", self.vim, grid_size=self.grid_size)


@register_hybrid(
    "makdf",
    "MaKDF hybrid: frozen ViT-B/16 distilled layer-wise into Vim-S through auxiliary blocks",
    FROZEN,
)
class MaKDF(FrozenViTHybrid):
    """MaKDF: a Vim main branch taught layer by layer by a frozen ViT through auxiliary Mamba blocks.

    Per ViT block i the main branch runs depth/vit_depth Vim blocks, then an auxiliary Vim block reads it;
    up_i (384 -> 768) maps the auxiliary output a_i to the ViT's width, the distillation term is
    MSE(up_i(a_i), ViT block i output) over the patch tokens (cls left out, as the authors), and the
    main branch is guided by down_i(up_i(a_i)) added to its hidden state. Output: the main branch's last
    guided hidden state as it is, (B, 1 + N, 384): no residual added and no norm_f, as the authors' head
    reads `x_vim`. The training loss adds the mean of the per-block MSEs (the backbone's
    aux_loss). The ViT is only a teacher: it runs in training mode only, so eval and export hold no ViT.
    Choices vs the authors' hybrid_8: their code computes the auxiliary block's output and then overwrites
    it with up_i(main hidden), leaving the auxiliary blocks unused; here the auxiliary block is used, as
    the paper describes. They also train a frozen ViT PAR head whose loss gives no gradient; left out.
    All vit_depth blocks are distilled (they skip the last); the Vim stream has its own cls token first so
    its tokens align with the ViT's. Their Vim head is 384 wide; here PARModel's Linear(384 -> 768) neck and
    768-wide head follow, as for every registry model (`PARModel.features` is 768 wide), which is again an
    affine map per attribute of the same 384 features.
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
        check_runs("makdf", depth, vit_depth)
        self._setup_frozen(img_size, vit_dim, vit_depth, vit_heads)
        self.out_dim = embed_dim
        self.stem = VimStem(self.img_size, embed_dim)
        self.layers = vim_layers(embed_dim, depth, drop_path_rate)
        self.aux_layers = vim_layers(embed_dim, vit_depth, 0.0)
        self.up_adapters = nn.ModuleList(nn.Linear(embed_dim, vit_dim) for _ in range(vit_depth))
        self.down_adapters = nn.ModuleList(nn.Linear(vit_dim, embed_dim) for _ in range(vit_depth))

    def forward(self, images: Tensor) -> Tensor | BackboneOutput:
        check_images(images, self.img_size)
        hidden, residual = self.stem(images), None
        x = vit_embed(self.vit, images) if self.training else None
        losses = []
        for i, run in enumerate(block_runs(self.layers, len(self.aux_layers))):
            hidden, residual = run_blocks(run, hidden, residual)
            aux, _ = self.aux_layers[i](hidden, residual)
            guide = self.up_adapters[i](aux)
            hidden = hidden + self.down_adapters[i](guide)
            if x is not None:
                with torch.no_grad():
                    x = self.vit.blocks[i](x)
                losses.append(F.mse_loss(guide[:, 1:].float(), x[:, 1:].float()))
        if not losses:
            return hidden
        return BackboneOutput(hidden, aux_loss=torch.stack(losses).mean())

    def _vim_part(self) -> CheckpointPart:
        """Stem and main blocks in order; the auxiliary blocks copy evenly spaced file blocks (the authors'
        `vim_mid = deepcopy(layers[:-2:2])`, the even ones of Vim-S)."""
        main = prefixed("stem.", same_blocks("layers.", len(self.layers)))
        aux = every_nth_block("aux_layers.", len(self.aux_layers))

        def keys(state: StateDict) -> KeyMap:
            return main(state) + aux(state)

        return vim_part(self, "stem, layers, aux_layers", keys, self.grid_size)
