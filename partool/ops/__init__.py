"""The selective-scan op and its backends (see ARCHITECTURE.md, "Selective scan")."""

from partool.ops.scan_mamba_ssm import mamba_ssm_available, scan_mamba_ssm
from partool.ops.selective_scan import (
    ScanBackend,
    available_backends,
    get_backend,
    register_backend,
    resolve_backend,
    selective_scan,
    set_backend,
)

register_backend(
    ScanBackend(
        "mamba_ssm",
        scan_mamba_ssm,
        mamba_ssm_available,
        frozenset({"cuda"}),
        differentiable=True,
        priority=15,
    )
)

import partool.ops.kernels  # noqa: E402, F401  (registers the `cpu` and `cuda` kernel backends)

__all__ = [
    "ScanBackend",
    "available_backends",
    "get_backend",
    "register_backend",
    "resolve_backend",
    "selective_scan",
    "set_backend",
]
