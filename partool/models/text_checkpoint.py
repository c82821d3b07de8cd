"""A pretrained text encoder for the fusion models: a mamba_ssm LM checkpoint and a Hugging Face tokenizer.

`state-spaces/mamba-130m` (as downloaded from the Hugging Face hub: `pytorch_model.bin` + `config.json`)
is mamba_ssm's `MambaLMHeadModel`: `backbone.embedding`, `backbone.layers.{i}.norm` (RMSNorm) and
`.mixer.*` (Mamba v1: in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), `backbone.norm_f`, and
`lm_head` (tied to the embedding; a text encoder has no use for it). `TextMamba` (`text_encoder.py`) uses
the same names without `backbone.`, so loading is a rename plus a strict shape check. The block sizes
(d_model, layers, vocabulary rows, d_inner, d_state, d_conv, dt_rank) are read off the tensors, not from
`config.json`, so a checkpoint describes itself. transformers' `-hf` conversions spell the embedding
`embeddings`; that spelling is accepted too.

The mamba models were trained on EleutherAI/gpt-neox-20b's tokenizer; its `tokenizer.json` is read with
the `tokenizers` library (an optional dependency, imported only when a tokenizer is asked for).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.pretrained import read_checkpoint

CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")
_PREFIX = "backbone."
_DROPPED = ("lm_head.weight",)  # the LM head: tied to the embedding, unused by an encoder
_LAYER = re.compile(r"layers\.(\d+)\.")


@dataclass(frozen=True)
class MambaShape:
    """The sizes of a Mamba v1 language model, as its tensors give them."""

    vocab_size: int  # embedding rows (mamba-130m: 50280, the tokenizer's 50277 padded to a multiple of 8)
    d_model: int
    n_layer: int
    d_inner: int
    d_state: int
    d_conv: int
    dt_rank: int


def checkpoint_file(path: str | Path) -> Path:
    """The weights file of `path`: the file itself, or the folder's model.safetensors / pytorch_model.bin."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in CHECKPOINT_FILES:
            if (path / name).is_file():
                return path / name
        raise UserError(
            f"text_checkpoint {path} is a folder without {' or '.join(CHECKPOINT_FILES)}; pass the folder "
            "downloaded from the Hugging Face hub state-spaces/mamba-130m, or the weights file itself"
        )
    if not path.is_file():
        raise UserError(
            f"text_checkpoint {path} does not exist; pass the path of state-spaces/mamba-130m's "
            "pytorch_model.bin (or its folder)"
        )
    return path


def _read_tensors(file: Path) -> dict[str, Tensor]:
    """Every tensor of a .safetensors file or a torch.save'd state dict, read without unpickling code."""
    state = read_checkpoint(file, "text_checkpoint")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(
            f"text_checkpoint {file} is not a state dict (name -> tensor); pass mamba_ssm's pytorch_model.bin"
        )
    return state


def read_mamba_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], MambaShape, Path]:
    """(tensors under TextMamba's names, the sizes they imply, the file read) of a MambaLMHeadModel checkpoint."""
    file = checkpoint_file(path)
    state: dict[str, Tensor] = {}
    for key, value in _read_tensors(file).items():
        if key in _DROPPED:
            continue
        if not key.startswith(_PREFIX):
            raise UserError(
                f"text_checkpoint {file} holds {key!r}, which is not a mamba_ssm MambaLMHeadModel name "
                f"('{_PREFIX}...' or lm_head.weight); pass a state-spaces/mamba-* (Mamba v1) checkpoint"
            )
        name = key[len(_PREFIX) :]
        state["embedding." + name[len("embeddings.") :] if name.startswith("embeddings.") else name] = value
    return state, _shape(state, file), file


def _shape(state: dict[str, Tensor], file: Path) -> MambaShape:
    """The sizes read off the embedding and layer 0; every other tensor is checked against them on load."""

    def tensor(name: str, ndim: int) -> Tensor:
        if name not in state:
            raise UserError(
                f"text_checkpoint {file} has no {_PREFIX}{name}; pass a state-spaces/mamba-* (Mamba v1) "
                "checkpoint as saved by mamba_ssm's MambaLMHeadModel"
            )
        value = state[name]
        if value.ndim != ndim:
            raise UserError(
                f"text_checkpoint {file}: {_PREFIX}{name} has shape {tuple(value.shape)}, a Mamba v1 "
                f"block has a {ndim}-d tensor there (a Mamba-2 checkpoint?); pass a state-spaces/mamba-* "
                "(Mamba v1) checkpoint"
            )
        return value

    vocab_size, d_model = tensor("embedding.weight", 2).shape
    layers = {int(m.group(1)) for key in state if (m := _LAYER.match(key))}
    if not layers or layers != set(range(max(layers) + 1)):
        raise UserError(
            f"text_checkpoint {file}: layer numbers {sorted(layers)} are not 0..n-1; the file is incomplete, "
            "download it again"
        )
    d_inner, d_state = tensor("layers.0.mixer.A_log", 2).shape
    d_conv = tensor("layers.0.mixer.conv1d.weight", 3).shape[-1]
    dt_rank = tensor("layers.0.mixer.x_proj.weight", 2).shape[0] - 2 * d_state
    return MambaShape(vocab_size, d_model, len(layers), d_inner, d_state, d_conv, dt_rank)


def load_text_weights(module: nn.Module, state: dict[str, Tensor], file: Path) -> None:
    """Copy `state` into `module`, every name and shape matched (UserError listing what differs)."""
    expected = module.state_dict()
    problems = [f"missing {_PREFIX}{k}" for k in expected if k not in state]
    problems += [f"unexpected {_PREFIX}{k}" for k in state if k not in expected]
    problems += [
        f"{_PREFIX}{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UserError(
            f"text_checkpoint {file} does not fit a Mamba v1 text encoder: {'; '.join(problems[:3])}{more}; "
            "pass a state-spaces/mamba-* checkpoint saved by mamba_ssm's MambaLMHeadModel"
        )
    if not any(p.is_meta for p in module.parameters()):  # meta-device builds (parameter counts) hold no data
        module.load_state_dict(state, strict=True)


def load_tokenizer(path: str | Path) -> Any:
    """A `tokenizers.Tokenizer` from a Hugging Face tokenizer folder (its tokenizer.json) or that file."""
    path = Path(path).expanduser()
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(
            f"tokenizer {path}: no tokenizer.json there; pass a local Hugging Face tokenizer folder, e.g. "
            "EleutherAI/gpt-neox-20b's (the mamba models' tokenizer)"
        )
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UserError(
            f"tokenizer {path} needs the `tokenizers` package; `pip install tokenizers`"
        ) from None
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises plain Exception for unreadable or malformed files
        raise UserError(f"cannot read tokenizer {file}: {e}; pass an intact tokenizer.json") from None
    tokenizer.no_padding()  # phrases are padded here, to the longest one, with a mask
    tokenizer.no_truncation()
    return tokenizer


def tokenizer_rows(tokenizer: Any) -> int:
    """Embedding rows a tokenizer's ids need: its largest id + 1 (ids need not be dense; its vocab size
    counts entries)."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def tokenize_phrases(
    tokenizer: Any, phrases: Sequence[str], where: str | Path, rows: int | None = None, rows_of: str = ""
) -> tuple[Tensor, Tensor]:
    """(ids (A, L), mask (A, L) of real tokens) of the phrases, right-padded with id 0 (masked out).

    `rows`: the embedding rows of a pretrained encoder (`rows_of` names it); an id past them is a UserError.
    """
    encoded = [tokenizer.encode(phrase).ids for phrase in phrases]
    for phrase, ids in zip(phrases, encoded, strict=True):
        if not ids:
            raise UserError(
                f"tokenizer {where} turns attribute phrase {phrase!r} into no tokens; pass `phrases` that "
                "it can encode"
            )
        if rows is not None and max(ids) >= rows:
            raise UserError(
                f"tokenizer {where} gives token id {max(ids)} for {phrase!r}, past the {rows} embedding rows "
                f"of {rows_of}; pass the tokenizer it was trained with (EleutherAI/gpt-neox-20b for "
                "state-spaces/mamba-*)"
            )
    ids = torch.zeros(len(encoded), max(len(e) for e in encoded), dtype=torch.long)
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = True
    return ids, mask
