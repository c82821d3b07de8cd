"""Attribute phrases for the text-fusion models: the words each attribute is read as, and their token ids.

The tokeniser, where the paper's code (Event-AHU/OpenPAR, MambaPAR_Empirical_Study/models/base_block.py)
differs, and why: by default a word-level vocabulary built from the run's own phrases (works offline, no
download), in place of the BERT tokenizer of the authors' code. `tokenizer=FOLDER` reads a local Hugging
Face tokenizer.json instead (the `tokenizers` package; EleutherAI/gpt-neox-20b's for mamba-130m) and its
ids, right-padded and masked, replace the word ids. Phrases come from a table for the shipped datasets'
attribute names, else from the name split into words (`attribute_phrase`); `phrases=` overrides them.

A run folder stores a tokenizer's ids (`text_tokens`: ids, mask, embedding rows) in place of the
tokenizer, so a copied run rebuilds without it (`phrase_tokens` reads them back).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from partool.errors import UserError
from partool.models.text_checkpoint import load_tokenizer, tokenize_phrases, tokenizer_rows

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


@dataclass(frozen=True)
class PhraseTokens:
    """The phrases as token ids, and the embedding a text encoder needs to read them."""

    ids: Tensor  # (A, L), right-padded with id 0
    mask: Tensor  # (A, L): the real tokens
    vocab: list[str] | None  # the word vocabulary; None for a tokenizer's ids
    rows: int  # embedding rows the ids need
    padding_idx: int | None  # 0 for the word vocabulary; None for a tokenizer's ids, where 0 is a real token


def phrase_tokens(
    phrases: Sequence[str],
    tokenizer: str | Path | None = None,
    text_tokens: dict[str, Any] | None = None,
    rows: int | None = None,
    rows_of: str = "",
) -> PhraseTokens:
    """The phrases' tokens: a run's stored `text_tokens`, else the `tokenizer`'s ids, else the word
    vocabulary. `rows`: the embedding rows of a pretrained encoder (`rows_of` names it) the tokenizer's ids
    must stay below."""
    if text_tokens is not None:
        ids, mask, stored_rows = _stored_tokens(text_tokens, len(phrases))
        return PhraseTokens(ids, mask, None, stored_rows, None)
    if tokenizer is None:
        ids, mask, vocab = encode_phrases(phrases)
        return PhraseTokens(ids, mask, vocab, len(vocab) + 1, 0)
    hf_tokenizer = load_tokenizer(tokenizer)
    ids, mask = tokenize_phrases(hf_tokenizer, phrases, tokenizer, rows, rows_of)
    return PhraseTokens(ids, mask, None, tokenizer_rows(hf_tokenizer), None)


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
