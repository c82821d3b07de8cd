"""Vim's bidirectional Mamba mixer ("bimamba v2") and RMSNorm, with the official parameter names.

The backward direction of the official code runs its own conv/projections/scan on x and z flipped along
the sequence and flips the result back. Here it runs the anti-causal conv and the reverse scan on the
unflipped tensors, which is the same function without any flipped copies. The two directions are
averaged (Vim's `if_divide_out=True`) before `out_proj`. For inference on the `cpu`/`cuda` kernel backends
both directions run as one paired conv1d+SiLU launch and one fused bidirectional scan call. Under ONNX export
the mixer and RMSNorm write the same function in the ops ONNX Runtime runs fastest (`_export_forward`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partool.ops import kernels
from partool.ops.causal_conv1d import causal_conv1d
from partool.ops.selective_scan import resolve_backend, selective_scan

T = TypeVar("T")


def kernel_inference(x: Tensor, weight: Tensor) -> bool:
    """Whether a mixer may take its fused path through the kernel library: inference (no autograd on x or
    `weight`, the module's parameters' stand-in), no tracing or ONNX export in play (torch.compile traces the
    kernels as custom ops), and a `cpu`/`cuda` kernel backend active for x's device."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if x.device.type not in ("cpu", "cuda"):  # e.g. meta (FLOP counting): no kernel runs there
        return False
    return resolve_backend(None, x.device).name in ("cpu", "cuda")


def cached_per_version(module: nn.Module, params: list[Tensor], compute: Callable[[], T]) -> T:
    """compute(), kept on `module` until one of `params` changes (pointer, in-place version, dtype or
    device). The kernel paths' derived constants (float32 copies, stacked weights) are made once this way
    instead of on every forward: with CUDA graphs each would be a kernel replayed every time. Under
    torch.compile they are traced into the graph instead (no data pointers there)."""
    if torch.compiler.is_compiling():
        return compute()
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    if getattr(module, "_cached_key", None) != key:
        module._cached_value, module._cached_key = compute(), key
    return module._cached_value


class RMSNorm(nn.Module):
    """x / rms(x) · weight, computed in float32 (mamba_ssm's RMSNorm; parameter `weight` only)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def float_weight(self) -> Tensor:
        """The weight in float32 for the kernels' add + RMSNorm, converted once per weight version: with
        CUDA graphs a per-call cast of a half model's weight would be one more kernel a layer."""
        w = self.weight
        if w.dtype == torch.float32:
            return w
        return cached_per_version(self, [w], lambda: w.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        if torch.onnx.is_in_onnx_export():
            # x / sqrt(...) rather than x * rsqrt(...): the pattern ONNX Runtime fuses into one
            # SimplifiedLayerNormalization (eager keeps rsqrt, the same function to rounding).
            out = xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        else:
            out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * self.weight.float()).to(self.weight.dtype)


def linspace(start: float, stop: float, num: int) -> list[float]:
    """torch.linspace as Python floats (stochastic-depth rates), usable while building on the meta device."""
    return [start + (stop - start) * i / (num - 1) for i in range(num)] if num > 1 else [start] * num


def dt_bias_init(d_inner: int, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> Tensor:
    """Bias whose softplus is log-uniform in [dt_min, dt_max] (Mamba's dt init, inverse softplus)."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(
        min=floor
    )
    return dt + torch.log(-torch.expm1(-dt))


def s4d_real_log(d_inner: int, d_state: int) -> Tensor:
    """log of S4D-real A = [1..n] per channel (A = -exp(A_log) at run time)."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1).contiguous()


def _conv_silu_2d(x: Tensor, conv: nn.Conv1d, reverse: bool) -> Tensor:
    """`causal_conv1d` + SiLU of token-major x (b, l, d) -> (b, d, l), for ONNX export: a (1 × w) depthwise
    Conv2d over x viewed as (b, d, 1, l). ONNX Runtime runs 2-D depthwise convs in its blocked NCHWc layout,
    twice as fast as the 1-D Conv (0.13 vs 0.26 ms with the SiLU at Vim-S shapes, one thread); both
    directions' convs share one transpose and one NCHWc reorder of x. Same taps and padding as
    `causal_conv1d`."""
    width = conv.weight.shape[-1]
    taps = conv.weight.flip(-1) if reverse else conv.weight  # (d, 1, w)
    x4 = F.pad(x.unsqueeze(1).permute(0, 3, 1, 2), (0, width - 1) if reverse else (width - 1, 0))
    return F.silu(F.conv2d(x4, taps.unsqueeze(2), conv.bias, groups=x.shape[-1])).squeeze(2)


def export_direction(
    x: Tensor, z: Tensor, conv: nn.Conv1d, x_proj: nn.Linear, dt_proj: nn.Linear, A: Tensor, D: Tensor,
    reverse: bool,
) -> Tensor:  # fmt: skip
    """One Mamba direction as written for ONNX export, from in_proj's token-major x (B, L, d_inner) and
    channel-major z (B, d_inner, L) to the gated scan output (B, d_inner, L).

    x reaches the depthwise conv through one transpose (`_conv_silu_2d`). x_proj and dt_proj take the
    weight FIRST on the channel-major conv output, so Δ, B and C leave their matmuls in the scan's
    (b, ·, l) layout with no transposes (4.5 ms of a Vim-S forward on ORT CPU at 2 threads); quantize.py
    quantizes such a weight per output row. No torch.split/chunk: they export as sequence ops."""
    r, n = dt_proj.weight.shape[1], A.shape[1]
    xc = _conv_silu_2d(x, conv, reverse)
    x_dbl = torch.matmul(x_proj.weight, xc)  # (B, rank + 2n, L)
    delta = torch.matmul(dt_proj.weight, x_dbl[:, :r])  # (B, d_inner, L); the bias goes in the scan
    B, C = x_dbl[:, r : r + n], x_dbl[:, r + n :]  # (B, n, L)
    return selective_scan(
        xc, delta, A, B, C, D, z, dt_proj.bias.float(), delta_softplus=True, reverse=reverse
    )


class BiMamba(nn.Module):
    """Bimamba v2 mixer: (B, L, d_model) -> (B, L, d_model). Names match Vim's `Mamba` module."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        d_inner, rank = self.d_inner, self.dt_rank
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        for suffix in ("", "_b"):  # forward direction, then backward: conv1d/x_proj/dt_proj/A_log/D(_b)
            conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True)
            x_proj = nn.Linear(d_inner, rank + 2 * d_state, bias=False)
            dt_proj = nn.Linear(rank, d_inner, bias=True)
            std = rank**-0.5
            nn.init.uniform_(dt_proj.weight, -std, std)
            with torch.no_grad():
                dt_proj.bias.copy_(dt_bias_init(d_inner))
            setattr(self, f"conv1d{suffix}", conv)
            setattr(self, f"x_proj{suffix}", x_proj)
            setattr(self, f"dt_proj{suffix}", dt_proj)
        self.A_log = nn.Parameter(s4d_real_log(d_inner, d_state))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_b_log = nn.Parameter(s4d_real_log(d_inner, d_state))
        self.D_b = nn.Parameter(torch.ones(d_inner))
        for p in (self.A_log, self.D, self.A_b_log, self.D_b):
            p._no_weight_decay = True  # Vim's optimizer convention

    def _params(self, reverse: bool) -> tuple[nn.Conv1d, nn.Linear, nn.Linear, Tensor, Tensor]:
        """conv1d, x_proj, dt_proj, A and D of one direction (`_b` names for the backward one)."""
        sfx = "_b" if reverse else ""
        A = -torch.exp(getattr(self, f"A{sfx}_log").float())
        D = getattr(self, f"D{sfx}").float()
        return (
            getattr(self, f"conv1d{sfx}"),
            getattr(self, f"x_proj{sfx}"),
            getattr(self, f"dt_proj{sfx}"),
            A,
            D,
        )

    def _scan_args(self, xc: Tensor, z: Tensor, reverse: bool) -> dict[str, Tensor]:
        """The selective-scan arguments of one direction from its conv output xc (B, d_inner, L)."""
        _, x_proj, dt_proj, A, D = self._params(reverse)
        x_dbl = x_proj(xc.transpose(1, 2))  # (B, L, rank + 2n)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)  # (B, d_inner, L); bias goes in the scan
        return dict(
            u=xc, delta=delta, A=A, B=B.transpose(1, 2), C=C.transpose(1, 2), D=D, z=z,
            delta_bias=dt_proj.bias.float(),
        )  # fmt: skip

    def _direction(self, x: Tensor, z: Tensor, reverse: bool) -> Tensor:
        """One direction: conv, projections and scan. `reverse` = official backward branch, un-flipped."""
        conv = self._params(reverse)[0]
        xc = causal_conv1d(x, conv.weight.squeeze(1), conv.bias, activation="silu", reverse=reverse)
        return selective_scan(**self._scan_args(xc, z, reverse), delta_softplus=True, reverse=reverse)

    def _kernel_constants(self) -> dict[str, Tensor]:
        """What the fused path takes of the weights, computed once per weight version instead of on every
        forward (with CUDA graphs these ~20 small kernels a layer would otherwise be replayed each time): per
        direction the float32 A = -exp(A_log), D and dt bias, both directions' conv taps and biases stacked
        (2, d_inner, w) and (2, d_inner) for the paired conv, and x_proj's and dt_proj's weights stacked
        (2, ·, ·) for one batched GEMM each. Under torch.compile they are traced into the graph instead (no
        data pointers there; Inductor fuses them)."""
        params = [getattr(self, name) for name in ("A_log", "D", "A_b_log", "D_b")]
        for sfx in ("", "_b"):
            params += [
                *getattr(self, f"dt_proj{sfx}").parameters(),
                *getattr(self, f"conv1d{sfx}").parameters(),
            ]
            params.append(getattr(self, f"x_proj{sfx}").weight)
        return cached_per_version(self, params, self._compute_kernel_constants)

    def _compute_kernel_constants(self) -> dict[str, Tensor]:
        fwd, bwd = self._params(False), self._params(True)  # conv1d, x_proj, dt_proj, A, D
        consts = {}
        for sfx, (_, _, dt_proj, A, D) in (("", fwd), ("_b", bwd)):
            consts |= {
                f"A{sfx}": A.contiguous(),
                f"D{sfx}": D.contiguous(),
                f"delta_bias{sfx}": dt_proj.bias.float(),
            }
        return consts | {
            "conv_weight": torch.stack([p[0].weight.squeeze(1) for p in (fwd, bwd)]).float(),
            "conv_bias": torch.stack([p[0].bias for p in (fwd, bwd)]).float(),
            "x_proj_weight": torch.stack([p[1].weight for p in (fwd, bwd)]),
            "dt_proj_weight": torch.stack([p[2].weight for p in (fwd, bwd)]),
        }

    def fused_forward_flat(self, h: Tensor, batch: int) -> Tensor:
        """Inference on the kernel library in the flat layout: h (d_model, B·L), the batch's tokens side by
        side, -> (d_model, B·L). Seven launches: in_proj, both directions' conv1d+SiLU, x_proj and dt_proj
        of both directions (one batched GEMM each), one fused bidirectional scan, out_proj.

        Every projection runs over the whole batch at once (N = B·L: per-image GEMMs of N = L ran up to 15%
        slower alone on the CPU at b = 8, and on a GPU N = 197 misses the 8-element alignment of tensor-core
        kernels), and each output is in the kernels' layout already: x and z are row blocks of in_proj's
        output, B and C row blocks of x_proj's, read in place through the kernels' strides as (B, ·, L)
        views. No copies, no transposes."""
        d, r, n = self.d_inner, self.dt_rank, self.d_state
        length = h.shape[1] // batch
        consts = self._kernel_constants()

        def per_image(m: Tensor) -> Tensor:  # (rows, B·L) -> (B, rows, L), a view
            return m.view(m.shape[0], batch, length).transpose(0, 1)

        xz = self.in_proj.weight @ h  # (2 d_inner, B·L)
        x, z = per_image(xz[:d]), per_image(xz[d:])
        # per direction (causal, anti-causal): conv (2, B, d_inner, L) in x's layout, then x_proj
        # (2, rank + 2n, B·L) and dt_proj (2, d_inner, B·L; its bias goes in the scan)
        xc = kernels.causal_conv1d_bidirectional(x, consts["conv_weight"], consts["conv_bias"])
        x_dbl = torch.bmm(consts["x_proj_weight"], xc.transpose(1, 2).reshape(2, d, -1))
        delta = torch.bmm(consts["dt_proj_weight"], x_dbl[:, :r])
        fwd, bwd = (
            {"u": xc[i], "delta": per_image(delta[i]), "A": consts[f"A{sfx}"], "B": per_image(x_dbl[i, r : r + n]),
             "C": per_image(x_dbl[i, r + n :]), "D": consts[f"D{sfx}"], "z": z, "delta_bias": consts[f"delta_bias{sfx}"]}
            for i, sfx in ((0, ""), (1, "_b"))
        )  # fmt: skip
        y = kernels.scan_bidirectional(fwd, bwd, delta_softplus=True, out_scale=0.5)  # xc[0]'s layout
        return self.out_proj.weight @ y.transpose(0, 1).reshape(d, -1)

    def _fused_forward(self, hidden_states: Tensor) -> Tensor:
        """`fused_forward_flat` on token-major (B, L, d_model): one copy in, a view out."""
        b, length, dim = hidden_states.shape
        out = self.fused_forward_flat(hidden_states.permute(2, 0, 1).reshape(dim, b * length), b)
        return out.view(dim, b, length).permute(1, 2, 0)

    def _can_fuse(self, x: Tensor) -> bool:
        """Inference on an active kernel backend (`kernel_inference`)."""
        return kernel_inference(x, self.in_proj.weight)

    def _export_forward(self, hidden_states: Tensor) -> Tensor:
        """`forward` as written for ONNX export: the same function in the layout ONNX Runtime runs fastest.

        in_proj is split by weight rows (constant slices) into x and z, each `MatMul(activation, weight)`
        (ORT prepacks a constant second input: 15% faster here than the weight first); z is transposed once
        for both directions; each direction is `export_direction`. out_proj reads y through a transpose ORT
        folds into FusedMatMul, and the 1/2 of the direction average folds into its weight (exact: a power
        of two)."""
        d = self.d_inner
        w_in = self.in_proj.weight
        x = torch.matmul(hidden_states, w_in[:d].t())  # (B, L, d_inner)
        z = torch.matmul(hidden_states, w_in[d:].t()).transpose(1, 2)  # (B, d_inner, L)
        y = None
        for reverse in (False, True):
            conv, x_proj, dt_proj, A, D = self._params(reverse)
            out = export_direction(x, z, conv, x_proj, dt_proj, A, D, reverse)
            y = out if y is None else y + out
        return torch.matmul(y.transpose(1, 2), self.out_proj.weight.t() * 0.5)

    def forward(self, hidden_states: Tensor) -> Tensor:
        if torch.onnx.is_in_onnx_export():
            return self._export_forward(hidden_states)
        if self._can_fuse(hidden_states):
            return self._fused_forward(hidden_states)
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (B, 2·d_inner, L)
        x, z = xz.chunk(2, dim=1)
        y = (self._direction(x, z, reverse=False) + self._direction(x, z, reverse=True)) / 2
        return self.out_proj(y.transpose(1, 2))
