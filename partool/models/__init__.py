"""PAR models: Vim, VMamba v0 and ViT backbones with the MambaPAR head, behind one registry.

Importing this package registers every model (the backbone modules register themselves on import).
"""

from partool.models import vim, vit, vmamba  # noqa: F401  (registration side effect)
from partool.models.par import PARModel
from partool.models.pretrained import load_checkpoints, load_pretrained
from partool.models.registry import (
    ModelInfo,
    count_parameters,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "ModelInfo",
    "PARModel",
    "count_parameters",
    "create_model",
    "list_models",
    "load_checkpoints",
    "load_pretrained",
    "model_info",
    "register_model",
]

# Text fusion builds on the plain backbones, so it registers (and is listed) after them.
from partool.models import text_fusion  # noqa: F401

# Hybrids combine the ViT and Vim parts, so they register (and are listed) last.
# isort: split
from partool.models import hybrids, hybrids_guided  # noqa: F401
