"""The CUDA kernels (plugins/kernels/src/*.cu) on the CPU emulator (plugins/kernels/emulation): every
kernel configuration against the float64 references, on every machine, GPU or not.

The emulator runs each CUDA thread as a fiber with real __syncthreads() and warp shuffles, in a seeded
random order between barriers, with shared memory poisoned with NaN; inputs here sit between NaN guard
bands and outputs are checked for writes outside their tensors. Its own tests come first: kernels with
hand-computed answers, and kernels with the bugs it has to catch."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
import torch
from emulation_build import CHECK_PROGRAM, build_emulation
from scan_references import (
    SCAN_VARIANTS,
    TOL,
    add_rms_norm_reference,
    conv_bwd_reference,
    conv_reference,
    flat_view,
    make_inputs,
    numpy_scan,
    numpy_scan_bwd,
    rel_err,
)

from partool.ops import kernel_abi

pytestmark = pytest.mark.slow  # builds the emulation library with CMake

GUARD = 64  # NaN elements before and after every tensor handed to a kernel
STATUS_CUDA, STATUS_UNSUPPORTED_SHAPE = 4, 6
KEYS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
VARIANT = {name: i for i, name in enumerate(SCAN_VARIANTS)}  # partool_scan_cuda_variant_t


class Emulated:
    """libpartool_kernels_cudaemu through the kernel binding's ctypes structures, on host tensors."""

    def __init__(self, path: Path) -> None:
        self.lib = kernel_abi._load(str(path))
        self.lib.partool_cudaemu_set_device.argtypes = [ctypes.c_int, ctypes.c_int]
        self.lib.partool_cudaemu_set_seed.argtypes = [ctypes.c_ulonglong]
        self.lib.partool_cudaemu_last_launch.argtypes = [ctypes.POINTER(ctypes.c_uint)] * 2 + [
            ctypes.POINTER(ctypes.c_size_t)
        ]
        self.lib.partool_cudaemu_last_launch.restype = ctypes.c_ulonglong
        self.lib.partool_cudaemu_selftest.argtypes = [ctypes.c_char_p, ctypes.c_void_p] + [ctypes.c_int] * 4
        self._guarded: list[tuple[torch.Tensor, torch.Tensor]] = []

    def device(self, sms: int = 132, smem_optin: int = 227 * 1024, seed: int = 0) -> None:
        assert self.lib.partool_cudaemu_set_device(sms, smem_optin) == 0
        self.lib.partool_cudaemu_set_seed(seed)

    def last_launch(self) -> tuple[int, int, int, int]:
        """(blocks, threads, dynamic shared bytes, number of launches so far)."""
        blocks, threads, smem = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_size_t()
        count = self.lib.partool_cudaemu_last_launch(
            ctypes.byref(blocks), ctypes.byref(threads), ctypes.byref(smem)
        )
        return blocks.value, threads.value, smem.value, count

    def error(self) -> str:
        return self.lib.partool_last_error_message().decode()

    def _watch(self, view: torch.Tensor) -> torch.Tensor:
        """Remember every element of view's buffer outside the view: assert_guards_intact checks them."""
        buf = view._base if view._base is not None else view
        inside = torch.zeros(buf.numel(), dtype=torch.bool)
        inside.as_strided(view.shape, view.stride(), view.storage_offset()).fill_(True)
        flat = buf.reshape(-1)
        self._guarded.append((flat, flat.clone(), inside))
        return view

    def guard(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """x copied into the middle of a NaN-filled buffer (a read past either end poisons the result)."""
        if x is None:
            return None
        buf = torch.full((x.numel() + 2 * GUARD,), float("nan"), dtype=x.dtype)
        view = buf[GUARD : GUARD + x.numel()].view(x.shape)
        view.copy_(x)
        return self._watch(view)

    def guard_flat(self, x: torch.Tensor, before: int = 1, after: int = 1) -> torch.Tensor:
        """x as a `flat_view` (rows of one (rows, b·l) matrix between NaN rows), watched like `guard`."""
        return self._watch(flat_view(x, before, after))

    def assert_guards_intact(self) -> None:
        for flat, before, inside in self._guarded:
            bits = torch.int16 if flat.element_size() == 2 else torch.int32
            assert torch.equal(flat[~inside].view(bits), before[~inside].view(bits)), "write outside a tensor"
        self._guarded.clear()

    def _prepared(self, args, flat: bool = False):
        """The kernel arguments, each in its own guarded buffer; `flat`: u, delta, z, B and C as flat views
        (the fused Vim path's layout), read by the kernels in place."""
        if not flat:
            return tuple(self.guard(x) for x in kernel_abi.prepare_scan(*args))
        u, delta, A, B, C, D, z, bias = args
        views = (self.guard_flat(u, 0, 2), self.guard_flat(delta, 2, 0), self.guard(A), self.guard_flat(B, 3, 2),
                 self.guard_flat(C, 1, 4), self.guard(D), None if z is None else self.guard_flat(z, 1, 1), self.guard(bias))  # fmt: skip
        prepared = kernel_abi.prepare_scan(*views)
        assert all(p is v for p, v in zip(prepared, views, strict=True)), "not read in place"
        return prepared

    def _out_like(self, u: torch.Tensor) -> torch.Tensor:
        """A guarded output in u's layout."""
        if u.is_contiguous():
            return self.guard(torch.empty_like(u))
        return self.guard_flat(torch.empty_like(u), 1, 1)

    def scan(
        self, args, softplus: bool, reverse: bool, flat: bool = False, variant: str = "auto"
    ) -> tuple[int, torch.Tensor, torch.Tensor]:
        prepared = self._prepared(args, flat)
        u = prepared[0]
        out = self._out_like(u)
        last = self.guard(torch.empty(u.shape[0], u.shape[1], args[2].shape[1]))
        params = kernel_abi.scan_params(*prepared, out, last, softplus, reverse)
        status = self.lib.partool_selective_scan_fwd_cuda_variant(
            ctypes.byref(params), VARIANT[variant], None
        )
        return status, out, last

    def bidir(
        self, fwd, bwd, out_scale: float, flat: bool = False, variant: str = "auto"
    ) -> tuple[int, torch.Tensor]:
        fa, ba = self._prepared(fwd, flat), self._prepared(bwd, flat)
        out = self._out_like(fa[0])
        params = kernel_abi.bidir_params(fa, ba, out, True, out_scale)
        status = self.lib.partool_selective_scan_bidir_fwd_cuda_variant(
            ctypes.byref(params), VARIANT[variant], None
        )
        return status, out

    def nan_grad(self, *shape: int) -> torch.Tensor:
        """A guarded float32 gradient, NaN inside too: the kernel must write (or zero) every element."""
        return self.guard(torch.full(shape, float("nan")))

    def scan_bwd(
        self, args, dout: torch.Tensor, softplus: bool, reverse: bool, flat: bool = False
    ) -> tuple[int, dict[str, torch.Tensor]]:
        """partool_selective_scan_bwd_cuda; dout in u's layout. The gradients by their field names (dD, dz
        and ddelta_bias only for the inputs given)."""
        prepared = self._prepared(args, flat)
        u, _, _, B, _, D, z, bias = prepared
        b, d, length = u.shape
        _, g, n, _ = B.shape
        dout = self.guard_flat(dout, 1, 1) if flat else self.guard(dout)
        assert dout.stride() == u.stride()
        shapes = {"du": (b, d, length), "ddelta": (b, d, length), "dA": (d, n), "dB": (b, g, n, length),
                  "dC": (b, g, n, length), "dD": D is not None and (d,), "dz": z is not None and (b, d, length),
                  "ddelta_bias": bias is not None and (d,)}  # fmt: skip
        grads = {name: self.nan_grad(*shape) for name, shape in shapes.items() if shape}
        params = kernel_abi.ScanBwdParams(
            fwd=kernel_abi.scan_params(*prepared, None, None, softplus, reverse),
            dout=dout.data_ptr(),
            **{name: grad.data_ptr() for name, grad in grads.items()},
        )
        return self.lib.partool_selective_scan_bwd_cuda(ctypes.byref(params), None), grads

    def conv_bwd(
        self, x, w, bias, dout, silu: bool, reverse: bool, flat: bool = False
    ) -> tuple[int, dict[str, torch.Tensor]]:
        """partool_causal_conv1d_bwd_cuda; dout in x's layout. {"dx", "dweight"(, "dbias")}."""
        x, w, bias = (self.guard_flat(x, 2, 1) if flat else self.guard(x)), self.guard(w), self.guard(bias)
        dout = self.guard_flat(dout, 1, 1) if flat else self.guard(dout)
        grads = {"dx": self.nan_grad(*x.shape), "dweight": self.nan_grad(*w.shape)}
        if bias is not None:
            grads["dbias"] = self.nan_grad(*bias.shape)
        params = kernel_abi.Conv1dBwdParams(
            fwd=kernel_abi.conv_params(x, w, bias, None, silu, reverse),
            dout=dout.data_ptr(),
            **{name: grad.data_ptr() for name, grad in grads.items()},
        )
        return self.lib.partool_causal_conv1d_bwd_cuda(ctypes.byref(params), None), grads

    def conv(self, x, w, bias, silu: bool, reverse: bool, flat: bool = False) -> tuple[int, torch.Tensor]:
        x, w, bias = (self.guard_flat(x, 2, 1) if flat else self.guard(x)), self.guard(w), self.guard(bias)
        out = self._out_like(x)
        params = kernel_abi.conv_params(x, w, bias, out, silu, reverse)
        return self.lib.partool_causal_conv1d_fwd_cuda(ctypes.byref(params), None), out

    def conv_pair(self, x, w, bias) -> tuple[int, torch.Tensor]:
        """Both directions' convs of a flat-layout x as one launch, each into a guarded flat output."""
        x, w, bias = self.guard_flat(x, 1, 2), self.guard(w), self.guard(bias)
        halves = [self.guard_flat(torch.empty(x.shape, dtype=x.dtype), 0, 1) for _ in range(2)]
        params = kernel_abi.Conv1dPairParams(
            first=kernel_abi.conv_params(x, w[0], bias[0], halves[0], True, False),
            second=kernel_abi.conv_params(x, w[1], bias[1], halves[1], True, True),
        )
        return self.lib.partool_causal_conv1d_pair_fwd_cuda(ctypes.byref(params), None), halves

    def add_rms_norm(
        self, x, residual, weight, eps: float, residual_out: str
    ) -> tuple[int, torch.Tensor, torch.Tensor | None]:
        """residual_out: "new" (a tensor of its own), "in place" (the residual) or "none"."""
        x, residual, weight = self.guard(x), self.guard(residual), self.guard(weight)
        out = self.guard(torch.empty_like(x))
        r = {"new": lambda: self.guard(torch.empty(x.shape)), "in place": lambda: residual, "none": lambda: None}[residual_out]()  # fmt: skip
        params = kernel_abi.add_rms_norm_params(x, residual, weight, eps, r, out)
        return self.lib.partool_add_rms_norm_fwd_cuda(ctypes.byref(params), None), out, r

    def selftest(self, kernel: str, out: torch.Tensor, blocks: int, threads: int, smem: int, arg: int) -> int:
        return self.lib.partool_cudaemu_selftest(kernel.encode(), out.data_ptr(), blocks, threads, smem, arg)


@pytest.fixture(scope="module")
def emu() -> Emulated:
    """The emulation library, built (incrementally) into build/cudaemu with CMake."""
    lib = Emulated(build_emulation())
    yield lib
    lib.device()


@pytest.fixture
def device(emu):
    """A fresh emulated H100 for each test (tests narrow it to steer the launch heuristics)."""
    emu.device()
    yield emu
    emu.assert_guards_intact()


# ---- the emulator itself ------------------------------------------------------------------------


def test_emulator_runs_kernels_with_known_answers(device):
    out = torch.zeros(256)
    assert device.selftest("block_sum", out, 2, 128, 128 * 4, 1) == 0
    assert out[:2].tolist() == [128 * 129 / 2] * 2
    lanes = torch.arange(64) % 32
    for width in (2, 8, 32):
        assert device.selftest("segment_sums", out, 1, 64, 0, width) == 0
        first = lanes // width * width  # lane index of the segment's first lane
        assert out[:64].tolist() == (width * first + width * (width - 1) / 2).tolist()
        assert device.selftest("segment_prefix", out, 1, 64, 0, width) == 0
        r = lanes % width
        assert out[:64].tolist() == ((r + 1) * (r + 2) / 2).tolist()
        assert device.selftest("segment_broadcast", out, 1, 64, 0, width) == 0
        assert out[:64].tolist() == (torch.arange(64) // width * width + width - 1).tolist()


def test_emulator_catches_kernel_bugs(device):
    out = torch.zeros(128)
    wrong = 0
    for seed in range(8):  # without the barrier thread 0 sums before the others wrote, unless it runs last
        device.device(seed=seed)
        assert device.selftest("block_sum", out, 1, 128, 128 * 4, 0) == 0
        wrong += out[0].item() != 128 * 129 / 2
    assert wrong >= 6
    for kernel, smem, arg, message in [
        ("divergent_barrier", 0, 0, "__syncthreads() after another thread of the block returned"),
        ("shared_overrun", 64, 16, "wrote past the end of its 64 bytes of dynamic shared memory"),
        ("shuffle_after_return", 0, 0, "shuffle"),  # lane 5 returned, its warp waits at a shuffle
    ]:
        assert device.selftest(kernel, out, 1, 64, smem, arg) == STATUS_CUDA
        assert message in device.error()
    assert device.selftest("block_sum", out, 1, 2048, 0, 1) == STATUS_CUDA  # over 1024 threads a block
    assert "invalid launch configuration" in device.error()


# ---- the scan kernels -----------------------------------------------------------------------------

# (batch, dim, d_state, length, groups, extras, reverse, dtype): partial channel tiles (dim per group not
# a multiple of the tile), several segments and a partial last one, length 1, d_state below 16.
SCAN_CASES = [
    (2, 40, 16, 197, 1, True, False, torch.float32),
    (2, 40, 16, 197, 1, True, True, torch.float16),
    (1, 24, 5, 70, 2, True, True, torch.bfloat16),
    (3, 12, 1, 1, 3, False, False, torch.float32),
    (1, 36, 16, 33, 4, False, True, torch.float16),
]


def as_float(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.float()


def check_scan(device, case, seed: int, flat: bool = False, variant: str = "auto") -> None:
    b, d, n, length, groups, extras, reverse, dtype = case
    args = make_inputs(b, d, n, length, groups, dtype, extras, seed)
    status, out, last = device.scan(args, softplus=extras, reverse=reverse, flat=flat, variant=variant)
    assert status == 0, device.error()
    u, delta, A, B, C, D, z, bias = args
    ref, ref_last = numpy_scan(*map(as_float, (u, delta, A, B, C, D, z, bias)), extras, reverse)
    assert rel_err(out, ref) <= TOL[dtype]
    assert rel_err(last, ref_last) <= 1e-5


@pytest.mark.parametrize("tile", [4, 8, 32])
@pytest.mark.parametrize("case", range(len(SCAN_CASES)))
def test_chunked_kernel_matches_numpy(device, tile, case):
    device.device(seed=case)
    check_scan(device, SCAN_CASES[case], seed=case, variant=f"chunked/tile{tile}")
    b, d, _, _, groups, *_ = SCAN_CASES[case]
    assert device.last_launch()[:2] == (b * groups * -(-d // groups // tile), 128)


@pytest.mark.parametrize("states", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("case", [0, 2, 3, 4])
def test_row_kernel_matches_numpy(device, states, case):
    # 12 KiB of shared memory a block: the row kernel walks long sequences in several tiles
    device.device(smem_optin=12 * 1024, seed=case)
    check_scan(device, SCAN_CASES[case], seed=case, variant=f"rows/states{states}")
    b, d, _, _, groups, *_ = SCAN_CASES[case]
    rows_per_block = 128 // (16 // states)
    assert device.last_launch()[:2] == (b * groups * -(-d // groups // rows_per_block), 128)


@pytest.mark.parametrize("kernel", ["chunked", "rows"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bidirectional_is_the_sum_of_two_scans(device, kernel, dtype):
    fwd = make_inputs(2, 40, 16, 150, 2, dtype, True, seed=1)
    bwd = make_inputs(2, 40, 16, 150, 2, dtype, True, seed=2)
    before = device.last_launch()[3]
    status, out = device.bidir(fwd, bwd, out_scale=0.5, variant=kernel)
    assert status == 0, device.error()
    assert device.last_launch()[3] == before + 1  # both directions in one launch
    ref = sum(
        numpy_scan(*map(as_float, args), True, reverse)[0] for args, reverse in ((fwd, False), (bwd, True))
    )
    assert rel_err(out, 0.5 * ref) <= TOL[dtype]


@pytest.mark.parametrize("kernel", ["chunked", "rows"])
@pytest.mark.parametrize("case", [0, 2, 4])
def test_kernels_read_flat_layouts_in_place(device, kernel, case):
    """u, delta, z and out as rows of one (d, b·l) matrix, B and C as row slices of a wider one (the fused
    Vim path's layouts, strides in the ABI): read and written in place, NaN rows around them untouched."""
    if kernel == "rows":
        device.device(smem_optin=12 * 1024, seed=case)  # several tiles along the sequence
    check_scan(device, SCAN_CASES[case], seed=case, flat=True, variant=kernel)


@pytest.mark.parametrize("kernel", ["chunked", "rows"])
def test_bidirectional_reads_flat_layouts(device, kernel):
    fwd = make_inputs(3, 40, 16, 90, 1, torch.float16, True, seed=1)
    bwd = make_inputs(3, 40, 16, 90, 1, torch.float16, True, seed=2)
    status, out = device.bidir(fwd, bwd, out_scale=0.5, flat=True, variant=kernel)
    assert status == 0, device.error()
    assert out.stride() == (90, 3 * 90, 1)
    ref = sum(
        numpy_scan(*map(as_float, args), True, reverse)[0] for args, reverse in ((fwd, False), (bwd, True))
    )
    assert rel_err(out, 0.5 * ref) <= TOL[torch.float16]


def test_launch_heuristics_follow_the_device(device):
    """The chunked kernel takes the widest channel tile that still fills two blocks per multiprocessor."""
    case = (1, 64, 16, 40, 1, True, False, torch.float32)
    for sms, tile in ((1, 32), (4, 8), (100, 4)):
        device.device(sms=sms)
        check_scan(device, case, seed=0)
        assert device.last_launch()[0] == 64 // tile


def test_launch_failures_are_reported(device):
    # the bidirectional chunked kernel keeps a whole direction in shared memory: too long for 48 KiB
    device.device(smem_optin=48 * 1024)
    fwd = make_inputs(1, 8, 16, 2000, 1, torch.float32, True, seed=1)
    status, _ = device.bidir(fwd, fwd, out_scale=0.5)
    assert status == STATUS_UNSUPPORTED_SHAPE
    assert "run two single scans instead" in device.error()
    # a device whose blocks cannot hold even the smallest row tile: the launch fails, the call says why
    # rows/states16: 128 rows a block, 8 KiB at the shortest tile
    device.device(smem_optin=1024)
    status, *_ = device.scan(
        make_inputs(1, 8, 16, 64, 1, torch.float32, False),
        softplus=False,
        reverse=False,
        variant="rows/states16",
    )
    assert status == STATUS_CUDA
    assert (
        "kernel launch failed" in device.error() and "exceeds the device's per-block limit" in device.error()
    )


# ---- conv1d ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("width", "reverse", "silu"), [(4, False, True), (4, True, True), (3, True, False), (1, False, True)]
)
def test_conv1d_matches_torch(device, dtype, width, reverse, silu):
    gen = torch.Generator().manual_seed(width)
    x = torch.randn(2, 24, 45, generator=gen).to(dtype)
    w, bias = torch.randn(24, width, generator=gen), torch.randn(24, generator=gen)
    for flat in (False, True):
        status, out = device.conv(x, w, bias, silu, reverse, flat=flat)
        assert status == 0, device.error()
        assert out.is_contiguous() != flat
        assert rel_err(out, conv_reference(x.float(), w, bias, silu, reverse)) <= TOL[dtype]


# ---- add + RMSNorm --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "d", "length", "dtype", "with_residual", "residual_out"),
    [
        (2, 384, 70, torch.float32, True, "in place"),  # Vim-S width: 3 channel batches of 8 x 16 warps
        (1, 5, 33, torch.float16, False, "new"),  # first block; fewer channels than warps, 2 position tiles
        (3, 130, 32, torch.bfloat16, True, "none"),  # the last norm: recomputes r in the second pass
        (1, 129, 1, torch.float32, True, "new"),
    ],
)
def test_add_rms_norm_matches_numpy(device, b, d, length, dtype, with_residual, residual_out):
    gen = torch.Generator().manual_seed(d)
    x = (torch.randn(b, d, length, generator=gen) * 2).to(dtype)
    residual = torch.randn(b, d, length, generator=gen) if with_residual else None
    weight = torch.rand(d, generator=gen) + 0.5
    want_r, want_out = add_rms_norm_reference(x, residual, weight, 1e-5)
    status, out, r = device.add_rms_norm(x, residual, weight, 1e-5, residual_out)
    assert status == 0, device.error()
    assert rel_err(out, want_out) <= {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    if residual_out != "none":
        assert rel_err(r, want_r) <= 1e-7
    assert device.last_launch()[:2] == (b * -(-length // 32), 512)


def test_conv1d_pair_runs_both_directions_in_one_launch(device):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 20, 41, generator=gen).to(torch.float16)
    w, bias = torch.randn(2, 20, 4, generator=gen), torch.randn(2, 20, generator=gen)
    before = device.last_launch()[3]
    status, out = device.conv_pair(x, w, bias)
    assert status == 0, device.error()
    assert device.last_launch()[3] == before + 1
    for i, reverse in ((0, False), (1, True)):
        assert rel_err(out[i], conv_reference(x.float(), w[i], bias[i], True, reverse)) <= TOL[torch.float16]


# ---- backward kernels -------------------------------------------------------------------------------

# (batch, dim, d_state, length, groups, dtype, with (D, z, delta_bias), softplus, reverse, flat): the scan
# backward walks 32-step chunks (3-4 chunks park boundary states, a partial last chunk, one chunk, one step)
# in 8-channel blocks (dim per group 6 and 4: partial blocks).
SCAN_BWD_CASES = [
    (2, 16, 16, 70, 1, torch.float32, (True, True, True), True, False, False),
    (2, 12, 5, 100, 2, torch.float32, (False, False, False), False, True, False),
    (1, 8, 1, 33, 2, torch.float16, (True, False, False), True, True, False),
    (2, 16, 16, 45, 2, torch.bfloat16, (False, True, True), True, False, True),
    (2, 8, 5, 32, 1, torch.float16, (True, True, False), False, False, True),
    (1, 8, 16, 1, 1, torch.float32, (True, True, True), True, True, False),
]
# float32 gradients of inputs rounded to the io dtype: only float32 accumulation differs from the reference
SCAN_BWD_TOL = 2e-5


def scan_bwd_inputs(b, d, n, length, groups, dtype, extras, softplus, seed):
    """Scan inputs with D, z and delta_bias as asked; without softplus delta stays positive (a_t < 1)."""
    u, delta, A, B, C, D, z, bias = make_inputs(b, d, n, length, groups, dtype, softplus, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    if not softplus:  # make_inputs has no D, z or bias then
        D, z = torch.randn(d, generator=gen), torch.randn(b, d, length, generator=gen).to(dtype)
        bias = torch.rand(d, generator=gen) * 0.3
    with_D, with_z, with_bias = extras
    return u, delta, A, B, C, D if with_D else None, z if with_z else None, bias if with_bias else None


@pytest.mark.parametrize("case", range(len(SCAN_BWD_CASES)))
def test_scan_backward_matches_numpy(device, case):
    b, d, n, length, groups, dtype, extras, softplus, reverse, flat = SCAN_BWD_CASES[case]
    device.device(seed=case)
    args = scan_bwd_inputs(b, d, n, length, groups, dtype, extras, softplus, seed=case)
    dout = torch.randn(b, d, length, generator=torch.Generator().manual_seed(case)).to(dtype)
    status, grads = device.scan_bwd(args, dout, softplus, reverse, flat=flat)
    assert status == 0, device.error()
    ref = numpy_scan_bwd(*map(as_float, args), dout.float(), softplus, reverse)
    assert grads.keys() == ref.keys()
    for name, grad in grads.items():
        assert rel_err(grad, ref[name]) <= SCAN_BWD_TOL, name
    assert device.last_launch()[:2] == (b * groups * -(-d // groups // 8), 128)


def test_scan_backward_references_match_autograd():
    """numpy_scan_bwd (the formulas) against torch autograd through a float64 scan written step by step."""

    def torch_scan(u, delta, A, B, C, D, z, bias, softplus, reverse):
        dt = delta + bias[:, None]
        dt = torch.nn.functional.softplus(dt) if softplus else dt
        Bx, Cx = (x.repeat_interleave(u.shape[1] // B.shape[1], dim=1) for x in (B, C))
        h, ys = torch.zeros(*u.shape[:2], A.shape[1], dtype=u.dtype), {}
        for t in reversed(range(u.shape[2])) if reverse else range(u.shape[2]):
            h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[..., None] * Bx[..., t]
            ys[t] = (h * Cx[..., t]).sum(-1)
        y = torch.stack([ys[t] for t in range(u.shape[2])], dim=2) + D[:, None] * u
        return y * torch.nn.functional.silu(z)

    for softplus, reverse in ((True, False), (False, True)):
        args = [
            x.double().requires_grad_()
            for x in scan_bwd_inputs(2, 6, 5, 9, 2, torch.float64, (True,) * 3, softplus, 1)
        ]
        out = torch_scan(*args, softplus, reverse)
        dout = torch.randn_like(out)
        out.backward(dout)
        ref = numpy_scan_bwd(*(x.detach() for x in args), dout, softplus, reverse)
        for name, x in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"), args, strict=True):
            assert rel_err(x.grad, ref[name]) <= 1e-12, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("width", "reverse", "silu", "with_bias"),
    [
        (4, False, True, True),
        (4, True, True, False),
        (3, True, False, True),
        (2, False, False, False),
        (1, False, True, True),
    ],
)
def test_conv1d_backward_matches_autograd(device, dtype, width, reverse, silu, with_bias):
    """dx, dweight, dbias; 3 x 20 rows go channel-major over 8-warp blocks, so blocks hold runs of one channel
    and partial runs; 45 steps: a partial second chunk; both layouts."""
    gen = torch.Generator().manual_seed(width)
    x = torch.randn(3, 20, 45, generator=gen).to(dtype)
    w, bias = torch.randn(20, width, generator=gen), torch.randn(20, generator=gen) if with_bias else None
    dout = torch.randn(3, 20, 45, generator=gen).to(dtype)
    refs = conv_bwd_reference(x.float(), w, bias, dout.float(), silu, reverse)
    want = {name: ref for name, ref in zip(("dx", "dweight", "dbias"), refs, strict=True) if ref is not None}
    for flat in (False, True):
        status, grads = device.conv_bwd(x, w, bias, dout, silu, reverse, flat=flat)
        assert status == 0, device.error()
        assert grads.keys() == want.keys()
        for name, grad in grads.items():
            assert rel_err(grad, want[name]) <= 2e-6, name
    assert device.last_launch()[:2] == (-(-3 * 20 // 8), 256)


def test_backward_entry_points_validate(device):
    """Optional gradients go with the forward's optional inputs, as on the CPU."""
    args = scan_bwd_inputs(1, 8, 4, 10, 1, torch.float32, (True, False, False), True, seed=0)
    prepared = device._prepared(args)
    names = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz")  # dz without z
    grads = {name: device.nan_grad(64) for name in names}
    params = kernel_abi.ScanBwdParams(
        fwd=kernel_abi.scan_params(*prepared, None, None, True, False),
        dout=device.guard(torch.zeros(1, 8, 10)).data_ptr(),
        **{name: grad.data_ptr() for name, grad in grads.items()},
    )
    assert device.lib.partool_selective_scan_bwd_cuda(ctypes.byref(params), None) == 1  # invalid argument
    assert "dz" in device.error()


# One of each kind: the default (its whole sweep), a chunked tile, a state split. CI's "kernel sweep" step runs
# the program on every explicit variant (.ci/run); rows/states4 alone takes 15 s on the emulator.
REPRESENTATIVE_VARIANTS = ("auto", "chunked/tile8", "rows/states16")


@pytest.mark.sweep  # about a minute on 2 cores since the backward cases; the tests above cover each kernel
def test_kernel_check_program_passes_on_the_emulated_cuda_kernels(emu):
    """partool_kernels_check's cases and tolerances hold for the CUDA kernels, with the default scan and a
    representative explicit scan variant of each design, so that `partool plugins check` failing on a real
    GPU points at the device build, not the check."""
    from partool.plugins import run_kernels_check

    runs = run_kernels_check(program=CHECK_PROGRAM, cuda_variants=REPRESENTATIVE_VARIANTS)
    assert runs[0].label == "CPU (widest) + CUDA, 3 scan variants"
    for run in runs:
        assert run.returncode == 0 and ", 0 failed" in run.output, (run.label, run.output)
    for name in REPRESENTATIVE_VARIANTS:
        assert f"cuda-emulated/{name} f32" in runs[0].output, name
    assert "cuda-emulated/rows/states4" not in runs[0].output


def test_kernel_check_program_refuses_unknown_variants(emu):
    """A misspelt --variants name is exit 2 with the name, not a silently smaller sweep; so is a heuristic
    one (rows resolves to an explicit variant at launch: name that one)."""
    import subprocess

    for names in ("auto,rows/states3", "rows", "auto,"):
        done = subprocess.run([str(CHECK_PROGRAM), "--variants", names], capture_output=True, text=True)
        assert done.returncode == 2 and "unknown scan variant" in done.stderr, names


def test_tuner_launches_every_explicit_variant(device, monkeypatch):
    """partool.ops.scan_tuning driving the library's variants, the emulator standing in for a GPU and
    perf_counter for CUDA events: each explicit variant launches, and the winner's result is the reference's."""
    import time

    from partool.ops import scan_tuning

    monkeypatch.delenv(scan_tuning.ENV, raising=False)
    case = (2, 40, 16, 60, 1, True, False, torch.float32)
    args = make_inputs(*case[:5], case[7], True, seed=3)
    tuner = scan_tuning.ScanTuner(list(VARIANT), lambda: False)

    def run(variant: int) -> None:
        status, *_ = device.scan(args, softplus=True, reverse=False, variant=tuner.names[variant])
        assert status == 0, device.error()

    def timer(run, variant: int, runs: int) -> float:
        start = time.perf_counter()
        for _ in range(runs):
            run(variant)
        return (time.perf_counter() - start) / runs

    before = device.last_launch()[3]
    best = tuner.choose(("scan",), run, timer)
    explicit = [name for name in VARIANT if name not in scan_tuning.HEURISTIC]
    assert device.last_launch()[3] - before == len(explicit) * (
        scan_tuning.WARMUP_RUNS + scan_tuning.TIMED_RUNS
    )
    assert tuner.names[best] in explicit
    check_scan(device, case, seed=3, variant=tuner.names[best])


def test_cuda_launch_path_tunes_once_per_shape(device, monkeypatch):
    """The kernel binding's CUDA branch as a model's scans take it (`launch` on a CUDA device), with the
    emulation library standing in for the GPU one: the first call of a shape times every explicit variant,
    later calls of it launch once with the winner, and the winner is recorded under the shape's key."""
    import contextlib
    import time

    from partool.ops import scan_tuning

    monkeypatch.delenv(scan_tuning.ENV, raising=False)
    monkeypatch.setenv("PARTOOL_KERNELS_LIB", str(build_emulation()))
    monkeypatch.setattr(kernel_abi, "_tuner", scan_tuning.ScanTuner(list(VARIANT), lambda: False))
    monkeypatch.setattr(kernel_abi, "_cuda_stream", lambda _device: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda _device: contextlib.nullcontext())

    def perf_timer(run, variant: int, runs: int) -> float:
        start = time.perf_counter()
        for _ in range(runs):
            run(variant)
        return (time.perf_counter() - start) / runs

    monkeypatch.setattr(kernel_abi, "cuda_event_time", perf_timer)
    args = make_inputs(2, 24, 16, 40, 1, torch.float32, True, seed=5)
    prepared = device._prepared(args)
    u = prepared[0]
    ref, _ = numpy_scan(*map(as_float, args), True, False)
    explicit = [name for name in VARIANT if name not in scan_tuning.HEURISTIC]
    for launches in (len(explicit) * (scan_tuning.WARMUP_RUNS + scan_tuning.TIMED_RUNS) + 1, 1):
        out, last = device.guard(torch.empty_like(u)), device.guard(torch.empty(2, 24, 16))
        params = kernel_abi.scan_params(*prepared, out, last, True, False)
        before = device.last_launch()[3]
        kernel_abi.launch("selective_scan", params, torch.device("cuda", 0))
        assert device.last_launch()[3] - before == launches
        assert rel_err(out, ref) <= TOL[torch.float32]
    ((key, name),) = kernel_abi.tuned_scan_variants().items()
    assert key == ("selective_scan", 0, 2, 24, 16, 40, 1, 0, 24 * 40, 40) and name in explicit
