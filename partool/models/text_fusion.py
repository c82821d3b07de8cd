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

Choices where the paper's code differs or leaves room, and why:
- Tokeniser: by default a word-level vocabulary built from the run's own phrases (works offline, no
  download), in place of the BERT tokenizer of the authors' code. `tokenizer=FOLDER` reads a local Hugging
  Face tokenizer.json instead (the `tokenizers` package; EleutherAI/gpt-neox-20b's for mamba-130m) and
  its ids, right-padded and masked, replace the word ids. Phrases come from a table for the shipped
  datasets' attribute names, else from the name split into words (`attribute_phrase`); `phrases=`
  overrides them.
- Text encoder: by default a small Mamba (`text_dim`, `text_depth`) trained with the rest.
  `text_checkpoint=PATH` loads mamba_ssm's `state-spaces/mamba-130m` (pytorch_model.bin / .safetensors,
  or its folder; `text_checkpoint.py`) as the paper does: sizes come from the tensors (mamba-130m: 768
  wide, 24 layers, 50280 rows, d_state 16, dt_rank 48), the names are mamba_ssm's without `backbone.`
  (embedding, layers.i.norm/mixer.*, norm_f), the LM head is dropped, and the encoder is fine-tuned with
  the rest. The block is mamba_ssm's Mamba v1 (in_proj, causal conv + SiLU, x_proj, softplus dt_proj,
  selective scan with D and a SiLU(z) gate, out_proj; pre-norm RMSNorm with residual; final norm_f). A
  checkpoint needs its own tokenizer: the word vocabulary's ids mean nothing to a pretrained embedding.
  Pooling averages the phrase's tokens only, not the padding the authors' code averages in.
- The registry puts the shared PAR head on top, so the A attribute tokens pass its 1×1 token-mixing conv
  (A -> A) before the per-attribute linears; the paper's text model feeds them to the linears directly.

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
import math
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.checkpoint_files import VIM_S, VMAMBA_B
from partool.models.mamba import RMSNorm, dt_bias_init, export_direction, s4d_real_log
from partool.models.registry import register_model
from partool.models.text_checkpoint import (
    MambaShape,
    load_text_weights,
    load_tokenizer,
    read_mamba_checkpoint,
    tokenize_phrases,
    tokenizer_rows,
)
from partool.models.vim import VimBackbone
from partool.models.vmamba import VMAMBA_B_DROP_PATH, VMambaBackbone
from partool.ops.causal_conv1d import causal_conv1d
from partool.ops.selective_scan import selective_scan

FUSION_DIM = 768  # the width the paper fuses at (mamba-130m's d_model); `fusion_dim` changes it
TEXT_DIM, TEXT_DEPTH = 256, 2  # the text Mamba trained from scratch (`text_dim`, `text_depth` change it)

# PA100K's 26 attributes: the default when a text model is built without a dataset (e.g. `partool models`).
PA100K_ATTRIBUTES = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses", "HandBag",
    "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve", "UpperStride", "UpperLogo",
    "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat", "Trousers", "Shorts",
    "Skirt&Dress", "boots",
)  # fmt: skip

# Phrases for names whose words alone read badly (PA100K, SynthPAR, PETA, RAP spellings).
_PHRASES = {
    "Female": "a female pedestrian",
    "AgeOver60": "age over 60",
    "Age18-60": "age 18 to 60",
    "AgeLess18": "age less than 18",
    "Front": "facing the camera",
    "Side": "seen from the side",
    "Back": "seen from the back",
    "Hat": "wearing a hat",
    "Glasses": "wearing glasses",
    "HandBag": "carrying a handbag",
    "ShoulderBag": "carrying a shoulder bag",
    "Backpack": "carrying a backpack",
    "HoldObjectsInFront": "holding objects in front",
    "ShortSleeve": "short sleeves",
    "LongSleeve": "long sleeves",
    "UpperStride": "upper clothes with stripes",
    "UpperLogo": "upper clothes with a logo",
    "UpperPlaid": "plaid upper clothes",
    "UpperSplice": "spliced upper clothes",
    "UpperDark": "dark upper clothes",
    "UpperRed": "red upper clothes",
    "LowerStripe": "lower clothes with stripes",
    "LowerPattern": "patterned lower clothes",
    "LowerDark": "dark lower clothes",
    "LongCoat": "a long coat",
    "Trousers": "trousers",
    "Shorts": "shorts",
    "Skirt&Dress": "a skirt or a dress",
    "boots": "wearing boots",
    "LongHair": "long hair",
    "personalLess30": "age less than 30",
    "personalLess45": "age 30 to 45",
    "personalLess60": "age 45 to 60",
    "personalLarger60": "age over 60",
    "personalMale": "a male pedestrian",
}
# Leading words of PETA / RAP names, spelled out.
_PREFIXES = {
    "personal": "",
    "accessory": "wearing",
    "carrying": "carrying",
    "upperbody": "upper body",
    "lowerbody": "lower body",
    "footwear": "footwear",
    "hair": "hair",
    "hs": "head",
    "ub": "upper body",
    "lb": "lower body",
    "shoes": "shoes",
    "attach": "carrying",
    "action": "",
    "age": "age",
}


def attribute_phrase(name: str) -> str:
    """A phrase for an attribute name: from the table, else its words (camelCase, '-', '_' split)."""
    if name in _PHRASES:
        return _PHRASES[name]
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+", name)
    words = [w.lower() for w in words]
    if len(words) > 1 and words[0] in _PREFIXES:
        words = [*_PREFIXES[words[0]].split(), *words[1:]]
    elif len(words) > 2 and words[0] + words[1] in _PREFIXES:
        words = [*_PREFIXES[words[0] + words[1]].split(), *words[2:]]
    return " ".join(words) or name.lower()


def phrase_words(phrase: str) -> list[str]:
    """The vocabulary's units: lower-case words and numbers."""
    return re.findall(r"[a-z]+|\d+", phrase.lower())


def encode_phrases(phrases: Sequence[str]) -> tuple[Tensor, Tensor, list[str]]:
    """(ids (A, L) with 0 = padding, mask (A, L) of real words, vocabulary) for a word-level vocabulary.

    The vocabulary is the sorted set of the phrases' words, so the same phrases always give the same ids.
    """
    tokenised = [phrase_words(p) for p in phrases]
    for phrase, words in zip(phrases, tokenised, strict=True):
        if not words:
            raise ValueError(f"attribute phrase {phrase!r} has no words to encode")
    vocab = sorted({w for words in tokenised for w in words})
    index = {w: i + 1 for i, w in enumerate(vocab)}
    length = max(len(words) for words in tokenised)
    ids = torch.zeros(len(phrases), length, dtype=torch.long)
    for row, words in enumerate(tokenised):
        ids[row, : len(words)] = torch.tensor([index[w] for w in words])
    return ids, ids > 0, vocab


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

    def _export_forward(self, hidden: Tensor) -> Tensor:
        """`forward` in the ops ONNX Runtime runs fastest (as `BiMamba._export_forward`, one direction)."""
        d = self.d_inner
        x = torch.matmul(hidden, self.in_proj.weight[:d].t())  # (B, L, d_inner)
        z = torch.matmul(hidden, self.in_proj.weight[d:].t()).transpose(1, 2)  # (B, d_inner, L)
        A, D = -torch.exp(self.A_log.float()), self.D.float()
        y = export_direction(x, z, self.conv1d, self.x_proj, self.dt_proj, A, D, reverse=False)
        return torch.matmul(y.transpose(1, 2), self.out_proj.weight.t())

    def forward(self, hidden: Tensor) -> Tensor:
        if torch.onnx.is_in_onnx_export():
            return self._export_forward(hidden)
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L) each
        xc = causal_conv1d(x, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
        dt, B, C = torch.split(
            self.x_proj(xc.transpose(1, 2)), [self.dt_rank, self.d_state, self.d_state], -1
        )
        y = selective_scan(
            xc, F.linear(dt, self.dt_proj.weight).transpose(1, 2), -torch.exp(self.A_log.float()),
            B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z, delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )  # fmt: skip
        return self.out_proj(y.transpose(1, 2))


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
        self.text, ids, mask, self.vocab, shape = build_text_encoder(
            phrases, text_dim, text_depth, text_checkpoint, tokenizer, text_shape, text_tokens
        )
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
                "ids": ids.tolist(),
                "mask": mask.int().tolist(),
                "rows": rows,
            }
        self.text_proj = nn.Linear(self.text.embedding.embedding_dim, dim)
        self.text_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = RMSNorm(dim)
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("token_mask", mask, persistent=False)
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


def build_text_encoder(
    phrases: Sequence[str],
    text_dim: int | None = None,
    text_depth: int | None = None,
    text_checkpoint: str | Path | None = None,
    tokenizer: str | Path | None = None,
    text_shape: dict[str, int] | None = None,
    text_tokens: dict[str, Any] | None = None,
) -> tuple[TextMamba, Tensor, Tensor, list[str] | None, MambaShape | None]:
    """(text encoder, token ids (A, L), mask (A, L), word vocabulary or None, checkpoint sizes or None).

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
    vocab = None
    if text_tokens is not None:
        ids, mask, rows = _stored_tokens(text_tokens, len(phrases))
        args: dict[str, Any] = dict(num_embeddings=rows, padding_idx=None)
    elif tokenizer is None:
        ids, mask, vocab = encode_phrases(phrases)
        args = dict(num_embeddings=len(vocab) + 1, padding_idx=0)
    else:
        hf_tokenizer = load_tokenizer(tokenizer)
        rows = checkpoint[1].vocab_size if checkpoint else None
        ids, mask = tokenize_phrases(
            hf_tokenizer, phrases, tokenizer, rows, f"text_checkpoint {text_checkpoint}"
        )
        args = dict(num_embeddings=tokenizer_rows(hf_tokenizer), padding_idx=None)
    if shape is None:
        text = TextMamba(dim=text_dim or TEXT_DIM, depth=text_depth or TEXT_DEPTH, **args)
        return text, ids, mask, vocab, None
    source = f"text_checkpoint {checkpoint[2]}" if checkpoint else "the run's text_shape"
    text = TextMamba(**_checkpoint_text_args(shape, source, text_dim, text_depth))
    if checkpoint is not None:
        load_text_weights(text, checkpoint[0], checkpoint[2])
    return text, ids, mask, vocab, shape


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


def _stored_tokens(text_tokens: dict[str, Any], num_phrases: int) -> tuple[Tensor, Tensor, int]:
    """(ids, mask, embedding rows) of a run's `text_tokens`; UserError when they do not fit the phrases."""
    try:
        ids = torch.tensor(text_tokens["ids"], dtype=torch.long)
        mask = torch.tensor(text_tokens["mask"], dtype=torch.bool)
        rows = int(text_tokens["rows"])
        fits = ids.dim() == 2 and ids.shape == mask.shape and ids.shape[0] == num_phrases
        fits = fits and bool((ids >= 0).all() and (ids < rows).all())
    except (KeyError, TypeError, ValueError, RuntimeError):
        fits = False
    if not fits:
        raise UserError(
            f"text_tokens do not hold token ids (ids, mask: {num_phrases} rows each; rows: the embedding "
            "size) for the model's phrases; the run's partool.json was edited or damaged"
        )
    return ids, mask, rows


def _checkpoint_text_args(
    shape: MambaShape, source: str, text_dim: int | None, text_depth: int | None
) -> dict[str, Any]:
    """TextMamba's arguments for a checkpoint's sizes; `text_dim`/`text_depth`, when given, must agree."""
    for name, given, found in (
        ("text_dim", text_dim, shape.d_model),
        ("text_depth", text_depth, shape.n_layer),
    ):
        if given is not None and given != found:
            raise UserError(
                f"{name}={given} but {source} has {found}; leave {name} out (the checkpoint "
                f"sets it) or pass {name}={found}"
            )
    return dict(
        num_embeddings=shape.vocab_size, dim=shape.d_model, depth=shape.n_layer, padding_idx=None,
        d_state=shape.d_state, d_conv=shape.d_conv, expand=shape.d_inner / shape.d_model,
        dt_rank=shape.dt_rank,
    )  # fmt: skip


def _refold(module: nn.Module, incompatible: Any) -> None:
    """New weights change the attribute tokens: refresh the folded copy of a model in eval mode."""
    if not module.training:
        module.fold()


@register_model(
    "vim-s-text",
    "vim",
    "Vim-S + attribute phrases (text Mamba) fused by two VSF Mamba layers (MambaPAR)",
    checkpoints=(("vim", VIM_S),),
)
def vim_small_text(
    img_size: tuple[int, int] = (224, 224),
    attributes: Sequence[str] | None = None,
    phrases: Sequence[str] | None = None,
    embed_dim: int = 384,
    depth: int = 24,
    drop_path_rate: float = 0.1,
    text_dim: int | None = None,
    text_depth: int | None = None,
    fusion_dim: int | None = None,
    text_checkpoint: str | None = None,
    tokenizer: str | None = None,
    text_shape: dict[str, int] | None = None,
    text_tokens: dict[str, Any] | None = None,
) -> TextFusionBackbone:
    vision = VimBackbone(img_size, embed_dim=embed_dim, depth=depth, drop_path_rate=drop_path_rate)
    return TextFusionBackbone(
        vision, attributes, phrases, text_dim, text_depth, dim=fusion_dim, text_checkpoint=text_checkpoint,
        tokenizer=tokenizer, text_shape=text_shape, text_tokens=text_tokens,
    )  # fmt: skip


@register_model(
    "vmamba-b-text",
    "vmamba",
    "VMamba-B + attribute phrases (text Mamba) fused by two VSF Mamba layers (MambaPAR)",
    checkpoints=(("vmamba", VMAMBA_B),),
)
def vmamba_base_text(
    img_size: tuple[int, int] = (224, 224),
    attributes: Sequence[str] | None = None,
    phrases: Sequence[str] | None = None,
    depths: Sequence[int] = (2, 2, 27, 2),
    dims: Sequence[int] | int = 128,
    drop_path_rate: float = VMAMBA_B_DROP_PATH,
    text_dim: int | None = None,
    text_depth: int | None = None,
    fusion_dim: int | None = None,
    text_checkpoint: str | None = None,
    tokenizer: str | None = None,
    text_shape: dict[str, int] | None = None,
    text_tokens: dict[str, Any] | None = None,
) -> TextFusionBackbone:
    vision = VMambaBackbone(img_size, depths=depths, dims=dims, drop_path_rate=drop_path_rate)
    return TextFusionBackbone(
        vision, attributes, phrases, text_dim, text_depth, dim=fusion_dim, text_checkpoint=text_checkpoint,
        tokenizer=tokenizer, text_shape=text_shape, text_tokens=text_tokens,
    )  # fmt: skip
