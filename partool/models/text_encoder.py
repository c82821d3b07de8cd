"""The text encoder of the fusion models: a Mamba language model that turns each attribute phrase into one
vector (mamba_ssm's Mamba v1 block and MixerModel, same parameter names), and the Mamba block the fusion
layers are made of.

The text encoder, where the paper's code (Event-AHU/OpenPAR, MambaPAR_Empirical_Study/models/base_block.py)
differs or leaves room, and why: by default a small Mamba (`text_dim`, `text_depth`) trained with the rest.
`text_checkpoint=PATH` loads mamba_ssm's `state-spaces/mamba-130m` (pytorch_model.bin / .safetensors, or
its folder; `text_checkpoint.py`) as the paper does: sizes come from the tensors (mamba-130m: 768 wide, 24
layers, 50280 rows, d_state 16, dt_rank 48), the names are mamba_ssm's without `backbone.` (embedding,
layers.i.norm/mixer.*, norm_f), the LM head is dropped, and the encoder is fine-tuned with the rest. The
block is mamba_ssm's Mamba v1 (in_proj, causal conv + SiLU, x_proj, softplus dt_proj, selective scan with D
and a SiLU(z) gate, out_proj; pre-norm RMSNorm with residual; final norm_f). A checkpoint needs its own
tokenizer: the word vocabulary's ids mean nothing to a pretrained embedding. Pooling averages the phrase's
tokens only, not the padding the authors' code averages in.

A run folder stores the encoder's sizes (`text_shape`) in place of `text_checkpoint` (its weights are in
the run's own weights file), so a copied run rebuilds without the 500 MB language model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.mamba import RMSNorm, dt_bias_init, s4d_real_log
from partool.models.text_checkpoint import MambaShape, load_text_weights, read_mamba_checkpoint
from partool.models.text_phrases import PhraseTokens, phrase_tokens
from partool.ops.mamba_inner import MambaDirection, mamba_inner_fn

TEXT_DIM, TEXT_DEPTH = 256, 2  # the text Mamba trained from scratch (`text_dim`, `text_depth` change it)


class Mamba(nn.Module):
    """The unidirectional Mamba mixer (mamba_ssm's `Mamba`, same parameter names): (B, L, d) -> (B, L, d)."""

    def __init__(
        self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2, dt_rank: int | None = None
    ) -> None:
        super().__init__()
        self.d_state = d_state
        self.d_inner = int(expand * d_model)
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt_bias_init(self.d_inner))
        self.A_log = nn.Parameter(s4d_real_log(self.d_inner, d_state))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def direction(self) -> MambaDirection:
        """The weights `mamba_inner_fn` takes."""
        return MambaDirection(
            self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias,
            self.A_log, self.D,
        )  # fmt: skip

    def forward(self, hidden: Tensor) -> Tensor:
        return mamba_inner_fn(hidden, self.in_proj.weight, self.out_proj.weight, self.direction())


class MambaBlock(nn.Module):
    """x + mixer(norm(x)): mamba_ssm's pre-norm Block with its residual added, as the VSF layers use it."""

    def __init__(self, dim: int, d_state: int = 16, **mixer: Any) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        self.mixer = Mamba(dim, d_state, **mixer)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x)).to(x.dtype)


class TextMamba(nn.Module):
    """Token embedding, Mamba blocks, final RMSNorm; forward(ids, mask) -> one mean-pooled vector per phrase.

    mamba_ssm's MixerModel (MambaLMHeadModel's `backbone`) with the same parameter names: its blocks carry
    (hidden, residual) and add them before each norm, which is `h + mixer(norm(h))` per layer written
    another way. `padding_idx` 0 for the word vocabulary (id 0 = padding, never learned); None for a
    tokenizer's ids, where 0 is a real token and the mask alone keeps padding out of the mean.
    """

    def __init__(
        self, num_embeddings: int, dim: int, depth: int, padding_idx: int | None = 0, d_state: int = 16,
        **mixer: Any,
    ) -> None:  # fmt: skip
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, dim, padding_idx=padding_idx)
        self.layers = nn.ModuleList(MambaBlock(dim, d_state, **mixer) for _ in range(depth))
        self.norm_f = RMSNorm(dim)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        h = self.embedding(ids)
        for layer in self.layers:  # causal and right-padded: the padding never reaches a real word
            h = layer(h)
        h = self.norm_f(h)
        weights = mask.to(h.dtype).unsqueeze(-1)
        return (h * weights).sum(1) / weights.sum(1)


def build_text_encoder(
    phrases: Sequence[str],
    text_dim: int | None = None,
    text_depth: int | None = None,
    text_checkpoint: str | Path | None = None,
    tokenizer: str | Path | None = None,
    text_shape: dict[str, int] | None = None,
    text_tokens: dict[str, Any] | None = None,
) -> tuple[TextMamba, PhraseTokens, MambaShape | None]:
    """(text encoder, the phrases' tokens, checkpoint sizes or None).

    Without a tokenizer the phrases' own word vocabulary; with one its ids (and embedding rows for its whole
    vocabulary). Without a checkpoint a fresh `text_dim` x `text_depth` Mamba; with one the checkpoint's
    sizes and weights, which need the tokenizer its embedding was trained with. A run folder's
    `text_shape` / `text_tokens` stand in for the checkpoint / tokenizer: the same sizes and ids, no files
    (the weights come from the run).
    """
    for path_arg, stored, name in (
        (text_checkpoint, text_shape, "text_checkpoint/text_shape"),
        (tokenizer, text_tokens, "tokenizer/text_tokens"),
    ):
        if path_arg is not None and stored is not None:
            raise UserError(
                f"pass one of {name}, not both (a run folder stores the second in place of the first)"
            )
    if (text_checkpoint is not None or text_shape is not None) and tokenizer is None and text_tokens is None:
        source = f"text_checkpoint {text_checkpoint}" if text_checkpoint is not None else "text_shape"
        raise UserError(
            f"{source} needs the tokenizer its embedding was trained with (the "
            "word vocabulary does not match it); pass --model-arg tokenizer=FOLDER, e.g. a local copy "
            "of EleutherAI/gpt-neox-20b for state-spaces/mamba-130m"
        )
    checkpoint = read_mamba_checkpoint(text_checkpoint) if text_checkpoint is not None else None
    shape = checkpoint[1] if checkpoint else _stored_shape(text_shape)
    rows = checkpoint[1].vocab_size if checkpoint else None
    tokens = phrase_tokens(phrases, tokenizer, text_tokens, rows, f"text_checkpoint {text_checkpoint}")
    if shape is None:
        text = TextMamba(
            tokens.rows, text_dim or TEXT_DIM, text_depth or TEXT_DEPTH, padding_idx=tokens.padding_idx
        )
        return text, tokens, None
    source = f"text_checkpoint {checkpoint[2]}" if checkpoint else "the run's text_shape"
    text = TextMamba(**_checkpoint_text_args(shape, source, text_dim, text_depth))
    if checkpoint is not None:
        load_text_weights(text, checkpoint[0], checkpoint[2])
    return text, tokens, shape


def _stored_shape(text_shape: dict[str, int] | None) -> MambaShape | None:
    """A run's `text_shape` as a MambaShape; UserError when it is not one."""
    if text_shape is None:
        return None
    try:
        return MambaShape(**{k: int(v) for k, v in text_shape.items()})
    except (AttributeError, TypeError, ValueError):
        raise UserError(
            f"text_shape {text_shape!r} is not a text encoder's sizes (keys: vocab_size, d_model, n_layer, "
            "d_inner, d_state, d_conv, dt_rank); the run's partool.json was edited or damaged"
        ) from None


def _checkpoint_text_args(
    shape: MambaShape, source: str, text_dim: int | None, text_depth: int | None
) -> dict[str, Any]:
    """TextMamba's arguments for a checkpoint's sizes; `text_dim`/`text_depth`, when given, must agree."""
    return dict(
        num_embeddings=shape.vocab_size, dim=_agreed("text_dim", text_dim, shape.d_model, source),
        depth=_agreed("text_depth", text_depth, shape.n_layer, source), padding_idx=None,
        d_state=shape.d_state, d_conv=shape.d_conv, expand=shape.d_inner / shape.d_model,
        dt_rank=shape.dt_rank,
    )  # fmt: skip


def _agreed(name: str, given: int | None, found: int, source: str) -> int:
    """`found`, the checkpoint's size; UserError when the user's `given` differs from it."""
    if given is not None and given != found:
        raise UserError(
            f"{name}={given} but {source} has {found}; leave {name} out (the checkpoint "
            f"sets it) or pass {name}={found}"
        )
    return found
