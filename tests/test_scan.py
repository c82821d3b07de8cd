"""selective_scan against a per-element loop written here (independent of partool's references)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from partool.errors import UserError
from partool.ops import available_backends, get_backend, resolve_backend, selective_scan, set_backend

# The compute backends that run on CPU here (the ONNX export lowerings registered by partool.ops.onnx are
# graph builders, not compute backends).
CPU_BACKENDS = ("reference", "chunked", "cpu")


@pytest.fixture(params=CPU_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each CPU compute backend; `cpu` builds libpartool_kernels first (or skips saying what is missing), so
    its cases are collected on a fresh machine too, before anything was built."""
    if request.param == "cpu":
        request.getfixturevalue("kernels")
    return request.param


def loop_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False, reverse=False):
    """Scalar loops in float64 over batch, channel, step and state: the definition, written out."""
    u, delta, A, B, C = (np.asarray(x, dtype=np.float64) for x in (u, delta, A, B, C))
    b, d, length = u.shape
    n = A.shape[1]
    if B.ndim == 3:
        B, C = B[:, None], C[:, None]
    per_group = d // B.shape[1]
    out = np.zeros((b, d, length))
    last = np.zeros((b, d, n))
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for i in range(b):
        for c in range(d):
            grp = c // per_group
            h = [0.0] * n
            for t in steps:
                dt = delta[i, c, t] + (float(delta_bias[c]) if delta_bias is not None else 0.0)
                if softplus:
                    dt = math.log1p(math.exp(dt))
                y = 0.0
                for s in range(n):
                    h[s] = math.exp(dt * A[c, s]) * h[s] + dt * B[i, grp, s, t] * u[i, c, t]
                    y += C[i, grp, s, t] * h[s]
                if D is not None:
                    y += float(D[c]) * u[i, c, t]
                if z is not None:
                    zz = float(z[i, c, t])
                    y *= zz / (1.0 + math.exp(-zz))
                out[i, c, t] = y
            last[i, c] = h
    return out, last


def make_inputs(b, d, n, length, groups, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    bc_shape = (b, n, length) if groups == 1 else (b, groups, n, length)
    return dict(
        u=r(b, d, length).to(dtype),
        delta=(0.5 * r(b, d, length).abs()).to(dtype),  # Δ > 0 keeps exp(Δ·A) < 1 without softplus
        A=-torch.rand(d, n, generator=g) * 2 - 0.1,
        B=r(*bc_shape).to(dtype),
        C=r(*bc_shape).to(dtype),
        D=r(d),
        z=r(b, d, length).to(dtype),
        delta_bias=0.3 * r(d).abs(),
    )


OPTIONALS = list(itertools.product([False, True], repeat=4))  # use D, z, delta_bias, softplus
SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")  # selective_scan's positional order


@pytest.mark.parametrize("n,groups", [(1, 1), (16, 1), (16, 4)])
@pytest.mark.parametrize("length", [1, 197])
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_loop_fp32(backend, n, groups, length, reverse):
    for use_d, use_z, use_bias, softplus in OPTIONALS[:: 3 if length > 1 else 1]:
        x = make_inputs(2, 4, n, length, groups, seed=length + n)
        kwargs = dict(
            D=x["D"] if use_d else None,
            z=x["z"] if use_z else None,
            delta_bias=x["delta_bias"] if use_bias else None,
            delta_softplus=softplus,
        )
        required = [x[k] for k in SCAN_ARGS[:5]]
        out, last = selective_scan(
            *required, return_last_state=True, reverse=reverse, backend=backend, **kwargs
        )
        want, want_last = loop_scan(
            *required, kwargs["D"], kwargs["z"], kwargs["delta_bias"], softplus, reverse
        )
        assert out.dtype == torch.float32 and last.dtype == torch.float32
        assert last.shape == (2, 4, n)
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(last.numpy(), want_last, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_keep_dtype_and_fp32_state(backend, dtype):
    x = make_inputs(1, 8, 16, 197, 4, dtype=dtype, seed=3)
    args = [x[k] for k in SCAN_ARGS]
    out, last = selective_scan(*args, True, True, backend=backend)
    want, want_last = loop_scan(*(a.float() for a in args), True)  # A, D, delta_bias are float32 already
    assert out.dtype == dtype and last.dtype == torch.float32
    tol = 1e-2 if dtype == torch.float16 else 4e-2  # output rounding only: the state stays fp32
    np.testing.assert_allclose(out.float().numpy(), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(last.numpy(), want_last, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_every_input(backend, reverse):
    x = make_inputs(1, 4, 2, 6, 2, dtype=torch.float64, seed=7)
    args = [x[k].double().requires_grad_() for k in SCAN_ARGS]

    def f(*a):
        return selective_scan(*a, delta_softplus=True, reverse=reverse, backend=backend)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5)


def test_forward_only_backends_are_differentiable(kernels):
    """Backends without their own backward (the kernels) get the reference's gradients."""
    x = make_inputs(1, 4, 4, 9, 1, seed=11)
    grads = {}
    for backend in CPU_BACKENDS:
        u = x["u"].clone().requires_grad_()
        A = x["A"].clone().requires_grad_()
        selective_scan(
            u, x["delta"], A, x["B"], x["C"], x["D"], x["z"], None, True, backend=backend
        ).sum().backward()
        grads[backend] = (u.grad, A.grad)
    for backend, (gu, ga) in grads.items():
        torch.testing.assert_close(gu, grads["reference"][0], rtol=1e-4, atol=1e-5, msg=backend)
        torch.testing.assert_close(ga, grads["reference"][1], rtol=1e-4, atol=1e-5, msg=backend)


def test_chunk_size_does_not_change_result():
    from partool.ops.scan_reference import scan_chunked

    x = make_inputs(1, 4, 3, 50, 1, seed=5)
    args = (x["u"], x["delta"].abs(), x["A"], x["B"][:, None], x["C"][:, None])
    ref, ref_h = scan_chunked(*args, chunk=1)
    for chunk in (7, 16, 64):
        y, h = scan_chunked(*args, chunk=chunk)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(h, ref_h, rtol=1e-5, atol=1e-5)


def test_large_delta_is_stable():
    """exp(Δ·A) underflows to 0 for huge Δ: the state resets instead of overflowing."""
    x = make_inputs(1, 2, 4, 40, 1, seed=2)
    out = selective_scan(x["u"], x["delta"].abs() * 1e4, x["A"], x["B"], x["C"], backend="chunked")
    assert torch.isfinite(out).all()


def test_backend_selection(monkeypatch):
    device = torch.device("cpu")
    monkeypatch.delenv("PARTOOL_SCAN_BACKEND", raising=False)
    set_backend(None)
    assert get_backend() == "auto"
    monkeypatch.setenv("PARTOOL_SCAN_BACKEND", "reference")
    assert resolve_backend(None, device).name == "reference"
    set_backend("chunked")
    try:
        assert resolve_backend(None, device).name == "chunked"  # global beats the environment
        assert resolve_backend("reference", device).name == "reference"  # the call beats both
    finally:
        set_backend(None)
    with pytest.raises(UserError, match="unknown selective-scan backend 'nope'"):
        resolve_backend("nope", device)
    with pytest.raises(UserError, match="does not run on cpu"):
        resolve_backend("mamba_ssm", device)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(delta=torch.zeros(2, 4, 5)), "delta must have u's shape"),
        (dict(A=torch.zeros(3, 2)), "A must be"),
        (dict(B=torch.zeros(1, 3, 2, 6)), "groups, which does not divide"),
        (dict(C=torch.zeros(1, 2, 7)), "C must be"),
        (dict(D=torch.zeros(5)), "D must be"),
    ],
)
def test_shape_errors_say_what_is_wrong(change, match):
    x = make_inputs(1, 4, 2, 6, 1)
    x.update(change)
    with pytest.raises(ValueError, match=match):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"])


def test_auto_prefers_differentiable_backends_for_training(monkeypatch):
    """A forward-only backend wins `auto` for inference only; with gradients a backend with a gradient of its
    own runs: the `cpu` kernels (they have backward kernels) where the library is built, else `chunked`."""
    from partool.ops import ScanBackend
    from partool.ops.backends import _BACKENDS

    monkeypatch.delenv("PARTOOL_SCAN_BACKEND", raising=False)
    fake = ScanBackend("fake_kernel", lambda *a: None, lambda: True, frozenset({"cpu"}), False, 1000)
    monkeypatch.setitem(_BACKENDS, "fake_kernel", fake)
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu).name == "fake_kernel"
    trains = "cpu" if available_backends()["cpu"] else "chunked"
    assert resolve_backend("auto", cpu, needs_grad=True).name == trains


def test_a_forward_only_backend_trains_through_the_chunked_reference(monkeypatch):
    """A registered backend without a gradient of its own still trains: its backward differentiates the
    chunked reference, and the gradients equal autograd through `chunked`."""
    from partool.ops import ScanBackend
    from partool.ops.backends import _BACKENDS
    from partool.ops.scan_reference import scan_reference_fn

    def forward_only(*args):
        with torch.no_grad():
            return scan_reference_fn(*args)

    monkeypatch.setitem(
        _BACKENDS,
        "fwd_only",
        ScanBackend("fwd_only", forward_only, lambda: True, frozenset({"cpu"}), False, -1),
    )
    gen = torch.Generator().manual_seed(7)
    u, delta, z = (torch.randn(2, 4, 9, generator=gen) for _ in range(3))
    A, B, C = (
        -torch.rand(4, 3, generator=gen),
        torch.randn(2, 3, 9, generator=gen),
        torch.randn(2, 3, 9, generator=gen),
    )
    D = torch.randn(4, generator=gen)
    found = {}
    for backend in ("fwd_only", "chunked"):
        leaves = [x.clone().requires_grad_() for x in (u, delta, A, B, C, D, z)]
        selective_scan(*leaves, delta_softplus=True, backend=backend).square().sum().backward()
        found[backend] = [x.grad for x in leaves]
    for got, want in zip(found["fwd_only"], found["chunked"], strict=True):
        torch.testing.assert_close(got, want)
