"""Image-text fusion of MambaPAR (`vim-s-text`, `vmamba-b-text`): attribute phrases meet the image in Mamba.

The paper's design (arXiv 2407.10374; Event-AHU/OpenPAR, MambaPAR_Empirical_Study/models/base_block.py):
each attribute's phrase is encoded by a text Mamba and mean-pooled, projected to 768 and given a learned
text-modality embedding; the vision tokens, projected to 768, get a vision-modality embedding; [vision
tokens, attribute tokens] pass two Vision-Semantic-Fusion (VSF) Mamba layers, each `x + mixer(norm(x))`
(mamba_ssm's pre-norm Block with the residual added outside), then an RMSNorm; the last A tokens are the
per-attribute features. The VSF layers are unidirectional, so with the attribute tokens last every one of
them has read the whole image.

Choices where the paper's code differs or leaves room, and why:
- Tokeniser: a word-level vocabulary built from the run's own phrases (works offline, no download), in
  place of the BERT tokenizer of the authors' code. Phrases come from a table for the shipped datasets'
  attribute names, else from the name split into words (`attribute_phrase`); `phrases=` overrides them.
- Text encoder: a small Mamba (`text_dim`, `text_depth`) trained with the rest, in place of a pretrained
  mamba-130m (its parameter names follow mamba_ssm's: embedding, layers.i.norm/mixer.*, norm_f). Pooling
  averages the phrase's words only, not the padding the authors' code averages in.
- The registry puts the shared PAR head on top, so the A attribute tokens pass its 1×1 token-mixing conv
  (A -> A) before the per-attribute linears; the paper's text model feeds them to the linears directly.

The text branch depends on weights only, not on the image, so in eval mode its output (A, 768) is computed
once and kept in a buffer (`fold`); ONNX export (which puts the model in eval mode) then traces a graph
with the attribute tokens as constants and no text encoder in it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partool.models.mamba import RMSNorm, dt_bias_init, s4d_real_log
from partool.models.registry import register_model
from partool.models.vim import VimBackbone
from partool.models.vmamba import VMambaBackbone
from partool.ops.causal_conv1d import causal_conv1d
from partool.ops.selective_scan import selective_scan

FUSION_DIM = 768  # the width the paper fuses at (mamba-130m's d_model); `fusion_dim` changes it

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

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.d_state = d_state
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
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

    def forward(self, hidden: Tensor) -> Tensor:
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

    def __init__(self, dim: int, d_state: int = 16) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        self.mixer = Mamba(dim, d_state)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x)).to(x.dtype)


class TextMamba(nn.Module):
    """Word embedding, Mamba blocks, final RMSNorm; forward(ids, mask) -> one mean-pooled vector per phrase."""

    def __init__(self, vocab_size: int, dim: int, depth: int, d_state: int = 16) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 1, dim, padding_idx=0)
        self.layers = nn.ModuleList(MambaBlock(dim, d_state) for _ in range(depth))
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
        text_dim: int = 256,
        text_depth: int = 2,
        fusion_depth: int = 2,
        dim: int = FUSION_DIM,
    ) -> None:
        super().__init__()
        attributes = list(attributes or PA100K_ATTRIBUTES)
        phrases = list(phrases) if phrases is not None else [attribute_phrase(a) for a in attributes]
        if len(phrases) != len(attributes):
            raise ValueError(f"{len(phrases)} phrases for {len(attributes)} attributes")
        ids, mask, vocab = encode_phrases(phrases)
        self.phrases, self.vocab = phrases, vocab
        self.vision = vision
        self.family = vision.family
        self.img_size = vision.img_size
        self.num_tokens, self.out_dim = len(attributes), dim
        self.vision_proj = nn.Linear(vision.out_dim, dim) if vision.out_dim != dim else nn.Identity()
        self.vision_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.text = TextMamba(len(vocab), text_dim, text_depth)
        self.text_proj = nn.Linear(text_dim, dim)
        self.text_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.fusion = nn.ModuleList(MambaBlock(dim) for _ in range(fusion_depth))
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


def _refold(module: nn.Module, incompatible: Any) -> None:
    """New weights change the attribute tokens: refresh the folded copy of a model in eval mode."""
    if not module.training:
        module.fold()


@register_model(
    "vim-s-text", "vim", "Vim-S + attribute phrases (text Mamba) fused by two VSF Mamba layers (MambaPAR)"
)
def vim_small_text(
    img_size: tuple[int, int] = (224, 224),
    attributes: Sequence[str] | None = None,
    phrases: Sequence[str] | None = None,
    embed_dim: int = 384,
    depth: int = 24,
    drop_path_rate: float = 0.1,
    text_dim: int = 256,
    text_depth: int = 2,
    fusion_dim: int = FUSION_DIM,
) -> TextFusionBackbone:
    vision = VimBackbone(img_size, embed_dim=embed_dim, depth=depth, drop_path_rate=drop_path_rate)
    return TextFusionBackbone(vision, attributes, phrases, text_dim, text_depth, dim=fusion_dim)


@register_model(
    "vmamba-b-text",
    "vmamba",
    "VMamba-B + attribute phrases (text Mamba) fused by two VSF Mamba layers (MambaPAR)",
)
def vmamba_base_text(
    img_size: tuple[int, int] = (224, 224),
    attributes: Sequence[str] | None = None,
    phrases: Sequence[str] | None = None,
    depths: Sequence[int] = (2, 2, 27, 2),
    dims: Sequence[int] | int = 128,
    drop_path_rate: float = 0.1,
    text_dim: int = 256,
    text_depth: int = 2,
    fusion_dim: int = FUSION_DIM,
) -> TextFusionBackbone:
    vision = VMambaBackbone(img_size, depths=depths, dims=dims, drop_path_rate=drop_path_rate)
    return TextFusionBackbone(vision, attributes, phrases, text_dim, text_depth, dim=fusion_dim)
