"""One-shot GPU check of libpartool_kernels: CUDA parity over a shape sweep, then kernel timings.

Needs only the built library (`partool plugins build`), PyTorch with CUDA, and partool itself:

    python benchmarks/gpu_check.py --out $OUT/gpu_check.json

Parity: the `cuda` scan (and the bidirectional scan, conv1d and add + RMSNorm) against float64
references on the GPU; the issue's bars are fp32 <= 1e-5 and fp16 <= 2e-3 in max |err| / max |ref|.
Then a 4-block Vim-S on the `cuda` backend against the chunked PyTorch scan (logits).
Timing: CUDA graphs of 20 back-to-back kernel calls, replayed (CUDA events, median of rounds), at Vim-S
shapes (d = 768, n = 16, l = 197, fp16, z + D + delta_bias + softplus) for batch 1 and 64, with the
library's default and each scan variant (partool_scan_cuda_variant_t, as TensorRT's tactics and partool's
tuner choose among them), against the HBM floor
(bytes the call must move / 3.35 TB/s, H100 SXM). Exit status 1 when a parity case
fails its bar, so a CI-like run can gate on it; timings never fail.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from partool.ops import kernel_abi

HBM_BYTES_PER_S = 3.35e12
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def reference(
    u, delta, A, B, C, D, z, bias, softplus: bool, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 sequential scan from the formulas (B, C grouped (b, g, n, l))."""
    u, delta, A, B, C = (x.double() for x in (u, delta, A, B, C))
    b, d, length = u.shape
    dt = delta + (bias.double()[:, None] if bias is not None else 0.0)
    if softplus:
        dt = torch.where(dt > 20, dt, torch.log1p(torch.exp(dt.clamp(max=20))))
    group = torch.arange(d, device=u.device) // (d // B.shape[1])
    Bx, Cx = B[:, group], C[:, group]
    h = u.new_zeros(b, d, A.shape[1])
    y = torch.empty_like(u)
    for t in range(length - 1, -1, -1) if reverse else range(length):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[..., None] * Bx[..., t]
        y[:, :, t] = (h * Cx[..., t]).sum(-1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    return y, h


def inputs(b, d, n, length, groups, dtype, extras, seed=0, device="cuda"):
    """u, delta, A, B, C, D, z, delta_bias; io tensors in `dtype`, A/D/bias float32. With `extras`,
    delta is pre-softplus (softplus(delta + bias) ~ 0.1 as in Vim) and D, z, bias are given."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    u = torch.randn(b, d, length, generator=g)
    delta = (
        torch.randn(b, d, length, generator=g) * 0.5 - 2.0
        if extras
        else torch.rand(b, d, length, generator=g) * 0.2
    )
    A = -torch.exp(torch.rand(d, n, generator=g) * 2)
    B = torch.randn(b, groups, n, length, generator=g)
    C = torch.randn(b, groups, n, length, generator=g)
    D = torch.randn(d, generator=g) if extras else None
    z = torch.randn(b, d, length, generator=g) if extras else None
    bias = torch.randn(d, generator=g) * 0.1 if extras else None

    def io(x):
        return None if x is None else x.to(device=device, dtype=dtype)

    def f32(x):
        return None if x is None else x.to(device=device)

    return [io(u), io(delta), f32(A), io(B), io(C), f32(D), io(z), f32(bias)]


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def parity(kernels) -> list[dict[str, object]]:
    cases = [
        # b, d, n, l, groups, dtype, extras, reverse
        (1, 768, 16, 197, 1, torch.float32, True, False),
        (2, 768, 16, 197, 1, torch.float32, True, True),
        (64, 768, 16, 197, 1, torch.float32, True, False),
        (8, 768, 16, 197, 1, torch.float32, False, True),
        (3, 96, 16, 7, 4, torch.float32, True, False),
        (2, 40, 1, 1, 2, torch.float32, False, False),
        (2, 10, 5, 1000, 5, torch.float32, True, True),
        (1, 768, 16, 197, 1, torch.float16, True, False),
        (64, 768, 16, 197, 1, torch.float16, True, True),
        (8, 768, 16, 197, 1, torch.float16, True, False),
        (4, 256, 16, 3136, 4, torch.float16, True, False),
        (4, 768, 16, 197, 1, torch.bfloat16, True, True),
    ]
    rows = []
    for b, d, n, length, groups, dtype, extras, reverse in cases:
        args = inputs(b, d, n, length, groups, dtype, extras)
        out, last = kernels.scan(*args, delta_softplus=extras, reverse=reverse)
        ref, ref_last = reference(*args, extras, reverse)
        err, err_last = rel_err(out, ref), rel_err(last, ref_last)
        ok = err <= TOL[dtype] and err_last <= 1e-5
        rows.append(
            {
                "case": "scan",
                "b": b,
                "d": d,
                "n": n,
                "l": length,
                "groups": groups,
                "dtype": str(dtype),
                "extras": extras,
                "reverse": reverse,
                "rel_err": err,
                "rel_err_last_state": err_last,
                "ok": ok,
            }
        )
    for config in variants(kernels):  # every variant, on shapes the heuristic would not pick
        for b, d, n, length, groups, dtype, extras, reverse in (
            (3, 96, 16, 300, 4, torch.float32, True, True),
            (2, 200, 5, 37, 2, torch.float32, False, False),
            (4, 768, 16, 197, 1, torch.float16, True, False),
            (64, 768, 16, 197, 1, torch.float16, True, True),  # the timed shape
        ):
            args = inputs(b, d, n, length, groups, dtype, extras, seed=7)
            with kernel_abi.use_scan_variant(config):
                out, last = kernels.scan(*args, delta_softplus=extras, reverse=reverse)
            ref, ref_last = reference(*args, extras, reverse)
            err, err_last = rel_err(out, ref), rel_err(last, ref_last)
            rows.append(
                {"case": f"scan {config}", "b": b, "d": d, "n": n, "l": length, "dtype": str(dtype),
                 "rel_err": err, "rel_err_last_state": err_last, "ok": err <= TOL[dtype] and err_last <= 1e-5}
            )  # fmt: skip
    fwd_args = inputs(2, 768, 16, 197, 1, torch.float32, True, seed=11)
    bwd_args = inputs(2, 768, 16, 197, 1, torch.float32, True, seed=12)
    keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    fwd, bwd = dict(zip(keys, fwd_args, strict=True)), dict(zip(keys, bwd_args, strict=True))
    bwd["z"] = fwd["z"]
    want = 0.5 * (reference(*fwd.values(), True, False)[0] + reference(*bwd.values(), True, True)[0])
    for config in variants(kernels):
        with kernel_abi.use_scan_variant(config):
            got = kernels.scan_bidirectional(fwd, bwd, delta_softplus=True, out_scale=0.5)
        err = rel_err(got, want)
        rows.append({"case": f"bidirectional {config}", "rel_err": err, "ok": err <= 1e-5})
    from partool.ops import selective_scan

    args = inputs(2, 64, 16, 50, 1, torch.float32, True, seed=4)
    u, delta, A, B, C, D, z, bias = args
    got = selective_scan(u, delta, A, B[:, 0], C[:, 0], D, z, bias, True, backend="cuda")
    err = rel_err(got, reference(*args, True, False)[0])
    rows.append({"case": "selective_scan(backend='cuda')", "rel_err": err, "ok": err <= 1e-5})
    keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    for dtype, b, length in ((torch.float32, 4, 197), (torch.float16, 64, 197), (torch.float32, 2, 2000)):
        fwd = dict(zip(keys, inputs(b, 768, 16, length, 1, dtype, True, seed=1), strict=True))
        bwd = dict(zip(keys, inputs(b, 768, 16, length, 1, dtype, True, seed=2), strict=True))
        bwd["z"] = fwd["z"]
        got = kernels.scan_bidirectional(fwd, bwd, delta_softplus=True, out_scale=0.5)
        want = 0.5 * (reference(*fwd.values(), True, False)[0] + reference(*bwd.values(), True, True)[0])
        err = rel_err(got, want)
        rows.append(
            {
                "case": "bidirectional",
                "b": b,
                "l": length,
                "dtype": str(dtype),
                "rel_err": err,
                "ok": err <= TOL[dtype],
            }
        )
    for dtype in (torch.float32, torch.float16):
        for reverse in (False, True):
            x = torch.randn(4, 768, 197, device="cuda").to(dtype)
            w, bias = torch.randn(768, 4, device="cuda"), torch.randn(768, device="cuda")
            got = kernels.causal_conv1d(x, w, bias, silu=True, reverse=reverse)
            xf = x.double().flip(-1) if reverse else x.double()
            want = F.silu(F.conv1d(F.pad(xf, (3, 0)), w.double().unsqueeze(1), bias.double(), groups=768))
            want = want.flip(-1) if reverse else want
            err = rel_err(got, want)
            rows.append(
                {
                    "case": "conv1d",
                    "dtype": str(dtype),
                    "reverse": reverse,
                    "rel_err": err,
                    "ok": err <= TOL[dtype],
                }
            )
    for dtype in (torch.float32, torch.float16):
        x = torch.randn(4, 384, 197, device="cuda").to(dtype)
        residual, weight = torch.randn(4, 384, 197, device="cuda"), torch.rand(384, device="cuda") + 0.5
        got, r = kernels.add_rms_norm(x, residual, weight, 1e-5)
        rd = residual.double() + x.double()
        want = rd * torch.rsqrt(rd.pow(2).mean(1, keepdim=True) + 1e-5) * weight.double()[:, None]
        err = max(rel_err(got, want), rel_err(r, rd))
        rows.append({"case": "add+rmsnorm", "dtype": str(dtype), "rel_err": err, "ok": err <= TOL[dtype]})
    rows += model_parity()
    return rows


def model_parity() -> list[dict[str, object]]:
    """Vim-S (4 blocks) logits on the `cuda` backend, the fused path as models run it (flat layouts read
    through the kernels' strides, paired conv, add + RMSNorm kernels), against the chunked PyTorch scan."""
    from partool.models import create_model
    from partool.ops import set_backend

    rows = []
    torch.manual_seed(0)
    model = create_model("vim-s", num_attrs=26, img_size=(224, 224), depth=4).cuda().eval()
    images = torch.randn(2, 3, 224, 224, device="cuda")
    for dtype, tol in ((torch.float32, 1e-4), (torch.float16, 2e-2)):
        model.to(dtype)
        logits = {}
        for backend in ("chunked", "cuda"):
            set_backend(backend)
            try:
                with torch.inference_mode():
                    logits[backend] = model(images.to(dtype)).double()
            finally:
                set_backend(None)
        err = rel_err(logits["cuda"], logits["chunked"])
        rows.append({"case": "vim-s (4 blocks) logits, cuda vs chunked", "dtype": str(dtype), "rel_err": err,
                     "ok": err <= tol})  # fmt: skip
    return rows


def graph_us(call: Callable[[], None], per_graph: int = 20, rounds: int = 15) -> tuple[float, str]:
    """Median GPU time of one call: CUDA graph of `per_graph` calls replayed (events), else a plain loop."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    method = "cuda_graph"
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(per_graph):
                call()
        run = graph.replay
    except Exception as exc:  # capture refused: fall back to eager launches
        method = f"eager_loop ({type(exc).__name__})"
        torch.cuda.synchronize()

        def run() -> None:
            for _ in range(per_graph):
                call()

    run()
    samples = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / per_graph)
    return statistics.median(samples), method


def variants(kernels) -> list[str]:
    """The library's default ("auto") and every explicit scan variant (the heuristic "chunked" and "rows"
    resolve to one of those), by the library's names."""
    from partool.ops.scan_tuning import HEURISTIC

    return [name for name in kernel_abi.scan_tuner().names if name == "auto" or name not in HEURISTIC]


def _time_configs(kernels, kernel: str, call, b: int, moved: int) -> list[dict[str, object]]:
    """One row per scan variant: CUDA-graph time of `call(variant number)` against the HBM floor of `moved` bytes."""
    floor = moved / HBM_BYTES_PER_S * 1e6
    rows = []
    for config in variants(kernels):
        us, method = graph_us(functools.partial(call, kernel_abi.scan_tuner().variant(config)))
        rows.append(
            {"kernel": kernel, "config": config, "b": b, "us": us, "hbm_floor_us": floor,
             "x_floor": us / floor, "method": method}
        )  # fmt: skip
    return rows


def timings(kernels) -> list[dict[str, object]]:
    lib = kernel_abi.load_library()
    rows = []
    d, n, length = 768, 16, 197
    for b in (1, 64):
        u, delta, A, B, C, D, z, bias = inputs(b, d, n, length, 1, torch.float16, True)
        out = torch.empty_like(u)
        params = kernel_abi.scan_params(u, delta, A, B, C, D, z, bias, out, None, True, False)
        stream = ctypes.c_void_p()

        def call(variant: int, params=params, stream=stream) -> None:
            stream.value = torch.cuda.current_stream().cuda_stream
            kernel_abi.check(
                lib.partool_selective_scan_fwd_cuda_variant(ctypes.byref(params), variant, stream)
            )

        moved = 4 * b * d * length * 2 + 2 * b * n * length * 2  # u, delta, z, out; B, C (fp16)
        rows += _time_configs(kernels, "scan fp16 (z, D, bias, softplus)", call, b, moved)

        keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
        fwd = dict(zip(keys, (u, delta, A, B, C, D, z, bias), strict=True))
        bwd = dict(zip(keys, inputs(b, d, n, length, 1, torch.float16, True, seed=9), strict=True))
        bwd["z"] = z
        fa = kernel_abi.prepare_scan(*fwd.values())
        ba = kernel_abi.prepare_scan(*bwd.values())
        bparams = kernel_abi.bidir_params(fa, ba, out, True, 0.5)

        def bcall(variant: int, bparams=bparams, stream=stream) -> None:
            stream.value = torch.cuda.current_stream().cuda_stream
            kernel_abi.check(
                lib.partool_selective_scan_bidir_fwd_cuda_variant(ctypes.byref(bparams), variant, stream)
            )

        moved = 6 * b * d * length * 2 + 4 * b * n * length * 2  # u, delta x2, z, out; B, C x2
        rows += _time_configs(kernels, "bidirectional scan fp16", bcall, b, moved)

        x = torch.randn(b, d, length, device="cuda", dtype=torch.float16)
        w = torch.randn(d, 4, device="cuda")
        cout = torch.empty_like(x)
        cparams = kernel_abi.conv_params(x, w, None, cout, silu=True, reverse=False)

        def ccall(cparams=cparams, stream=stream) -> None:
            stream.value = torch.cuda.current_stream().cuda_stream
            kernel_abi.check(lib.partool_causal_conv1d_fwd_cuda(ctypes.byref(cparams), stream))

        us, method = graph_us(ccall)
        floor = 2 * b * d * length * 2 / HBM_BYTES_PER_S * 1e6
        rows.append(
            {
                "kernel": "conv1d+silu fp16",
                "b": b,
                "us": us,
                "hbm_floor_us": floor,
                "x_floor": us / floor,
                "method": method,
            }
        )

        # Vim's add + RMSNorm between blocks (d_model 384, residual float32): one kernel against the
        # PyTorch ops it replaces in eager mode, both in CUDA graphs
        h = torch.randn(b, 384, length, device="cuda", dtype=torch.float16)
        res, wn = (
            torch.randn(b, 384, length, device="cuda"),
            torch.rand(384, device="cuda", dtype=torch.float16),
        )
        nout, nres, wf = torch.empty_like(h), torch.empty_like(res), wn.float()
        nparams = kernel_abi.add_rms_norm_params(h, res, wf, 1e-5, nres, nout)

        def ncall(nparams=nparams, stream=stream, _alive=(h, res, wf, nres, nout)) -> None:
            stream.value = torch.cuda.current_stream().cuda_stream
            kernel_abi.check(lib.partool_add_rms_norm_fwd_cuda(ctypes.byref(nparams), stream))

        def torch_norm(h=h, res=res, wn=wn) -> None:
            r = res + h.float()
            ((r * torch.rsqrt(r.pow(2).mean(1, keepdim=True) + 1e-5)) * wn.float()[:, None]).to(h.dtype)

        floor = b * 384 * length * (2 + 4 + 4 + 2) / HBM_BYTES_PER_S * 1e6  # x, residual in/out, out
        for kernel, fn in (("add+rmsnorm fp16", ncall), ("add+rmsnorm fp16, PyTorch ops", torch_norm)):
            us, method = graph_us(fn)
            rows.append({"kernel": kernel, "b": b, "us": us, "hbm_floor_us": floor, "x_floor": us / floor,
                         "method": method})  # fmt: skip

        # Vim-S's projections as the fused path runs them (one GEMM over the batch, N = b·l) against one
        # GEMM per image (N = l = 197, off the 8-element alignment): in_proj, x_proj, dt_proj, out_proj
        for name, (m, k) in {"in_proj": (1536, 384), "x_proj": (56, 768), "dt_proj": (768, 24),
                             "out_proj": (384, 768)}.items():  # fmt: skip
            wg = torch.randn(m, k, device="cuda", dtype=torch.float16)
            flat_in = torch.randn(k, b * length, device="cuda", dtype=torch.float16)
            per_image_in = torch.randn(b, k, length, device="cuda", dtype=torch.float16)
            for layout, fn in (
                ("flat (m, k) @ (k, b*l)", lambda wg=wg, x=flat_in: wg @ x),
                ("per image bmm", lambda wg=wg.expand(b, -1, -1), x=per_image_in: torch.bmm(wg, x)),
            ):
                us, method = graph_us(fn)
                rows.append({"kernel": f"{name} GEMM fp16, {layout}", "b": b, "us": us, "method": method})

        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except ImportError:
            continue
        B3, C3 = B[:, 0].contiguous(), C[:, 0].contiguous()
        us, method = graph_us(functools.partial(selective_scan_fn, u, delta, A, B3, C3, D, z, bias, True))
        rows.append({"kernel": "mamba_ssm selective_scan_fn fp16", "b": b, "us": us, "method": method})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="JSON results file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible to PyTorch")
    import partool.ops.kernels as kernels

    if not kernel_abi.cuda_available():
        sys.exit(
            "gpu_check: libpartool_kernels is missing or built without CUDA; run `partool plugins build`"
        )
    torch.backends.cuda.matmul.allow_tf32 = False
    result: dict[str, object] = {
        "device": torch.cuda.get_device_name(),
        "capability": list(torch.cuda.get_device_capability()),
        "torch": torch.__version__,
        "library": kernel_abi.find_kernels_library().name,  # a file name: where it lay is this machine's business
    }
    result["parity"] = parity(kernels)
    for row in result["parity"]:
        print(json.dumps(row))
    result["timings"] = timings(kernels)
    for row in result["timings"]:
        print(json.dumps(row))
    result["parity_ok"] = all(row["ok"] for row in result["parity"])
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as handle:
        json.dump(result, handle, indent=2)
    os.replace(handle.name, target)
    print(f"wrote {target}; parity {'ok' if result['parity_ok'] else 'FAILED'}")
    sys.exit(0 if result["parity_ok"] else 1)


if __name__ == "__main__":
    main()
