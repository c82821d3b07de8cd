"""Model registry: names -> backbone builders + metadata; `create_model` wraps them into a PARModel."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from partool.errors import UserError
from partool.models.head import PARHead
from partool.models.par import HEAD_DIM, PARModel

# builder(img_size=(H, W), **kw) -> backbone: a factory function or a backbone class. Its signature (a
# class's __init__) lists the model's options with their defaults; `create_model` takes those names only.
BackboneBuilder = Callable[..., nn.Module]
Builder = TypeVar("Builder", bound=BackboneBuilder)


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is, without building it."""

    name: str
    family: str  # "vim" | "vmamba" | "vit": selects the checkpoint loader
    description: str
    input_size: tuple[int, int] = (224, 224)  # (H, W) it is trained at unless --img-size says otherwise
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # MambaPAR normalises with 0.5 / 0.5
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # ONNX lowerings the model exports with (tests/test_model_zoo.py exports every model with each)
    exports: tuple[str, ...] = ("plugin", "portable")
    # the training recipe (partool.train.recipe.RECIPES); "" means the family's
    recipe: str = ""
    # (role, file) pairs: the checkpoints `partool train --pretrained ROLE=FILE` expects, as the authors used
    checkpoints: tuple[tuple[str, str], ...] = ()
    builder: BackboneBuilder = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not self.recipe:
            object.__setattr__(self, "recipe", self.family)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metadata (the builder left out; checkpoints as {role: file})."""
        d = asdict(self)
        d.pop("builder")
        d["checkpoints"] = dict(self.checkpoints)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"], d["exports"] = list(self.mean), list(self.std), list(self.exports)
        return d


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, family: str, description: str, **meta: Any) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(img_size, **kw) -> backbone` under `name` with its metadata.

    It decorates a factory function or the backbone class itself (then the options and their defaults are
    its `__init__`'s, written once); either comes back unchanged."""

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, family, description, builder=builder, **meta)
        return builder

    return wrap


def list_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model (UserError listing the choices if unknown)."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create_model(name: str, num_attrs: int, img_size: tuple[int, int] | None = None, **kw: Any) -> PARModel:
    """Build `name` as a PARModel with `num_attrs` outputs for (H, W) inputs (default: the model's own).

    `kw` goes to the backbone builder (e.g. `depth=2` for Vim, `depths=[1, 1, 1, 1], dims=32` for VMamba,
    `drop_path_rate=0.0`); an option the builder does not take is a UserError.
    """
    info = model_info(name)
    if num_attrs < 1:
        raise UserError(f"model {name!r} needs at least one attribute, got num_attrs={num_attrs}")
    size = tuple(int(s) for s in (img_size or info.input_size))
    if len(size) != 2:
        raise UserError(f"img_size must be (height, width), got {img_size!r}")
    accepted = set(inspect.signature(info.builder).parameters) - {"img_size"}
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise UserError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; it takes: {', '.join(sorted(accepted))}"
        )
    backbone = info.builder(img_size=size, **kw)
    head = PARHead(backbone.num_tokens, num_attrs, HEAD_DIM)
    cfg = {
        **info.to_dict(),
        "input_size": list(size),
        "num_attrs": num_attrs,
        "num_tokens": backbone.num_tokens,
        "model_kwargs": dict(kw),
    }
    return PARModel(backbone, head, default_cfg=cfg)


def count_parameters(
    name: str, num_attrs: int = 26, img_size: tuple[int, int] | None = None, **kw: Any
) -> dict[str, int]:
    """Parameter counts {backbone, neck, head, extra_heads, total}, built on the meta device (no memory, no
    init cost). `extra_heads`: a hybrid's fused or teacher PAR head (MaHDFT, KDTM, MaKDF), else 0."""
    with torch.device("meta"):
        model = create_model(name, num_attrs, img_size, **kw)
    parts = {"backbone": model.backbone, "neck": model.neck, "head": model.head}
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
    total = sum(p.numel() for p in model.parameters())
    counts["extra_heads"] = total - sum(counts.values())
    counts["total"] = total
    return counts
