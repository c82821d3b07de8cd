"""The ops the models compose (docs/architecture.md, "Selective scan").

- `selective_scan`: mamba_ssm's `selective_scan_fn` contract plus `reverse`, over the backends of
  `partool.ops.backends`.
- `causal_conv1d`, `add_rms_norm`: Mamba's short convolution and Vim's add + RMSNorm.
- `bimamba_inner_fn` (Vim's mixer) and `cross_scan_fn` (VMamba v0's SS2D scan): each whole inner path in
  one call, in the manner of mamba_ssm's `mamba_inner_fn`, with a reference, a kernel and an export
  implementation chosen per call.
"""

from partool.ops.backends import (
    ScanBackend,
    available_backends,
    get_backend,
    register_backend,
    resolve_backend,
    set_backend,
)
from partool.ops.causal_conv1d import causal_conv1d
from partool.ops.scan_mamba_ssm import mamba_ssm_available
from partool.ops.selective_scan import count_scan_flops, selective_scan

__all__ = [
    "ScanBackend",
    "available_backends",
    "causal_conv1d",
    "count_scan_flops",
    "get_backend",
    "mamba_ssm_available",
    "register_backend",
    "resolve_backend",
    "selective_scan",
    "set_backend",
]
