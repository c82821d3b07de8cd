"""The kernel library's ops: selective scan (one direction or both), depthwise conv1d + SiLU, add + RMSNorm.

Each op is made once by `_kernel_op`: a `torch.library` custom op (`torch.ops.partool.kernels_*`, with a
fake implementation for shapes), which is what torch.compile traces, so a model on these kernels compiles
as one graph with the glue around them fused by Inductor instead of breaking the graph at every ctypes
call; eager calls go straight to ctypes, without the dispatcher's per-call overhead. Tensors run on the
device of their first argument. The C ABI and the marshalling of tensors into it live in `kernel_abi`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from partool.ops import kernel_abi as abi

F = TypeVar("F", bound=Callable)


def _kernel_op(name: str, fake: Callable) -> Callable[[F], F]:
    """Decorator: `impl` becomes custom op partool::kernels_<name> with shape function `fake`; the returned
    function calls the op under torch.compile and `impl` directly (ctypes) in eager mode. Keyword and
    defaulted arguments are bound to positions first (the models' hot paths pass all of them by position)."""

    def wrap(impl: F) -> F:
        op = torch.library.custom_op(f"partool::kernels_{name}", impl, mutates_args=())
        op.register_fake(fake)
        signature = inspect.signature(impl)
        arity = len(signature.parameters)

        def call(*args, **kwargs):
            if kwargs or len(args) != arity:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                args = bound.args
            return op(*args) if torch.compiler.is_compiling() else impl(*args)

        call.__doc__, call.__name__, call.__signature__ = impl.__doc__, impl.__name__, signature
        return call  # type: ignore[return-value]

    return wrap


def _out_like(u: Tensor) -> Tensor:
    """An empty kernel output for u: its layout where the kernels read u in place, else contiguous; in
    the kernels' dtype for u (what the real ops allocate, so the fake implementations agree with them)."""
    dtype = abi.io_dtype(u)
    return torch.empty_like(u, dtype=dtype) if abi.dense_rows(u) else u.new_empty(u.shape, dtype=dtype)


def _pair_out(x: Tensor) -> Tensor:
    """An empty (2, *x.shape) kernel output whose halves each have the layout of `_out_like(x)`."""
    b, d, length = x.shape
    strides = x.stride() if abi.dense_rows(x) else (d * length, length, 1)
    return x.new_empty_strided((2, b, d, length), (x.numel(), *strides), dtype=abi.io_dtype(x))


def _scan_fake(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False):
    b, d, _ = u.shape
    return _out_like(u).to(u.dtype), u.new_empty((b, d, A.shape[1]), dtype=torch.float32)


@_kernel_op("selective_scan", _scan_fake)
def scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, z: Tensor | None = None,
    delta_bias: Tensor | None = None, delta_softplus: bool = False, reverse: bool = False,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Selective scan forward on the kernel of u's device: (out in u's dtype, last state float32 (b, d, n))."""
    args = abi.prepare_scan(u, delta, A, B, C, D, z, delta_bias)
    uu = args[0]
    out = torch.empty_like(uu)  # u's layout and dtype, or float32 for u of another dtype (cast back below)
    last = torch.empty(uu.shape[0], uu.shape[1], A.shape[1], dtype=torch.float32, device=uu.device)
    abi.launch("selective_scan", abi.scan_params(*args, out, last, delta_softplus, reverse), uu.device)
    return out.to(u.dtype), last


@_kernel_op("bidir_scan", lambda u, *_: _out_like(u))
def _bidir_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
    delta_bias: Tensor | None, u_b: Tensor, delta_b: Tensor, A_b: Tensor, B_b: Tensor, C_b: Tensor,
    D_b: Tensor | None, z_b: Tensor | None, delta_bias_b: Tensor | None, delta_softplus: bool, out_scale: float,
) -> Tensor:  # fmt: skip
    fa = abi.prepare_scan(u, delta, A, B, C, D, z, delta_bias)
    if u_b.shape == fa[0].shape:  # one dtype and layout for both and out
        u_b = abi.rows_like(u_b, fa[0], fa[0].dtype)
    ba = abi.prepare_scan(u_b, delta_b, A_b, B_b, C_b, D_b, z_b, delta_bias_b)
    out = torch.empty_like(fa[0])
    abi.launch("selective_scan_bidir", abi.bidir_params(fa, ba, out, delta_softplus, out_scale), out.device)
    return out


def _scan_grad_buffers(u: Tensor, A: Tensor, B: Tensor, D, z, delta_bias) -> list[Tensor]:
    """Empty float32 gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) of a scan of u (b, d, l), B
    (b, g, n, l); an absent optional input's is an empty tensor (a custom op cannot return None)."""
    b, d, length = u.shape

    def f32(*shape: int) -> Tensor:
        return torch.empty(shape, dtype=torch.float32, device=u.device)

    def optional(x: Tensor | None, *shape: int) -> Tensor:
        return f32(*shape) if x is not None else f32(0)

    return [
        f32(b, d, length), f32(b, d, length), f32(*A.shape), f32(*B.shape), f32(*B.shape),
        optional(D, d), optional(z, b, d, length), optional(delta_bias, d),
    ]  # fmt: skip


def _scan_bwd_fake(u, delta, A, B, C, D, z, delta_bias, dout, delta_softplus, reverse):
    return tuple(_scan_grad_buffers(u, A, B, D, z, delta_bias))


@_kernel_op("selective_scan_bwd", _scan_bwd_fake)
def scan_bwd(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
    delta_bias: Tensor | None, dout: Tensor, delta_softplus: bool, reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Gradients of `scan`'s out given `dout`, recomputing the states in the kernel (none were stored):
    float32 (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias), B and C as (b, g, n, l), an absent optional
    input's gradient empty."""
    args = abi.prepare_scan(u, delta, A, B, C, D, z, delta_bias)
    uu, B4 = args[0], args[3]
    g = abi.rows_like(dout, uu, uu.dtype)  # the kernels read dout in u's layout and dtype
    grads = _scan_grad_buffers(uu, A, B4, D, z, delta_bias)
    fwd = abi.scan_params(*args, g, None, delta_softplus, reverse)  # its out is not read: dout stands in
    names = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias")
    pointers = {
        name: grad.data_ptr() if grad.numel() else None for name, grad in zip(names, grads, strict=True)
    }
    abi.launch(
        "selective_scan", abi.ScanBwdParams(fwd=fwd, dout=g.data_ptr(), **pointers), uu.device, backward=True
    )
    return tuple(grads)


_SCAN_KEYS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def scan_bidirectional(
    fwd: dict[str, Tensor | None],
    bwd: dict[str, Tensor | None],
    delta_softplus: bool = True,
    out_scale: float = 0.5,
) -> Tensor:
    """Vim's two directions in one call: out_scale * (scan(fwd) + reverse scan(bwd)), no flipped copies.

    Each dict holds u, delta, A, B, C and optionally D, z, delta_bias (the scan's arguments); both
    directions need the same shapes. Runs on the device of fwd["u"]; the output has u's dtype, or float32
    for a dtype the kernels lack.
    """
    fa, ba = (fwd.get(k) for k in _SCAN_KEYS), (bwd.get(k) for k in _SCAN_KEYS)
    return _bidir_scan(*fa, *ba, delta_softplus, out_scale)


def _conv_inputs(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """x in a kernel dtype and layout, weight and bias as contiguous float32."""
    bb = None if bias is None else bias.to(torch.float32).contiguous()
    return abi.kernel_rows(x, abi.io_dtype(x)), weight.to(torch.float32).contiguous(), bb


@_kernel_op("causal_conv1d", lambda x, *_: _out_like(x))
def causal_conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, silu: bool = True, reverse: bool = False
) -> Tensor:
    """Depthwise (anti-)causal conv1d + optional SiLU: x (b, d, l), weight (d, w), bias (d,) or None."""
    x, w, bb = _conv_inputs(x, weight, bias)
    out = torch.empty_like(x)
    abi.launch("causal_conv1d", abi.conv_params(x, w, bb, out, silu, reverse), x.device)
    return out


def _conv_bwd_fake(x, weight, bias, dout, silu, reverse):
    return (
        x.new_empty(x.shape, dtype=torch.float32),
        weight.new_empty(weight.shape, dtype=torch.float32),
        weight.new_empty((weight.shape[0],) if bias is not None else (0,), dtype=torch.float32),
    )


@_kernel_op("causal_conv1d_bwd", _conv_bwd_fake)
def causal_conv1d_bwd(
    x: Tensor, weight: Tensor, bias: Tensor | None, dout: Tensor, silu: bool, reverse: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of `causal_conv1d`'s out given `dout`: float32 (dx, dweight, dbias), dbias empty without
    a bias."""
    x, w, bb = _conv_inputs(x, weight, bias)
    g = abi.rows_like(dout, x, x.dtype)
    dx, dweight, dbias = _conv_bwd_fake(x, w, bb, g, silu, reverse)
    params = abi.Conv1dBwdParams(
        fwd=abi.conv_params(x, w, bb, g, silu, reverse),  # its out is not read: dout stands in
        dout=g.data_ptr(), dx=dx.data_ptr(), dweight=dweight.data_ptr(),
        dbias=dbias.data_ptr() if bias is not None else None,
    )  # fmt: skip
    abi.launch("causal_conv1d", params, x.device, backward=True)
    return dx, dweight, dbias


@_kernel_op("causal_conv1d_bidirectional", lambda x, *_: _pair_out(x))
def causal_conv1d_bidirectional(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, silu: bool = True
) -> Tensor:
    """Vim's two depthwise convs of x (b, d, l) in one launch: weight (2, d, w) and bias (2, d) hold the
    causal direction's taps first and the anti-causal one's second. Returns (2, b, d, l): [0] causal,
    [1] anti-causal, each in the layout `causal_conv1d` gives (x's, where the kernels read x in place)."""
    x, w, bb = _conv_inputs(x, weight, bias)
    out = _pair_out(x)
    params = abi.Conv1dPairParams(
        first=abi.conv_params(x, w[0], None if bb is None else bb[0], out[0], silu, False),
        second=abi.conv_params(x, w[1], None if bb is None else bb[1], out[1], silu, True),
    )
    abi.launch("causal_conv1d_pair", params, x.device)
    return out


def _add_rms_norm_fake(x, residual, weight, eps, return_residual):
    shape = x.shape if return_residual else (0,)
    return x.new_empty(x.shape, dtype=abi.io_dtype(x)), x.new_empty(shape, dtype=torch.float32)


@_kernel_op("add_rms_norm", _add_rms_norm_fake)
def _add_rms_norm(
    x: Tensor, residual: Tensor | None, weight: Tensor, eps: float, return_residual: bool
) -> tuple[Tensor, Tensor]:
    """(out, r), r empty unless `return_residual` (the kernel then skips writing it)."""
    x = x.to(abi.io_dtype(x)).contiguous()
    res = None if residual is None else residual.to(torch.float32).contiguous()
    w = weight.to(torch.float32).contiguous()
    out = torch.empty_like(x)
    res_out = torch.empty(x.shape if return_residual else (0,), dtype=torch.float32, device=x.device)
    params = abi.add_rms_norm_params(x, res, w, eps, res_out if return_residual else None, out)
    abi.launch("add_rms_norm", params, x.device)
    return out, res_out


def add_rms_norm(
    x: Tensor, residual: Tensor | None, weight: Tensor, eps: float, return_residual: bool = True
) -> tuple[Tensor, Tensor | None]:
    """Residual add + RMSNorm over the channels of channel-major x (b, d, l), the step between two Vim
    blocks: r = residual + x (float32; r = x without a residual), out = r / rms_d(r) · weight in x's dtype
    (float32 for a dtype the kernels lack). Returns (out, r), r None unless `return_residual`."""
    out, res_out = _add_rms_norm(x, residual, weight, eps, return_residual)
    return out, res_out if return_residual else None
