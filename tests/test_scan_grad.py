"""Gradients of the kernel backends' selective scan (the library's backward kernels): every input's gradient
against autograd through two float64 references, the `reference` backend and mamba-ssm's
`selective_scan_ref` semantics written out here, over groups, reverse, softplus, the optional inputs,
dtypes, strided layouts and d_state; `auto` trains on the kernels, and past d_state 16 on `chunked`."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from scan_references import flat_view

from partool.errors import UserError
from partool.models import create_model
from partool.ops import causal_conv1d, resolve_backend, selective_scan, set_backend

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def mamba_ssm_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    """mamba-ssm's `selective_scan_ref` (real A, B and C with a groups axis), written from its semantics:
    deltaA = exp(einsum(delta, A)), deltaB_u = einsum(delta, B, u), x = deltaA * x + deltaB_u step by step,
    y = einsum(x, C), then + D * u and * silu(z). `reverse` flips the inputs and the output (as Vim's code
    does around it)."""
    if reverse:
        u, delta, B, C = u.flip(-1), delta.flip(-1), B.flip(-1), C.flip(-1)
        z = None if z is None else z.flip(-1)
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    d, g = u.shape[1], B.shape[1]
    B = B.repeat_interleave(d // g, dim=1)  # (b, d, n, l): "B = repeat(B, 'B G N L -> B (G H) N L')"
    C = C.repeat_interleave(d // g, dim=1)
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_b_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    x, ys = A.new_zeros(u.shape[0], d, A.shape[1]), []
    for i in range(u.shape[2]):
        x = delta_a[:, :, i] * x + delta_b_u[:, :, i]
        ys.append(torch.einsum("bdn,bdn->bd", x, C[:, :, :, i]))
    out = torch.stack(ys, dim=2)
    if D is not None:
        out = out + u * D[..., None]
    if z is not None:
        out = out * F.silu(z)
    return out.flip(-1) if reverse else out


def make_case(b, d, n, length, groups, dtype, extras, strided, seed):
    """Scan inputs in `dtype` (A, D, delta_bias float32), the io tensors as strided views when asked."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    u, z = randn(b, d, length), randn(b, d, length)
    delta = randn(b, d, length) * 0.5 - 1.0
    A = -torch.rand(d, n, generator=gen) * 2 - 0.1
    B, C = randn(b, groups, n, length), randn(b, groups, n, length)
    D, bias = randn(d), randn(d) * 0.3
    io = [x.to(dtype) for x in (u, delta, B, C, z)]
    if strided:
        io = [flat_view(x) if x.dim() == 3 else x.transpose(0, 1).contiguous().transpose(0, 1) for x in io]
    u, delta, B, C, z = io
    return (u, delta, A, B, C, D if extras else None, z if extras else None, bias if extras else None)


def grads(fn, inputs, softplus, reverse, dout):
    leaves = [None if x is None else x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves, softplus, reverse)
    out.backward(dout)
    return out.detach(), [None if x is None else x.grad for x in leaves]


def kernel_scan(*args):
    return selective_scan(*args[:8], delta_softplus=args[8], reverse=args[9], backend="cpu")


def reference_scan(*args):
    return selective_scan(*args[:8], delta_softplus=args[8], reverse=args[9], backend="reference")


def as_f64(inputs):
    return [None if x is None else x.double() for x in inputs]


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-12))


CASES = [
    # (d_state, groups, reverse, softplus, extras, dtype, strided)
    *itertools.product([1, 5, 16], [1, 2], [False, True], [True], [True], [torch.float32], [False]),
    (16, 1, False, False, False, torch.float32, False),
    (16, 2, True, True, False, torch.float32, True),
    (16, 1, False, True, True, torch.float32, True),
    (16, 1, True, True, True, torch.float16, False),
    (16, 2, False, True, True, torch.bfloat16, True),
]


@pytest.mark.parametrize(("n", "groups", "reverse", "softplus", "extras", "dtype", "strided"), CASES)
def test_kernel_backward_matches_float64_references(
    kernels, n, groups, reverse, softplus, extras, dtype, strided
):
    inputs = make_case(2, 8, n, 37, groups, dtype, extras, strided, seed=n + 10 * groups)
    if not softplus:  # a raw delta is a step size: keep it positive so that the states decay
        inputs = (inputs[0], inputs[1].abs(), *inputs[2:])
    dout = torch.randn(2, 8, 37, generator=torch.Generator().manual_seed(1)).to(dtype)
    out, got = grads(kernel_scan, inputs, softplus, reverse, dout)
    want_out, want = grads(reference_scan, as_f64(inputs), softplus, reverse, dout.double())
    ssm_out, ssm = grads(mamba_ssm_ref, as_f64(inputs), softplus, reverse, dout.double())
    assert rel_err(out, want_out) <= TOL[dtype] and rel_err(ssm_out, want_out) <= 1e-12
    for name, g, w, s, x in zip(NAMES, got, want, ssm, inputs, strict=True):
        if x is None:
            assert g is None and w is None
            continue
        assert g.dtype == x.dtype and g.shape == x.shape, name
        assert rel_err(w, s) <= 1e-10, f"the two references disagree on d{name}"
        assert rel_err(g, w) <= TOL[dtype], f"d{name}: {rel_err(g, w):.2e}"


def test_auto_trains_on_the_kernels_and_beyond_dstate_16_on_chunked(kernels):
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, needs_grad=True, d_state=16).name == "cpu"
    assert resolve_backend("auto", cpu, needs_grad=True, d_state=17).name == "chunked"
    args = make_case(1, 4, 17, 9, 1, torch.float32, True, False, seed=0)
    leaves = [x.requires_grad_() for x in args if x is not None]
    selective_scan(*args, delta_softplus=True).sum().backward()  # auto: chunked, no error
    assert all(x.grad is not None for x in leaves)
    with pytest.raises(UserError, match=r"d_state 1\.\.16"):
        selective_scan(*args, delta_softplus=True, backend="cpu")


@pytest.mark.parametrize("name", ["vim-t", "vmamba-t"])
def test_a_training_step_on_the_kernels_gives_chunked_gradients(kernels, name):
    """One loss.backward() of a small model: every parameter's gradient on the `cpu` backend (backward
    kernels) equals the `chunked` one (autograd through PyTorch). In eval mode: the PAR head's BatchNorm
    then uses its running statistics, so the loss does not flatten to batch noise."""
    kwargs = {"depth": 2} if name == "vim-t" else {"depths": [1, 1, 1, 1], "dims": 16}
    torch.manual_seed(0)
    model = create_model(name, 5, img_size=(64, 32), **kwargs).eval()
    images, target = torch.randn(3, 3, 64, 32), torch.rand(3, 5)
    found = {}
    try:
        for backend in ("chunked", "cpu"):
            set_backend(backend)
            model.zero_grad()
            F.binary_cross_entropy_with_logits(model(images), target).backward()
            found[backend] = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    finally:
        set_backend(None)
    assert found["cpu"].keys() == found["chunked"].keys() and len(found["cpu"]) > 40
    for key, want in found["chunked"].items():
        assert rel_err(found["cpu"][key], want.double()) <= 1e-4, key


@pytest.mark.parametrize(
    ("width", "reverse", "silu", "with_bias", "dtype", "strided"),
    [
        *itertools.product([1, 3, 4], [False, True], [True], [True], [torch.float32], [False]),
        (4, False, False, False, torch.float32, True),
        (4, True, True, True, torch.float16, True),
        (2, False, True, True, torch.bfloat16, False),
    ],
)
def test_kernel_conv_backward_matches_pytorch(kernels, width, reverse, silu, with_bias, dtype, strided):
    """The library's conv1d (+ SiLU) backward, taken when a kernel backend trains, against autograd through
    PyTorch's conv in float64: dx, dweight, dbias."""
    gen = torch.Generator().manual_seed(width)
    x = torch.randn(2, 6, 23, generator=gen).to(dtype)
    x = flat_view(x) if strided else x
    weight, bias = torch.randn(6, width, generator=gen), torch.randn(6, generator=gen)
    dout = torch.randn(2, 6, 23, generator=gen).to(dtype)
    inputs = (x, weight, bias if with_bias else None)
    found = {}
    try:
        for backend, cast in (("cpu", None), ("chunked", torch.float64)):
            set_backend(backend)
            leaves = [
                None if t is None else (t.to(cast) if cast else t).detach().clone().requires_grad_()
                for t in inputs
            ]
            out = causal_conv1d(*leaves, activation="silu" if silu else None, reverse=reverse)
            out.backward(dout.to(out.dtype))
            found[backend] = (out.detach(), [None if t is None else t.grad for t in leaves])
    finally:
        set_backend(None)
    (out, got), (want_out, want) = found["cpu"], found["chunked"]
    assert out.dtype == dtype and rel_err(out, want_out) <= TOL[dtype]
    for name, g, w in zip(("x", "weight", "bias"), got, want, strict=True):
        assert (g is None) == (w is None), name
        if g is not None:
            assert rel_err(g, w) <= TOL[dtype], f"d{name}: {rel_err(g, w):.2e}"
