"""Load official ImageNet checkpoints (Vim, VMamba v0, timm ViT) into a PARModel's backbone.

Files are read without running code: `torch.load(weights_only=True)` or safetensors. Training checkpoints
of the official repos also pickle their run configuration (`argparse.Namespace` in Vim/DeiT-style files,
a yacs `CfgNode` in Swin/VMamba-style files, numpy scalars for metrics); those are data and are allowed
(the CfgNode is read as a plain OrderedDict, yacs is never imported). Anything else that names a Python
global is refused with a UserError.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from partool.errors import UserError
from partool.models.vim import resample_midcls_pos_embed

StateDict = dict[str, Tensor]

# Which family a state dict belongs to, by a key pattern only that family has.
_FAMILY_PATTERNS = {
    "vim": re.compile(r"^layers\.\d+\.mixer\.in_proj\.weight$"),
    "vmamba": re.compile(r"^layers\.\d+\.blocks\.\d+\.self_attention\.in_proj\.weight$"),
    "vit": re.compile(r"^blocks\.\d+\.attn\.qkv\.weight$"),
    "vmamba (v1 or later)": re.compile(r"^layers\.\d+\.blocks\.\d+\.op\.in_proj\.weight$"),
}
_WRAPPER_KEYS = ("model", "state_dict", "model_ema")  # where training scripts keep the weights
_PREFIXES = ("module.", "backbone.")  # DistributedDataParallel / wrapper prefixes


class _CfgNodeAsDict(OrderedDict):
    """Stand-in for yacs' CfgNode (a dict subclass): unpickles as a plain OrderedDict, no yacs code runs."""

    def __new__(cls, *args: object, **kwargs: object) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


def _data_globals() -> list:
    """Globals that only carry data and appear in official training checkpoints."""
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "bool")]
    scalar = np.dtype("float64").type(0).__reduce__()[0]  # numpy's scalar reconstructor
    return [
        argparse.Namespace,
        (_CfgNodeAsDict, "yacs.config.CfgNode"),
        np.dtype,
        *dtypes,
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
    ]


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> object:
    """The file's contents without executing code: safetensors, or a weights-only torch pickle. `what`
    names the file in errors (the option it came from)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{what} {path} does not exist or is not a file; pass the path of a .pth or .safetensors"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"cannot read {what} {path} as safetensors: {e}") from None
    try:
        with torch.serialization.safe_globals(_data_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found is None:
            reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
            detail = reason.group(1).strip() if reason else "not a weights-only pickle"
            raise UserError(f"cannot read {what} {path} as a PyTorch checkpoint ({detail})") from None
        raise UserError(
            f"{what} {path} is not a plain weights checkpoint: it references {found.group(1)}, which could "
            "run code when unpickled; "
            "partool loads only tensors. Re-save it as a state dict (torch.save(model.state_dict(), ...)) "
            "or as .safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"cannot read {what} {path} as a PyTorch checkpoint: {e}") from None


def extract_state_dict(obj: object, path: str | Path = "checkpoint") -> StateDict:
    """The tensors of a checkpoint: unwrap `model`/`state_dict`/`model_ema`, strip `module.`/`backbone.`."""
    while isinstance(obj, dict) and not _is_state_dict(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise UserError(
                f"{path} holds no state dict (top-level keys: {', '.join(map(str, list(obj)[:8]))}); "
                f"expected tensors, or one of {', '.join(_WRAPPER_KEYS)}"
            )
        obj = inner
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _is_state_dict(d: dict) -> bool:
    return bool(d) and sum(isinstance(v, Tensor) for v in d.values()) * 2 >= len(d)


def checkpoint_family(state: StateDict) -> str | None:
    """ "vim", "vmamba", "vit", "vmamba (v1 or later)", or None when no known key pattern matches."""
    for family, pattern in _FAMILY_PATTERNS.items():
        if any(pattern.match(k) for k in state):
            return family
    return None


def _drop_classifier(state: StateDict) -> StateDict:
    return {k: v for k, v in state.items() if not k.startswith(("head.", "classifier.head."))}


def _checkpoint_grid(num_patches: int, model_grid: tuple[int, int], path: str | Path) -> tuple[int, int]:
    """The patch grid a pos-embed was trained on: the model's own if the count matches, else square."""
    if num_patches == model_grid[0] * model_grid[1]:
        return model_grid
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise UserError(
            f"{path}: pos_embed covers {num_patches} patches, which is neither the model's grid {model_grid} "
            "nor a square grid; build the model with the image size the checkpoint was trained at"
        )
    return side, side


def _adapt_vim(state: StateDict, backbone: nn.Module, path: str | Path) -> StateDict:
    state = _drop_classifier(state)
    if "pos_embed" in state:
        pe = state["pos_embed"]
        old = _checkpoint_grid(pe.shape[1] - 1, backbone.grid_size, path)
        state["pos_embed"] = resample_midcls_pos_embed(pe, old, backbone.grid_size)
    return state


def _adapt_vmamba(state: StateDict, backbone: nn.Module, path: str | Path) -> StateDict:
    """The classifier and the final norm dropped: MambaPAR's VMamba returns the blocks' tokens unnormalised
    (v0 names the norm `norm`, later exports `classifier.norm`)."""
    final_norm = ("norm.", "classifier.norm.")
    return {k: v for k, v in _drop_classifier(state).items() if not k.startswith(final_norm)}


def _adapt_vit(state: StateDict, backbone: nn.Module, path: str | Path) -> StateDict:
    from timm.layers import resample_abs_pos_embed

    state = _drop_classifier(state)
    if "pos_embed" in state:
        prefix = backbone.checkpoint_root().num_prefix_tokens
        pe = state["pos_embed"]
        old = _checkpoint_grid(pe.shape[1] - prefix, backbone.grid_size, path)
        if old != tuple(backbone.grid_size):
            state["pos_embed"] = resample_abs_pos_embed(
                pe, list(backbone.grid_size), list(old), num_prefix_tokens=prefix
            )
    return state


_ADAPTERS: dict[str, Callable[[StateDict, nn.Module, str | Path], StateDict]] = {
    "vim": _adapt_vim,
    "vmamba": _adapt_vmamba,
    "vit": _adapt_vit,
}


def load_pretrained(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load an official ImageNet checkpoint into `model`'s backbone (a PARModel or a bare backbone).

    Remaps keys, resizes position embeddings to the model's input size, drops the classifier, and loads
    non-strictly. Returns (missing, unexpected) key lists relative to the backbone's checkpoint root.
    """
    backbone = getattr(model, "backbone", model)
    family = getattr(backbone, "family", None)
    if family not in _ADAPTERS:
        raise UserError(
            f"{type(model).__name__} has no official-checkpoint loader (families: {', '.join(_ADAPTERS)})"
        )
    state = extract_state_dict(read_checkpoint(path), path)
    found = checkpoint_family(state)
    if found != family:
        kind = f"a {found} checkpoint" if found else "not a Vim, VMamba v0 or ViT checkpoint"
        raise UserError(
            f"{path} is {kind}, but the model is a {family} model; pick a matching --model or file"
        )
    state = _ADAPTERS[family](state, backbone, path)
    target = backbone.checkpoint_root()
    own = target.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        shown = "; ".join(
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:3]
        )
        raise UserError(
            f"{path} does not fit this model ({len(wrong)} shape mismatches, e.g. {shown}); "
            "it was trained for another model size"
        )
    result = target.load_state_dict(state, strict=False)
    return list(result.missing_keys), list(result.unexpected_keys)
