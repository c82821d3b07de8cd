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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from partool.artifacts import WEIGHTS, read_meta
from partool.errors import UserError
from partool.models.vim import midcls_index, resample_midcls_pos_embed

StateDict = dict[str, Tensor]
KeyMap = list[tuple[str, str]]  # (file prefix, model prefix): a file key may fill several model keys

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


@dataclass(frozen=True, eq=False)
class CheckpointPart:
    """Where one checkpoint loads in a model: `root`, whose parameter names are the file's (after `keys`).

    A plain backbone has one part (its family's); a hybrid has a "vim" and a "vit" part, each routed to
    the blocks built from that family (`checkpoint_parts()` on the backbone).
    """

    family: str  # the checkpoint family this part takes: "vim", "vmamba" or "vit"
    root: nn.Module
    what: str = ""  # which of root's parameters it fills, for messages and partool.json ("" = all)
    grid_size: tuple[int, int] | None = None  # patch grid a position embedding is resized to
    prefix_tokens: int = 1  # tokens before the patches in a ViT position embedding
    cls_first: bool = False  # a Vim stem whose cls token leads (Vim's own sits in the middle)
    keys: Callable[[StateDict], KeyMap] | None = None  # (file prefix, root prefix) pairs (None: same)


def _adapt_vim(state: StateDict, part: CheckpointPart, path: str | Path) -> StateDict:
    state = _drop_classifier(state)
    if "pos_embed" in state and part.grid_size is not None:
        pe = state["pos_embed"]
        old = _checkpoint_grid(pe.shape[1] - 1, part.grid_size, path)
        pe = resample_midcls_pos_embed(pe, old, part.grid_size)
        state["pos_embed"] = _cls_to_front(pe) if part.cls_first else pe
    return state


def _cls_to_front(pe: Tensor) -> Tensor:
    """A middle-cls position embedding with the cls row moved first (patch rows keep their order)."""
    c = midcls_index(pe.shape[1] - 1)
    return torch.cat([pe[:, c : c + 1], pe[:, :c], pe[:, c + 1 :]], 1)


def _adapt_vmamba(state: StateDict, part: CheckpointPart, path: str | Path) -> StateDict:
    """The classifier and the final norm dropped: MambaPAR's VMamba returns the blocks' tokens unnormalised
    (v0 names the norm `norm`, later exports `classifier.norm`)."""
    final_norm = ("norm.", "classifier.norm.")
    return {k: v for k, v in _drop_classifier(state).items() if not k.startswith(final_norm)}


def _adapt_vit(state: StateDict, part: CheckpointPart, path: str | Path) -> StateDict:
    from timm.layers import resample_abs_pos_embed

    state = _drop_classifier(state)
    if "pos_embed" in state and part.grid_size is not None:
        prefix = part.prefix_tokens
        pe = state["pos_embed"]
        old = _checkpoint_grid(pe.shape[1] - prefix, part.grid_size, path)
        if old != tuple(part.grid_size):
            state["pos_embed"] = resample_abs_pos_embed(
                pe, list(part.grid_size), list(old), num_prefix_tokens=prefix
            )
    return state


_ADAPTERS: dict[str, Callable[[StateDict, CheckpointPart, str | Path], StateDict]] = {
    "vim": _adapt_vim,
    "vmamba": _adapt_vmamba,
    "vit": _adapt_vit,
}


def block_count(state: StateDict, prefix: str) -> int:
    """How many numbered blocks `prefix{i}.` a state dict holds (its depth), 0 if none."""
    found = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = [int(m.group(1)) for k in state if (m := found.match(k))]
    return max(indices) + 1 if indices else 0


def block_map(src: str, dst: str, sources: list[int]) -> KeyMap:
    """Prefix pairs putting file block `sources[j]` (under `src`) at model block j (under `dst`)."""
    return [(f"{src}{i}.", f"{dst}{j}.") for j, i in enumerate(sources)]


def _default_part(backbone: nn.Module) -> CheckpointPart:
    """The one part of a plain backbone: its family's checkpoint into its checkpoint root."""
    root = backbone.checkpoint_root()
    return CheckpointPart(
        backbone.family, root, grid_size=getattr(backbone, "grid_size", None),
        prefix_tokens=getattr(root, "num_prefix_tokens", 1),
    )  # fmt: skip


def checkpoint_parts(model: nn.Module) -> dict[str, CheckpointPart]:
    """The parts of `model` (a PARModel or a bare backbone) that official checkpoints load into, by role.

    Roles are checkpoint families: "vim", "vmamba", "vit"; a hybrid has both "vim" and "vit"."""
    backbone = getattr(model, "backbone", model)
    if hasattr(backbone, "checkpoint_parts"):
        return backbone.checkpoint_parts()
    if getattr(backbone, "family", None) not in _ADAPTERS:
        raise UserError(
            f"{type(model).__name__} has no official-checkpoint loader (families: {', '.join(_ADAPTERS)})"
        )
    return {backbone.family: _default_part(backbone)}


def _remap(state: StateDict, mapping: KeyMap) -> StateDict:
    """The keys under each mapped file prefix, renamed to its model prefix; the rest dropped."""
    return {
        dst + key[len(src) :]: value
        for src, dst in mapping
        for key, value in state.items()
        if key.startswith(src)
    }


def _check_family(state: StateDict, part: CheckpointPart, path: str | Path, role: str | None) -> None:
    found = checkpoint_family(state)
    if found == part.family:
        return
    kind = f"a {found} checkpoint" if found else "not a Vim, VMamba v0 or ViT checkpoint"
    if role is None:
        raise UserError(
            f"{path} is {kind}, but the model is a {part.family} model; pick a matching --model or file"
        )
    raise UserError(
        f"--pretrained {role}={path} is {kind}, but the {role} part takes a {part.family} checkpoint; "
        f"pass a {part.family} file as {role}= (or the file under its own role)"
    )


def load_state_into(
    part: CheckpointPart, state: StateDict, path: str | Path, role: str | None = None
) -> tuple[list[str], list[str]]:
    """Adapt `state` (an official checkpoint's tensors) and load it into `part`, non-strictly.

    Returns (missing, unexpected): the part's keys the file did not fill, the file's keys it did not use."""
    _check_family(state, part, path, role)
    state = _ADAPTERS[part.family](state, part, path)
    covers: tuple[str, ...] = ("",)
    if part.keys is not None:
        mapping = part.keys(state)
        unused = [k for k in state if not k.startswith(tuple(src for src, _ in mapping))]
        state, covers = _remap(state, mapping), tuple(dst for _, dst in mapping)
    own = part.root.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        shown = "; ".join(
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:3]
        )
        where = f" ({role} part)" if role else ""
        raise UserError(
            f"{path} does not fit this model{where} ({len(wrong)} shape mismatches, e.g. {shown}); "
            "it was trained for another model size"
        )
    result = part.root.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(covers)]
    unexpected = list(result.unexpected_keys) + (unused if part.keys is not None else [])
    return missing, unexpected


def load_pretrained(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load an official ImageNet checkpoint into `model`'s backbone (a PARModel or a bare backbone).

    Remaps keys, resizes position embeddings to the model's input size, drops the classifier, and loads
    non-strictly into the backbone's checkpoint root (a hybrid's: the part its family names). Returns
    (missing, unexpected) key lists relative to that root.
    """
    _, part = _part_for(model, None, type(model).__name__)
    state = extract_state_dict(read_checkpoint(path), path)
    return load_state_into(part, state, path)


ROLES = tuple(_ADAPTERS)  # `--pretrained ROLE=FILE`: the part of the model a file goes to
_ROLE_SPEC = re.compile(r"([a-z]+)=(.+)")
RUN_MODEL = "vit-b"  # the PAR-trained ViT the authors' frozen-ViT hybrids start from (ckpt_best_F1.pth)


def parse_pretrained(specs: str | list[str] | None) -> list[tuple[str | None, str]]:
    """`--pretrained` values as (role, path): 'vim=a.pth' -> ('vim', 'a.pth'), 'a.pth' -> (None, 'a.pth').

    A bare path keeps its meaning (the model's own checkpoint root); `_plan` refuses two files for one part."""
    items = [specs] if isinstance(specs, str) else list(specs or [])
    parsed: list[tuple[str | None, str]] = []
    for item in items:
        found = _ROLE_SPEC.fullmatch(item)
        role, path = (found.group(1), found.group(2)) if found else (None, item)
        if role is not None and role not in ROLES:
            raise UserError(
                f"--pretrained {item}: unknown part {role!r}; write ROLE=FILE with ROLE one of "
                f"{', '.join(ROLES)}, or a bare FILE (a file whose name holds '=' as ./{item})"
            )
        parsed.append((role, path))
    return parsed


def _module_name(model: nn.Module, module: nn.Module) -> str:
    """`module`'s dotted name inside `model` ("" for the model itself)."""
    return next((name for name, m in model.named_modules() if m is module), "")


def _part_for(model: nn.Module, role: str | None, name: str) -> tuple[str, CheckpointPart]:
    """(role, part) a `--pretrained` value loads into; a bare path keeps the backbone's checkpoint root."""
    backbone = getattr(model, "backbone", model)
    if role is None:
        checkpoint_parts(model)  # the same UserError for a model without any loader
        return backbone.family, _default_part(backbone)
    parts = checkpoint_parts(model)
    if role not in parts:
        raise UserError(
            f"--pretrained {role}=: model {name} has no {role} part (its parts: {', '.join(parts)}); "
            "drop that file or pick a model that has one"
        )
    return role, parts[role]


def _run_state(run: Path, role: str, model: nn.Module) -> StateDict:
    """The timm ViT weights of a partool `vit-b` run folder, for a model built at the run's input size."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir, meta = read_meta(run)
    size = list(getattr(getattr(model, "backbone", model), "img_size", ()))
    if role != "vit" or meta["model"] != RUN_MODEL:
        raise UserError(
            f"--pretrained {role}={run}: a run folder loads only as vit= and only from a {RUN_MODEL} run "
            f"(this one is {meta['model']}); train one with `partool train --model {RUN_MODEL}`"
        )
    if list(meta["input_size"]) != size:
        raise UserError(
            f"--pretrained vit={run}: the run was trained at {'x'.join(map(str, meta['input_size']))}, "
            f"the model is built for {'x'.join(map(str, size))}; pass --img-size to match"
        )
    try:
        weights = load_file(str(run_dir / WEIGHTS), device="cpu")
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {run_dir / WEIGHTS}: {e}; finish or re-run that training") from None
    prefix = "backbone.vit."
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


@dataclass(frozen=True, eq=False)
class _Target:
    """One `--pretrained` value resolved: the part it loads into and what the user wrote."""

    role: str  # the part's role (a bare path: the model's family)
    part: CheckpointPart
    path: str
    explicit: bool  # written as ROLE=PATH


def _plan(model: nn.Module, specs: str | list[str] | None, name: str) -> list[_Target]:
    """Every `--pretrained` value resolved to its part, checked before any file is read."""
    targets = [
        _Target(*_part_for(model, role, name), path, role is not None)
        for role, path in parse_pretrained(specs)
    ]
    roles = [t.role for t in targets]
    twice = next((r for r in roles if roles.count(r) > 1), None)
    if twice is not None:
        raise UserError(
            f"--pretrained: two files go to the {twice} part of {name} (a bare FILE goes to the "
            "model's own family); pass one file per part"
        )
    return targets


def _record(model: nn.Module, target: _Target) -> dict[str, str]:
    """What partool.json says about one loaded file: its role, path, kind and the module it went into."""
    root = target.part.root
    return {
        "role": target.role,
        "file": str(target.path),
        "source": "run" if Path(target.path).is_dir() else "checkpoint",
        "into": _module_name(model, root) or type(root).__name__,
        "keys": target.part.what or "all",
    }


def checkpoint_records(
    model: nn.Module, specs: str | list[str] | None, name: str = "this model"
) -> list[dict]:
    """Which file goes into which part of `model`, without loading anything (a resumed run's record)."""
    return [_record(model, t) for t in _plan(model, specs, name)]


def load_checkpoints(
    model: nn.Module, specs: str | list[str] | None, name: str = "this model"
) -> list[dict[str, object]]:
    """Load every `--pretrained` value (see `parse_pretrained`) into its part of `model`.

    A path is a checkpoint file, or for vit= a partool vit-b run folder (its backbone). Returns one record
    per file (`checkpoint_records`) with the counts of missing and unexpected keys."""
    records = []
    for target in _plan(model, specs, name):
        label = f"{target.role}={target.path}" if target.explicit else target.path
        if Path(target.path).is_dir():
            state = _run_state(Path(target.path), target.role, model)
        else:
            state = extract_state_dict(read_checkpoint(target.path, f"--pretrained {label}"), target.path)
        role = target.role if target.explicit else None
        missing, unexpected = load_state_into(target.part, state, target.path, role)
        records.append({**_record(model, target), "missing": len(missing), "unexpected": len(unexpected)})
    return records
