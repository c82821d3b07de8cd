"""Independent references for the scan and conv1d kernels (float64 numpy and torch), shared by the
kernel tests on the CPU, on a GPU and on the CUDA emulator."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
# partool_scan_cuda_variant_t's names in enum order, written out here so that a renumbering in the header
# fails the tests
SCAN_VARIANTS = ["auto", "chunked", "chunked/tile4", "chunked/tile8", "chunked/tile32", "rows",
                 "rows/states1", "rows/states2", "rows/states4", "rows/states8", "rows/states16"]  # fmt: skip


def numpy_scan(u, delta, A, B, C, D, z, delta_bias, softplus, reverse):
    """Float64 reference written from the formulas, one time step at a time (independent of torch)."""
    u, delta, A, B, C = (np.asarray(x, dtype=np.float64) for x in (u, delta, A, B, C))
    b, d, length = u.shape
    g = B.shape[1]
    dt = delta + (0.0 if delta_bias is None else np.asarray(delta_bias, np.float64)[:, None])
    if softplus:
        dt = np.where(dt > 20.0, dt, np.log1p(np.exp(np.minimum(dt, 20.0))))
    group = np.arange(d) // (d // g)
    Bx, Cx = B[:, group], C[:, group]  # (b, d, n, l)
    h = np.zeros((b, d, A.shape[1]))
    y = np.zeros((b, d, length))
    for t in reversed(range(length)) if reverse else range(length):
        h = np.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[..., None] * Bx[..., t]
        y[:, :, t] = (h * Cx[..., t]).sum(-1)
    if D is not None:
        y = y + np.asarray(D, np.float64)[:, None] * u
    if z is not None:
        zz = np.asarray(z, np.float64)
        y = y * zz / (1.0 + np.exp(-zz))
    return y, h


def numpy_scan_bwd(u, delta, A, B, C, D, z, delta_bias, dout, softplus, reverse):
    """Float64 gradients of numpy_scan's output against `dout`, written from the backward's formulas in
    partool_kernels.h: the states forward, dh_t = g_t C_t + a_{t+1} dh_{t+1} backward, then every sum.
    A dict of the partool_scan_bwd_params_t gradients (du, ddelta, dA, dB, dC; dD, dz, ddelta_bias when
    D, z, delta_bias are given)."""
    u, delta, A, B, C, dout = (np.asarray(x, dtype=np.float64) for x in (u, delta, A, B, C, dout))
    b, d, length = u.shape
    g, n = B.shape[1], A.shape[1]
    pre = delta + (0.0 if delta_bias is None else np.asarray(delta_bias, np.float64)[:, None])
    dt = np.where(pre > 20.0, pre, np.log1p(np.exp(np.minimum(pre, 20.0)))) if softplus else pre
    group = np.arange(d) // (d // g)
    Bx, Cx = B[:, group], C[:, group]  # (b, d, n, l)
    a = np.exp(dt[:, :, None, :] * A[None, :, :, None])  # a_t, (b, d, n, l)
    order = list(reversed(range(length))) if reverse else list(range(length))
    h_prev, h_after = np.zeros((b, d, n, length)), np.zeros((b, d, n, length))  # h_{t-1} and h_t
    h = np.zeros((b, d, n))
    for t in order:
        h_prev[..., t] = h
        h = a[..., t] * h + (dt[:, :, t] * u[:, :, t])[..., None] * Bx[..., t]
        h_after[..., t] = h
    y = (Cx * h_after).sum(2) + (0.0 if D is None else np.asarray(D, np.float64)[:, None] * u)
    grads = {}
    gy = dout
    if z is not None:
        zz = np.asarray(z, np.float64)
        sig = 1.0 / (1.0 + np.exp(-zz))
        gy = dout * zz * sig
        grads["dz"] = dout * y * sig * (1.0 + zz * (1.0 - sig))
    dh, carry = np.zeros((b, d, n, length)), np.zeros((b, d, n))
    for t in reversed(order):
        dh[..., t] = gy[:, :, None, t] * Cx[..., t] + carry
        carry = a[..., t] * dh[..., t]
    ddt = (dh * (A[None, :, :, None] * a * h_prev + Bx * u[:, :, None])).sum(2)
    grads["ddelta"] = ddt / (1.0 + np.exp(-pre)) if softplus else ddt
    grads["du"] = (dh * Bx).sum(2) * dt + (0.0 if D is None else np.asarray(D, np.float64)[:, None] * gy)
    grads["dA"] = (dh * dt[:, :, None] * a * h_prev).sum((0, 3))
    per_group = (b, g, d // g, n, length)  # channel c is (group c // (d/g), member c % (d/g))
    grads["dB"] = (dh * (dt * u)[:, :, None]).reshape(per_group).sum(2)
    grads["dC"] = (gy[:, :, None] * h_after).reshape(per_group).sum(2)
    if D is not None:
        grads["dD"] = (gy * u).sum((0, 2))
    if delta_bias is not None:
        grads["ddelta_bias"] = grads["ddelta"].sum((0, 2))
    return grads


def make_inputs(b, d, n, length, groups, dtype, extras, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, length, generator=gen).to(dtype)
    delta = (torch.rand(b, d, length, generator=gen) * 0.5 - (0.3 if extras else -0.05)).to(dtype)
    A = -torch.rand(d, n, generator=gen) * 2 - 0.1
    B = torch.randn(b, groups, n, length, generator=gen).to(dtype)
    C = torch.randn(b, groups, n, length, generator=gen).to(dtype)
    D = torch.randn(d, generator=gen) if extras else None
    z = torch.randn(b, d, length, generator=gen).to(dtype) if extras else None
    bias = torch.randn(d, generator=gen) * 0.5 if extras else None
    return u, delta, A, B, C, D, z, bias


def rel_err(out: torch.Tensor, ref: np.ndarray) -> float:
    ref_t = torch.as_tensor(ref, dtype=torch.float64)
    return float((out.double() - ref_t).abs().max() / ref_t.abs().max().clamp_min(1e-12))


def conv_reference(x, w, bias, silu, reverse):
    """torch's conv1d on left-padded x (flipped in and out for the anti-causal direction), float64."""
    xf = x.double().flip(-1) if reverse else x.double()
    ref = F.conv1d(F.pad(xf, (w.shape[1] - 1, 0)), w.double().unsqueeze(1), bias.double(), groups=x.shape[1])
    ref = F.silu(ref) if silu else ref
    return (ref.flip(-1) if reverse else ref).numpy()


def conv_bwd_reference(x, w, bias, dout, silu, reverse):
    """(dx, dweight, dbias) of conv_reference's output against dout, by torch autograd in float64 (dbias
    None without a bias)."""
    x, w = x.double().requires_grad_(), w.double().requires_grad_()
    b = None if bias is None else bias.double().requires_grad_()
    xf = x.flip(-1) if reverse else x
    out = F.conv1d(F.pad(xf, (w.shape[1] - 1, 0)), w.unsqueeze(1), b, groups=x.shape[1])
    out = F.silu(out) if silu else out
    (out.flip(-1) if reverse else out).backward(dout.double())
    return x.grad.numpy(), w.grad.numpy(), None if b is None else b.grad.numpy()


def add_rms_norm_reference(x, residual, weight, eps):
    """Residual add + RMSNorm over dim 1 of channel-major (b, d, l) tensors, float64 numpy:
    (r, r / sqrt(mean_d r² + eps) · weight) with r = residual + x."""
    r = np.asarray(x.double() if residual is None else x.double() + residual.double())
    scale = 1.0 / np.sqrt((r**2).mean(axis=1, keepdims=True) + eps)
    return r, r * scale * np.asarray(weight.double())[None, :, None]


def flat_view(x: torch.Tensor, before: int = 0, after: int = 0) -> torch.Tensor:
    """x (b, *rows, l) as a view into one (rows, b·l) matrix, the layout of projection outputs that hold the
    whole batch (partool's fused Vim path), with `before` and `after` rows of NaN around it: strides
    (l, ..., b·l, 1), rows b·l apart. A kernel that reads outside the view's rows reads NaN."""
    b, length = x.shape[0], x.shape[-1]
    rows = x.shape[1:-1]
    count = int(np.prod(rows))
    buf = torch.full((before + count + after, b, length), float("nan"), dtype=x.dtype)
    buf[before : before + count] = x.reshape(b, count, length).transpose(0, 1)
    return buf[before : before + count].transpose(0, 1).unflatten(1, rows)
