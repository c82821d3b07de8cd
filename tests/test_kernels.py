"""libpartool_kernels through its ctypes binding: CPU scan/bidirectional/conv1d against independent
references, argument validation, the C struct layout, and (with a GPU) CUDA parity."""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scan_references import (
    TOL,
    add_rms_norm_reference,
    conv_reference,
    flat_view,
    make_inputs,
    numpy_scan,
    rel_err,
)

from partool.ops import kernel_abi
from partool.ops.scan_reference import scan_chunked

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def float_scan_reference(inputs, softplus, reverse):
    """numpy_scan of make_inputs' tensors taken in float32 (numpy has no bfloat16): (out, last state)."""
    return numpy_scan(*(None if x is None else x.float() for x in inputs), softplus, reverse)


SWEEP = list(
    itertools.product(
        [1, 16],  # dstate
        [1, 4],  # groups
        [False, True],  # z, D, delta_bias and softplus together
        [False, True],  # reverse
        [1, 7, 197],  # length
        [torch.float32, torch.float16, torch.bfloat16],
    )
)


@pytest.mark.parametrize(("n", "groups", "extras", "reverse", "length", "dtype"), SWEEP)
def test_cpu_scan_matches_numpy(kernels, n, groups, extras, reverse, length, dtype):
    u, delta, A, B, C, D, z, bias = make_inputs(2, 8, n, length, groups, dtype, extras)
    out, last = kernels.scan(u, delta, A, B, C, D, z, bias, delta_softplus=extras, reverse=reverse)
    ref, ref_last = float_scan_reference((u, delta, A, B, C, D, z, bias), extras, reverse)
    assert out.dtype == dtype and out.shape == u.shape
    assert last.dtype == torch.float32 and last.shape == (2, 8, n)
    assert rel_err(out, ref) <= TOL[dtype]
    assert rel_err(last, ref_last) <= 1e-5


@pytest.mark.parametrize(("length", "reverse"), [(32, False), (45, True)])
def test_cpu_scan_wide_argument_ranges(kernels, length, reverse):
    """delta + bias over [-25, 25] (both softplus branches, up to its x > 20 cut), z over [-30, 30] and
    decays exp(dt*A) from ~1 down to underflow: the kernel's own exp/log1p must hold 1e-5 everywhere.
    Length 32 is whole 16-step blocks only, 45 ends in a partial block."""
    gen = torch.Generator().manual_seed(11)
    b, d, n = 2, 8, 16
    u = torch.randn(b, d, length, generator=gen)
    delta = torch.rand(b, d, length, generator=gen) * 50 - 25
    A = -torch.rand(d, n, generator=gen) * 4 - 1e-3
    B, C = torch.randn(b, 1, n, length, generator=gen), torch.randn(b, 1, n, length, generator=gen)
    D, bias = torch.randn(d, generator=gen), torch.randn(d, generator=gen)
    z = torch.rand(b, d, length, generator=gen) * 60 - 30
    out, last = kernels.scan(u, delta, A, B, C, D, z, bias, delta_softplus=True, reverse=reverse)
    ref, ref_last = numpy_scan(u, delta, A, B, C, D, z, bias, True, reverse)
    assert rel_err(out, ref) <= 1e-5
    assert rel_err(last, ref_last) <= 1e-5


@pytest.mark.parametrize("reverse", [False, True])
def test_cpu_scan_matches_chunked_reference(kernels, reverse):
    u, delta, A, B, C, *_ = make_inputs(3, 12, 16, 70, 3, torch.float32, False, seed=3)
    out, last = kernels.scan(u, delta, A, B, C, reverse=reverse)
    ref, ref_last = scan_chunked(u, delta, A, B, C, reverse=reverse)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-5)


def test_cpu_backend_through_selective_scan_with_gradients(kernels):
    from partool.ops import selective_scan

    u, delta, A, B, C, D, z, bias = make_inputs(2, 8, 16, 19, 1, torch.float32, True, seed=5)
    B3, C3 = B[:, 0], C[:, 0]
    leaves = [x.clone().requires_grad_(True) for x in (u, delta, A)]
    out, last = selective_scan(*leaves, B3, C3, D, z, bias, True, True, backend="cpu")
    ref_leaves = [x.clone().requires_grad_(True) for x in (u, delta, A)]
    ref, ref_last = selective_scan(*ref_leaves, B3, C3, D, z, bias, True, True, backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    ref.square().sum().backward()
    for got, want in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cpu_bidirectional_equals_two_scans(kernels, dtype):
    fwd = dict(
        zip(
            ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"),
            make_inputs(2, 8, 16, 23, 1, dtype, True, 1),
            strict=True,
        )
    )
    bwd = dict(
        zip(
            ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"),
            make_inputs(2, 8, 16, 23, 1, dtype, True, 2),
            strict=True,
        )
    )
    bwd["z"] = fwd["z"]  # Vim shares z between the directions
    out = kernels.scan_bidirectional(fwd, bwd, delta_softplus=True, out_scale=0.5)

    def ref(p, reverse):
        return float_scan_reference(
            [p[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")], True, reverse
        )[0]

    expected = 0.5 * (ref(fwd, False) + ref(bwd, True))
    assert out.dtype == dtype
    assert rel_err(out, expected) <= TOL[dtype]


KEYS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _contiguous(args):
    return tuple(None if x is None else x.contiguous() for x in args)


def _named(args) -> dict:
    return dict(zip(KEYS, args, strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cpu_kernels_take_strided_layouts_in_place(kernels, dtype):
    """The fused Vim path hands the kernels views: u, delta, z and the conv input as one (d, b·l) matrix,
    B and C as row slices of x_proj's output. The kernels read them in place (no copies), write out in
    u's layout, and give exactly the contiguous calls' results; a layout with gaps is copied first."""
    args = make_inputs(3, 8, 16, 23, 2, dtype, True, seed=4)
    u, delta, A, B, C, D, z, bias = args
    views = (flat_view(u), flat_view(delta), A, flat_view(B, 5, 3), flat_view(C, 2, 1), D, flat_view(z), bias)
    prepared = kernel_abi.prepare_scan(*views)
    for i in (0, 1, 3, 4, 6):
        assert prepared[i].data_ptr() == views[i].data_ptr(), KEYS[i]
    out, last = kernels.scan(*views, delta_softplus=True, reverse=True)
    want, want_last = kernels.scan(*_contiguous(args), delta_softplus=True, reverse=True)
    assert out.stride() == views[0].stride() and torch.equal(out, want) and torch.equal(last, want_last)

    other = make_inputs(3, 8, 16, 23, 2, dtype, True, seed=5)
    bwd_views = (flat_view(other[0], 1, 1), *other[1:])  # u with gaps between its rows: copied
    both = kernels.scan_bidirectional(_named(views), _named(bwd_views))
    want = kernels.scan_bidirectional(_named(_contiguous(args)), _named(_contiguous(other)))
    assert both.stride() == views[0].stride() and torch.equal(both, want)

    w, conv_bias = torch.randn(8, 4), torch.randn(8)
    conv = kernels.causal_conv1d(views[0], w, conv_bias, silu=True, reverse=True)
    assert conv.stride() == views[0].stride()
    assert torch.equal(conv, kernels.causal_conv1d(u.contiguous(), w, conv_bias, silu=True, reverse=True))


def test_cpu_conv1d_pair_is_two_convs_in_one_call(kernels):
    """Vim's causal and anti-causal convs of one x as one call: each half equals its own conv1d, in x's
    layout (a flat view here, read in place)."""
    x = flat_view(torch.randn(3, 6, 29))
    w, bias = torch.randn(2, 6, 4), torch.randn(2, 6)
    both = kernels.causal_conv1d_bidirectional(x, w, bias)
    assert both.shape == (2, 3, 6, 29) and both[0].stride() == both[1].stride() == x.stride()
    for i, reverse in ((0, False), (1, True)):
        assert torch.equal(both[i], kernels.causal_conv1d(x, w[i], bias[i], silu=True, reverse=reverse))
        assert rel_err(both[i], conv_reference(x, w[i], bias[i], True, reverse)) <= 1e-6
    lib = kernel_abi.load_library()
    pair = kernel_abi.Conv1dPairParams(
        first=kernel_abi.conv_params(x, w[0], None, both[0], True, False),
        second=kernel_abi.conv_params(
            both[0], w[1], None, both[1], True, True
        ),  # reads what the first writes
    )
    assert lib.partool_causal_conv1d_pair_fwd_cpu(ctypes.byref(pair), 1) == 1
    assert "the other call's x" in lib.partool_last_error_message().decode()
    pair.second = kernel_abi.conv_params(x[:, :5], w[1], None, both[1], True, True)
    assert lib.partool_causal_conv1d_pair_fwd_cpu(ctypes.byref(pair), 1) == 1
    assert "differ in batch/dim/length/width/io_dtype" in lib.partool_last_error_message().decode()


def test_strides_are_validated(kernels):
    lib = kernel_abi.load_library()
    keep: list = []
    for field, value, message in (
        ("dim_stride", 3, "rows overlap"),  # rows of 5 only 3 apart
        ("batch_stride", -1, "must be >= 0"),
        ("bc_state_stride", -5, "B/C strides must be >= 0"),
    ):
        params = _valid_params(kernels, keep)
        setattr(params, field, value)
        assert lib.partool_selective_scan_fwd_cpu(ctypes.byref(params), 1) == 1
        assert message in lib.partool_last_error_message().decode()
    fwd = make_inputs(2, 8, 4, 5, 1, torch.float32, False)
    bwd = (flat_view(fwd[0]), *fwd[1:])  # prepared apart: another layout than fwd and out
    fa, ba = kernel_abi.prepare_scan(*fwd), kernel_abi.prepare_scan(*bwd)
    out = torch.empty_like(fa[0])
    params = kernel_abi.bidir_params(fa, ba, out, False, 0.5)
    assert lib.partool_selective_scan_bidir_fwd_cpu(ctypes.byref(params), 1) == 1
    assert "differ in batch_stride/dim_stride" in lib.partool_last_error_message().decode()
    x = torch.randn(2, 4, 6)
    cparams = kernel_abi.conv_params(x, torch.randn(4, 4), None, torch.empty_like(x), True, False)
    cparams.batch_stride = 12  # two batches of 4 rows 6 apart cannot start 12 apart
    assert lib.partool_causal_conv1d_fwd_cpu(ctypes.byref(cparams), 1) == 1
    assert "rows overlap" in lib.partool_last_error_message().decode()


def _op_samples(dtype):
    """Sample arguments of each partool custom op: with and without the optional tensors."""
    keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    for extras in (True, False):
        fwd = make_inputs(2, 8, 4, 11, 2, dtype, extras, seed=3)
        bwd = make_inputs(2, 8, 4, 11, 2, dtype, extras, seed=4)
        yield torch.ops.partool.kernels_selective_scan.default, (*fwd, extras, not extras)
        yield torch.ops.partool.kernels_bidir_scan.default, (*fwd, *bwd, extras, 0.5)
        x, w = fwd[keys.index("u")], torch.randn(8, 4)
        yield (
            torch.ops.partool.kernels_causal_conv1d.default,
            (x, w, fwd[keys.index("D")], extras, not extras),
        )
        residual = torch.randn(x.shape) if extras else None
        yield torch.ops.partool.kernels_add_rms_norm.default, (x, residual, torch.rand(8), 1e-5, extras)
    # the layouts of the fused Vim path (outputs in u's layout: the fake implementations must say so)
    fwd = make_inputs(2, 8, 4, 11, 1, dtype, True, seed=5)
    flat = (flat_view(fwd[0]), flat_view(fwd[1]), fwd[2], flat_view(fwd[3], 1, 2), flat_view(fwd[4], 3, 0),
            fwd[5], flat_view(fwd[6]), fwd[7])  # fmt: skip
    yield torch.ops.partool.kernels_selective_scan.default, (*flat, True, False)
    yield torch.ops.partool.kernels_bidir_scan.default, (*flat, *flat, True, 0.5)
    yield torch.ops.partool.kernels_causal_conv1d.default, (flat[0], torch.randn(8, 4), None, True, False)
    for x in (flat[0], fwd[0]):
        args = (x, torch.randn(2, 8, 4), torch.randn(2, 8), True)
        yield torch.ops.partool.kernels_causal_conv1d_bidirectional.default, args


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_custom_ops_pass_opcheck(kernels, dtype):
    """torch's own checker: schema, fake (shape-only) implementations against the real kernels' outputs
    (shapes, dtypes, strides), no aliasing. float64 is computed in float32 and the ops say so."""
    for op, args in _op_samples(dtype):
        torch.library.opcheck(op, args)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the Linux process map")
def test_kernels_share_pytorchs_openmp_runtime(kernels):
    """The CPU kernels run on the caller's OpenMP team; inside PyTorch that must be PyTorch's own OpenMP
    runtime (the same one file mapped before and after the kernels load), or the kernels' threads compete
    with PyTorch's spinning ones."""
    script = (
        "import torch\n"
        "def runtimes():\n"
        "    return sorted({l.split()[-1] for l in open('/proc/self/maps') if 'omp' in l.split()[-1]})\n"
        "torch.randn(64, 64) @ torch.randn(64, 64)\n"
        "before = runtimes()\n"
        "import partool.ops.kernels as k\n"
        "k.causal_conv1d(torch.randn(2, 64, 50), torch.randn(64, 4))\n"  # a parallel region on 2 threads
        "print(json.dumps([before, runtimes()]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + script], check=True, capture_output=True, text=True, env=env
    )
    before, after = json.loads(out.stdout)
    assert len(before) == 1 and after == before, (before, after)
    if shutil.which("readelf"):  # and the kernels do run on OpenMP (not on threads of their own)
        from partool.plugins import find_kernels_library

        dynamic = subprocess.run(
            ["readelf", "-d", str(find_kernels_library())], capture_output=True, text=True
        )
        assert "libgomp.so.1" in dynamic.stdout, "built without OpenMP: CMake found none for this compiler"


@pytest.mark.slow
def test_kernels_compile_into_one_graph(kernels):
    """torch.compile(fullgraph=True) traces scan, bidirectional scan, conv1d and add + RMSNorm as custom ops
    (a ctypes call would break the graph) and gives the eager results, glue included."""
    keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    fwd = dict(zip(keys, make_inputs(2, 8, 16, 23, 1, torch.float32, True, 1), strict=True))
    bwd = dict(zip(keys, make_inputs(2, 8, 16, 23, 1, torch.float32, True, 2), strict=True))
    w = torch.randn(8, 4)

    def glue(fwd, bwd, w):
        xc = kernels.causal_conv1d(fwd["u"] * 2, w, fwd["D"], silu=True, reverse=True)
        out, last = kernels.scan(**{**fwd, "u": xc}, delta_softplus=True)
        both = kernels.scan_bidirectional(fwd, bwd, delta_softplus=True, out_scale=0.25)
        normed, residual = kernels.add_rms_norm(out.sin() + both, fwd["u"], w[:, 0], 1e-5)
        return normed + residual, last.cos()

    torch._dynamo.reset()
    compiled = torch.compile(glue, fullgraph=True, dynamic=False)
    for got, want in zip(compiled(fwd, bwd, w), glue(fwd, bwd, w), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_backend_probes_are_compile_constants(kernels):
    """The availability probes call ctypes or import packages; torch.compile must take them as constants,
    or `auto` backend resolution inside a compiled model breaks the graph."""
    from partool.ops import mamba_ssm_available, resolve_backend

    def pick(x):
        probes = (kernel_abi.cpu_available(), kernel_abi.cuda_available(), mamba_ssm_available())
        return x + sum(probes) + (10 if resolve_backend(None, x.device).name == "cpu" else 20)

    torch._dynamo.reset()
    x = torch.zeros(1)
    assert torch.compile(pick, fullgraph=True)(x).item() == pick(x).item() >= 11


@pytest.mark.parametrize(
    ("width", "reverse", "silu", "dtype"),
    [
        (4, False, True, torch.float32),
        (4, True, True, torch.float32),
        (3, True, False, torch.float32),
        (1, False, True, torch.float32),
        (4, False, True, torch.bfloat16),
    ],
)
def test_cpu_conv1d_matches_torch(kernels, width, reverse, silu, dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 33, generator=gen).to(dtype)
    w = torch.randn(6, width, generator=gen)
    bias = torch.randn(6, generator=gen)
    out = kernels.causal_conv1d(x, w, bias, silu=silu, reverse=reverse)
    assert rel_err(out, conv_reference(x, w, bias, silu, reverse)) <= TOL[dtype]


@pytest.mark.parametrize(
    ("b", "d", "length", "dtype", "with_residual"),
    [
        (1, 384, 197, torch.float32, True),  # Vim-S between two blocks
        (3, 7, 65, torch.float32, False),  # first block: no residual yet; partial last position tile
        (2, 16, 1, torch.float16, True),
        (2, 130, 64, torch.bfloat16, True),
    ],
)
def test_cpu_add_rms_norm_matches_numpy(kernels, b, d, length, dtype, with_residual):
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(b, d, length, generator=gen) * 3).to(dtype)
    residual = torch.randn(b, d, length, generator=gen) if with_residual else None
    weight = torch.rand(d, generator=gen) + 0.5
    out, r = kernels.add_rms_norm(x, residual, weight, 1e-5)
    want_r, want_out = add_rms_norm_reference(x, residual, weight, 1e-5)
    assert out.dtype == dtype and r.dtype == torch.float32
    assert rel_err(r, want_r) <= 1e-7
    assert rel_err(out, want_out) <= {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    alone, no_r = kernels.add_rms_norm(x, residual, weight, 1e-5, return_residual=False)
    assert no_r is None and torch.equal(alone, out)


def test_cpu_add_rms_norm_in_place_and_eps(kernels):
    """residual_out may be the residual itself; eps is added to the mean square (a zero column gives 0)."""
    x = torch.randn(2, 8, 9)
    x[1, :, 4] = 0.0
    residual = torch.randn(2, 8, 9)
    residual[1, :, 4] = 0.0
    weight = torch.rand(8) + 0.5
    want_r, want_out = add_rms_norm_reference(x, residual, weight, 0.25)
    out = torch.empty_like(x)
    params = kernel_abi.add_rms_norm_params(x, residual, weight, 0.25, residual, out)
    assert kernel_abi.load_library().partool_add_rms_norm_fwd_cpu(ctypes.byref(params), 2) == 0
    assert rel_err(residual, want_r) <= 1e-7 and rel_err(out, want_out) <= 1e-6
    assert torch.all(out[1, :, 4] == 0)
    # eps matters: with a tiny column its scale is 1/sqrt(mean + eps), not 1/sqrt(mean)
    tiny = torch.full((1, 4, 1), 1e-3)
    got, _ = kernels.add_rms_norm(tiny, None, torch.ones(4), 1e-6)
    assert got.flatten().tolist() == pytest.approx([1e-3 / (1e-6 + 1e-6) ** 0.5] * 4, rel=1e-5)


def test_add_rms_norm_refuses_bad_arguments(kernels):
    lib = kernel_abi.load_library()
    x, weight = torch.randn(1, 4, 3), torch.ones(4)
    out, res = torch.empty_like(x), torch.empty_like(x)
    valid = dict(x=x, residual=None, weight=weight, eps=1e-5, residual_out=res, out=out)
    cases = {  # message -> (tensor arguments changed, struct fields changed)
        "out must not be x": ({"out": x}, {}),
        "residual_out must not be x": ({"residual_out": x}, {}),
        "weight is NULL": ({"weight": None}, {}),
        "eps=-1 must be >= 0": ({"eps": -1.0}, {}),
        "io_dtype=5": ({}, {"io_dtype": 5}),
        "batch, dim and length must be positive": ({}, {"length": 0}),
    }
    for message, (arguments, fields) in cases.items():
        params = kernel_abi.add_rms_norm_params(**{**valid, **arguments})
        for name, value in fields.items():
            setattr(params, name, value)
        for call, arg in ((lib.partool_add_rms_norm_fwd_cpu, 1), (lib.partool_add_rms_norm_fwd_cuda, None)):
            assert call(ctypes.byref(params), arg) in (1, 3), message
            assert message in lib.partool_last_error_message().decode()
    assert lib.partool_add_rms_norm_fwd_cpu(None, 1) == 1


# ---- argument validation and ABI ----------------------------------------------------------------


def _valid_params(kernels, keep):
    u, delta, A, B, C, *_ = make_inputs(1, 8, 4, 5, 2, torch.float32, False)
    out = torch.empty_like(u)
    keep.extend([u, delta, A, B, C, out])
    return kernel_abi.scan_params(u, delta, A, B, C, None, None, None, out, None, False, False)


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("u", None, 1),
        ("out", None, 1),
        ("A", None, 1),
        ("batch", 0, 1),
        ("length", -3, 1),
        ("groups", 3, 1),  # dim 8 not divisible by 3
        ("dstate", 0, 2),
        ("dstate", 17, 2),
        ("io_dtype", 7, 3),
    ],
)
def test_invalid_arguments_return_status(kernels, field, value, status):
    keep: list = []
    params = _valid_params(kernels, keep)
    setattr(params, field, value)
    lib = kernel_abi.load_library()
    for call in (lib.partool_selective_scan_fwd_cpu, lib.partool_selective_scan_fwd_cuda):
        got = (
            call(ctypes.byref(params), 1)
            if call is lib.partool_selective_scan_fwd_cpu
            else call(ctypes.byref(params), None)
        )
        assert got == status
        assert lib.partool_last_error_message().decode()
    with pytest.raises(kernel_abi.KernelError, match=lib.partool_status_string(status).decode()):
        kernel_abi.check(status)


def test_null_params_and_conv_width(kernels):
    lib = kernel_abi.load_library()
    assert lib.partool_selective_scan_fwd_cpu(None, 1) == 1
    assert lib.partool_selective_scan_bidir_fwd_cpu(None, 1) == 1
    assert lib.partool_causal_conv1d_fwd_cpu(None, 1) == 1
    x = torch.randn(1, 2, 5)
    with pytest.raises(kernel_abi.KernelError, match="width=5"):
        kernels.causal_conv1d(x, torch.randn(2, 5))


def test_cuda_entry_without_device_memory(kernels):
    """Valid arguments in host memory: NO_CUDA without a GPU (or CPU-only build), else a refusal."""
    keep: list = []
    params = _valid_params(kernels, keep)
    lib = kernel_abi.load_library()
    status = lib.partool_selective_scan_fwd_cuda(ctypes.byref(params), None)
    expected = 1 if (torch.cuda.is_available() and lib.partool_kernels_has_cuda()) else 5
    assert status == expected, lib.partool_last_error_message().decode()
    assert lib.partool_selective_scan_workspace_size(ctypes.byref(params)) == 0


def test_abi_version_and_status_strings(kernels):
    lib = kernel_abi.load_library()
    assert lib.partool_kernels_abi_version() == kernel_abi.ABI_VERSION
    assert lib.partool_status_string(0) == b"ok"
    assert lib.partool_status_string(2) == b"unsupported dstate"


_C_LAYOUT = r"""
#include <stddef.h>
#include <stdio.h>
#include "partool_kernels.h"
#define F(T, f) printf(#T " " #f " %zu\n", offsetof(T, f));
int main(void) {
  F(partool_scan_params_t, batch) F(partool_scan_params_t, dim) F(partool_scan_params_t, dstate)
  F(partool_scan_params_t, length) F(partool_scan_params_t, groups) F(partool_scan_params_t, io_dtype)
  F(partool_scan_params_t, u) F(partool_scan_params_t, delta) F(partool_scan_params_t, A)
  F(partool_scan_params_t, B) F(partool_scan_params_t, C) F(partool_scan_params_t, D)
  F(partool_scan_params_t, z) F(partool_scan_params_t, delta_bias) F(partool_scan_params_t, out)
  F(partool_scan_params_t, last_state) F(partool_scan_params_t, delta_softplus) F(partool_scan_params_t, reverse)
  F(partool_scan_params_t, batch_stride) F(partool_scan_params_t, dim_stride)
  F(partool_scan_params_t, bc_batch_stride) F(partool_scan_params_t, bc_state_stride)
  F(partool_bidir_scan_params_t, fwd) F(partool_bidir_scan_params_t, bwd) F(partool_bidir_scan_params_t, out)
  F(partool_bidir_scan_params_t, out_scale)
  F(partool_conv1d_params_t, batch) F(partool_conv1d_params_t, dim) F(partool_conv1d_params_t, length)
  F(partool_conv1d_params_t, width) F(partool_conv1d_params_t, io_dtype) F(partool_conv1d_params_t, x)
  F(partool_conv1d_params_t, weight) F(partool_conv1d_params_t, bias) F(partool_conv1d_params_t, out)
  F(partool_conv1d_params_t, silu) F(partool_conv1d_params_t, reverse)
  F(partool_conv1d_params_t, batch_stride) F(partool_conv1d_params_t, dim_stride)
  F(partool_conv1d_pair_params_t, first) F(partool_conv1d_pair_params_t, second)
  F(partool_add_rms_norm_params_t, batch) F(partool_add_rms_norm_params_t, dim)
  F(partool_add_rms_norm_params_t, length) F(partool_add_rms_norm_params_t, io_dtype)
  F(partool_add_rms_norm_params_t, eps) F(partool_add_rms_norm_params_t, x)
  F(partool_add_rms_norm_params_t, residual) F(partool_add_rms_norm_params_t, weight)
  F(partool_add_rms_norm_params_t, residual_out) F(partool_add_rms_norm_params_t, out)
  printf("sizeof partool_scan_params_t %zu\n", sizeof(partool_scan_params_t));
  printf("sizeof partool_bidir_scan_params_t %zu\n", sizeof(partool_bidir_scan_params_t));
  printf("sizeof partool_conv1d_params_t %zu\n", sizeof(partool_conv1d_params_t));
  printf("sizeof partool_add_rms_norm_params_t %zu\n", sizeof(partool_add_rms_norm_params_t));
  printf("sizeof partool_conv1d_pair_params_t %zu\n", sizeof(partool_conv1d_pair_params_t));
  return 0;
}
"""


def test_struct_layout_matches_c_compiler(kernels, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to compare the struct layout with")
    from partool.plugins import source_dir

    src = tmp_path / "layout.c"
    src.write_text(_C_LAYOUT)
    exe = tmp_path / "layout"
    subprocess.run(
        [cc, "-I", str(source_dir() / "kernels" / "include"), str(src), "-o", str(exe)], check=True
    )
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()
    structs = {
        "partool_scan_params_t": kernel_abi.ScanParams,
        "partool_bidir_scan_params_t": kernel_abi.BidirScanParams,
        "partool_conv1d_params_t": kernel_abi.Conv1dParams,
        "partool_add_rms_norm_params_t": kernel_abi.AddRmsNormParams,
        "partool_conv1d_pair_params_t": kernel_abi.Conv1dPairParams,
    }
    seen = 0
    for line in lines:
        first, second, value = line.split()
        if first == "sizeof":
            assert ctypes.sizeof(structs[second]) == int(value), second
        else:
            assert getattr(structs[first], second).offset == int(value), f"{first}.{second}"
        seen += 1
    assert seen == 56
    assert {name for name, _ in kernel_abi.ScanParams._fields_} == {
        line.split()[1] for line in lines if line.startswith("partool_scan_params_t")
    }


# ---- CUDA (skipped without a GPU) ---------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    ("n", "groups", "extras", "reverse", "b", "length", "dtype"),
    [
        (16, 1, True, False, 2, 197, torch.float32),
        (16, 1, True, True, 2, 197, torch.float32),
        (16, 4, False, False, 3, 7, torch.float32),
        (1, 1, True, True, 1, 1, torch.float32),
        (16, 1, True, False, 64, 197, torch.float16),
        (16, 1, True, True, 8, 300, torch.float16),
        (16, 2, True, False, 1, 197, torch.bfloat16),
    ],
)
def test_cuda_scan_matches_reference(kernels, n, groups, extras, reverse, b, length, dtype):
    if not kernel_abi.cuda_available():
        pytest.skip("library built without CUDA")
    u, delta, A, B, C, D, z, bias = make_inputs(b, 64, n, length, groups, dtype, extras)
    dev = [x.cuda() if x is not None else None for x in (u, delta, A, B, C, D, z, bias)]
    out, last = kernels.scan(*dev, delta_softplus=extras, reverse=reverse)
    ref, ref_last = float_scan_reference((u, delta, A, B, C, D, z, bias), extras, reverse)
    assert rel_err(out.cpu(), ref) <= TOL[dtype]
    assert rel_err(last.cpu(), ref_last) <= 1e-5


@pytest.mark.gpu
@cuda
def test_cuda_bidirectional_conv_and_norm(kernels):
    if not kernel_abi.cuda_available():
        pytest.skip("library built without CUDA")
    keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    fwd = dict(zip(keys, make_inputs(4, 64, 16, 197, 1, torch.float32, True, 1), strict=True))
    bwd = dict(zip(keys, make_inputs(4, 64, 16, 197, 1, torch.float32, True, 2), strict=True))
    cpu = kernels.scan_bidirectional(fwd, bwd)
    gpu = kernels.scan_bidirectional(
        *({k: v.cuda() if v is not None else None for k, v in p.items()} for p in (fwd, bwd))
    )
    assert rel_err(gpu.cpu(), cpu.double().numpy()) <= 1e-5
    x, w = torch.randn(2, 64, 197), torch.randn(64, 4)
    for reverse in (False, True):
        want = kernels.causal_conv1d(x, w, None, reverse=reverse)
        got = kernels.causal_conv1d(x.cuda(), w.cuda(), None, reverse=reverse)
        assert rel_err(got.cpu(), want.double().numpy()) <= 1e-5
    w2, b2 = torch.randn(2, 64, 4), torch.randn(2, 64)
    flat = flat_view(x)
    got = kernels.causal_conv1d_bidirectional(flat.cuda(), w2.cuda(), b2.cuda())
    want = kernels.causal_conv1d_bidirectional(flat, w2, b2)
    assert got.stride() == want.stride() and rel_err(got.cpu(), want.double().numpy()) <= 1e-5
    x, residual, weight = torch.randn(3, 384, 197), torch.randn(3, 384, 197), torch.rand(384)
    want_r, want_out = add_rms_norm_reference(x, residual, weight, 1e-5)
    out, r = kernels.add_rms_norm(x.cuda(), residual.cuda(), weight.cuda(), 1e-5)
    assert rel_err(out.cpu(), want_out) <= 1e-5 and rel_err(r.cpu(), want_r) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_narrower_row_kernels_match(kernels, tmp_path, isa):
    """PARTOOL_CPU_ISA caps the row kernels (base: SSE2/NEON; avx2: no AVX-512), so every unit that this
    CPU can run meets the references (scan and conv1d), not only the widest one picked by default."""
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, torch\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from scan_references import make_inputs\n"
        "import partool.ops.kernels as k\n"
        "outs = []\n"
        "for n in (1, 5, 16):\n"
        "    args = make_inputs(2, 8, n, 41, 2, torch.float32, True)\n"
        "    outs.append(k.scan(*args, delta_softplus=True, reverse=n == 5))\n"
        "x, w, bias = torch.randn(2, 8, 37), torch.randn(8, 4), torch.randn(8)\n"
        "for reverse in (False, True):\n"
        "    outs.append(k.causal_conv1d(x, w[:, : 3 + reverse], bias, silu=not reverse, reverse=reverse))\n"
        "torch.save([x, w, bias, outs], sys.argv[1])\n"
    )
    result = tmp_path / "out.pt"
    env = {**os.environ, "PARTOOL_CPU_ISA": isa}
    subprocess.run(
        [sys.executable, str(script), str(result), str(Path(__file__).parent)], check=True, env=env
    )
    x, w, bias, outs = torch.load(result, weights_only=True)
    for reverse, out in zip((False, True), outs[3:], strict=True):
        assert rel_err(out, conv_reference(x, w[:, : 3 + reverse], bias, not reverse, reverse)) <= 1e-5
    for n, (out, last) in zip((1, 5, 16), outs[:3], strict=True):
        u, delta, A, B, C, D, z, bias = make_inputs(2, 8, n, 41, 2, torch.float32, True)
        ref, ref_last = numpy_scan(u, delta, A, B, C, D, z, bias, True, n == 5)
        assert rel_err(out, ref) <= 1e-5
        assert rel_err(last, ref_last) <= 1e-5


def test_kernel_check_program_passes_on_every_cpu_path(kernels):
    """partool_kernels_check (C++, double-precision references of its own) on each CPU code path, through
    `partool plugins check`; it fails when a case fails."""
    import platform

    from typer.testing import CliRunner

    from partool.cli.app import app
    from partool.plugins import run_kernels_check

    runs = run_kernels_check(cpu_only=True)
    expected = (
        ["CPU (widest)", "CPU avx2", "CPU base"] if platform.machine() == "x86_64" else ["CPU (widest)"]
    )
    assert [run.label for run in runs] == expected
    for run in runs:
        assert run.returncode == 0 and ", 0 failed" in run.output, run.output
        assert "add_rms_norm" not in run.output  # only failing cases are listed without --verbose
    verbose = run_kernels_check(cpu_only=True, verbose=True)[0].output
    assert verbose.count("\nok   cpu/2t scan ") >= 20 and "bidir" in verbose and "conv1d pair" in verbose
    result = CliRunner().invoke(app, ["plugins", "check", "--cpu-only"])
    assert result.exit_code == 0 and "CPU base" in result.output, result.output


def test_plugins_check_exits_1_when_a_case_fails_and_2_when_not_built(tmp_path, monkeypatch, capsys):
    """The CLI's verdict follows the program's: any failing run is exit status 1 with its FAIL lines shown;
    no program is a user error (2) that says to build it."""
    from typer.testing import CliRunner

    from partool import plugins
    from partool.cli.app import app, main

    fake = tmp_path / "partool_kernels_check"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$PARTOOL_CPU_ISA" = base ]; then echo "FAIL cpu/2t scan b2 d8 f32"; echo "1 failed"; exit 1; fi\n'
        'echo "partool_kernels_check: 3 cases, 0 failed"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(plugins, "find_kernels_check", lambda: fake)
    monkeypatch.setattr(plugins.platform, "machine", lambda: "x86_64")
    result = CliRunner().invoke(app, ["plugins", "check"])
    assert result.exit_code == 1 and "FAIL cpu/2t scan" in result.output and "== CPU base" in result.output
    monkeypatch.setattr(plugins, "find_kernels_check", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["plugins", "check"])
    assert exit_info.value.code == 2 and "partool plugins build" in capsys.readouterr().err
