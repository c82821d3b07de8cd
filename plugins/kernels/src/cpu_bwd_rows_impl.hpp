// Backward row kernels of the CPU scan and conv1d. Included by each cpu_rows_<isa>.cpp after
// cpu_rows_impl.hpp, whose vector type (vf, VW lanes), exp/softplus/silu and transpose-add reduction it
// reuses, so the backward is vectorised across the states exactly as the forward is.
//
// Both kernels take whole channels (all their batch rows), so the per-channel sums (dA, dD, ddelta_bias;
// dweight, dbias) belong to one worker and are added in batch order: they come out the same whichever
// worker takes the channel. They are summed in double across rows: each is a sum over batch * length terms.
//
// The scan recomputes a row's states before its backward pass (as mamba_ssm does) into the worker's
// buffers, length x states floats: nothing of size (batch, dim, length, dstate) is ever stored.

namespace partool {
namespace {

inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

// d silu(x) / dx = s * (1 + x * (1 - s)), s = sigmoid(x).
inline vf vsilu_grad(vf x) {
  const vf s = vsigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

// dst[t] = src[s] for the step s of time t (s = L-1-t when `rev`): back from scan-step order.
void store_steps(float* dst, int L, bool rev, const float* src) {
  if (rev) {
    for (int t = 0; t < L; ++t) dst[t] = src[L - 1 - t];
  } else {
    std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(L));
  }
}

// A worker's buffers for one scan row: kScanBwdRows rows of scratch_stride(L) floats in scan-step
// order, then the states h_s and decays a_s of every step (NS floats each). H has a zero row in front,
// so H - NS is h_{-1} = 0.
struct ScanBwdBuffers {
  float *dt, *sg, *u, *dtu, *g, *dout, *z, *P, *Q, *Y;
  float *H, *decay;

  ScanBwdBuffers(float* scratch, int L, int NS) {
    const int64_t st = scratch_stride(L);
    float** rows[] = {&dt, &sg, &u, &dtu, &g, &dout, &z, &P, &Q, &Y};
    static_assert(sizeof(rows) / sizeof(rows[0]) == kScanBwdRows, "kScanBwdRows counts these rows");
    for (float** r : rows) {
      *r = scratch;
      scratch += st;
    }
    std::fill(scratch, scratch + NS, 0.0f);
    H = scratch + NS;
    decay = H + st * NS;
  }
};

// The forward recurrence again, keeping every step's h and a = 2^(dt * a2) (and, for kY, y_s = C_s . h_s
// without the D term, which dz needs).
template <int NS, bool kY>
void recompute_states(const ScanBwdBuffers& w, const float* BT, const float* CT, const vf* a2, int L) {
  constexpr int NV = NS / VW;
  vf h[NV];
  for (int v = 0; v < NV; ++v) h[v] = splat(0.0f);
  auto step = [&](int s) {
    vf y = splat(0.0f);
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const int64_t at = static_cast<int64_t>(s) * NS + v * VW;
      const vf a = vexp2(w.dt[s] * a2[v]);
      h[v] = a * h[v] + w.dtu[s] * loadv(BT + at);
      storev(w.decay + at, a);
      storev(w.H + at, h[v]);
      if (kY) y += loadv(CT + at) * h[v];
    }
    return y;
  };
  int s0 = 0;
  for (; s0 + VW <= L; s0 += VW) {  // VW steps, then (for kY) one transpose-add for their sums
    vf prod[VW];
#pragma GCC unroll 16
    for (int j = 0; j < VW; ++j) prod[j] = step(s0 + j);
    if (kY) storev(w.Y + s0, reduce_lanes(prod));
  }
  if (s0 < L) {
    vf prod[VW] = {};
    for (int j = 0; j < L - s0; ++j) prod[j] = step(s0 + j);
    if (kY) storev(w.Y + s0, reduce_lanes(prod));
  }
}

// The states' gradient from the last step to the first: dh_s = g_s C_s + a_{s+1} dh_{s+1}. Adds
// dh_s dt_s u_s to dBT and g_s h_s to dCT (this worker's sums, step order), dt_s dh_s a_s h_{s-1} to
// dA, and leaves P_s = dh_s . B_s and Q_s = sum_n A_n dh_s a_s h_{s-1} (the two state sums du and ddt
// need) in w.P and w.Q.
template <int NS>
void backprop_states(const ScanBwdBuffers& w, const float* g, const float* BT, const float* CT, const vf* A, int L,
                     float* dBT, float* dCT, vf* dA) {
  constexpr int NV = NS / VW;
  vf carry[NV];  // a_{s+1} dh_{s+1}
  for (int v = 0; v < NV; ++v) carry[v] = splat(0.0f);
  auto step = [&](int s, vf& p, vf& q) {
    p = q = splat(0.0f);
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const int64_t at = static_cast<int64_t>(s) * NS + v * VW;
      const vf gC = g[s] * loadv(CT + at);
      const vf a = loadv(w.decay + at);
      const vf dh = gC + carry[v];
      // a dh as a * carry + a * gC: one FMA from step to step instead of an add and a multiply
      carry[v] = a * carry[v] + a * gC;
      const vf da = dh * a * loadv(w.H + at - NS);  // d/d(dt A) of this step
      dA[v] += w.dt[s] * da;
      q += A[v] * da;
      p += dh * loadv(BT + at);
      storev(dBT + at, loadv(dBT + at) + w.dtu[s] * dh);
      storev(dCT + at, loadv(dCT + at) + g[s] * loadv(w.H + at));
    }
  };
  // VW steps at a time, then one transpose-add each for their P and Q; the partial block at the end first
  int s0 = L / VW * VW;
  if (s0 < L) {
    vf ps[VW] = {}, qs[VW] = {};
    for (int j = L - s0 - 1; j >= 0; --j) step(s0 + j, ps[j], qs[j]);
    storev(w.P + s0, reduce_lanes(ps));
    storev(w.Q + s0, reduce_lanes(qs));
  }
  for (s0 -= VW; s0 >= 0; s0 -= VW) {
    vf ps[VW], qs[VW];
#pragma GCC unroll 16
    for (int j = VW - 1; j >= 0; --j) step(s0 + j, ps[j], qs[j]);
    storev(w.P + s0, reduce_lanes(ps));
    storev(w.Q + s0, reduce_lanes(qs));
  }
}

// Per-channel sums over the channel's batch rows.
template <int NS>
struct ChannelSums {
  double dA[NS] = {};
  double dD = 0.0, dbias = 0.0;
};

// One row (b, c): recompute, backpropagate, write du, ddelta (and dz) and add to the channel's sums.
template <int NS>
void scan_bwd_row(const CpuScanBwdJob& job, int64_t b, int c, const ScanBwdBuffers& w, float* dBT, float* dCT,
                  ChannelSums<NS>& sums) {
  constexpr int NV = NS / VW;
  const partool_scan_bwd_params_t& q = *job.p;
  const partool_scan_params_t& p = q.fwd;
  const int L = p.length, io = static_cast<int>(p.io_dtype);
  const bool rev = p.reverse != 0;
  const int64_t row = b * p.batch_stride + c * p.dim_stride;
  const int64_t grad_row = (b * p.dim + c) * static_cast<int64_t>(L);
  const float bias = p.delta_bias ? p.delta_bias[c] : 0.0f;
  const float Dc = p.D ? p.D[c] : 0.0f;

  // dt and, with softplus, its derivative sigmoid(delta + bias)
  load_steps(p.delta, io, row, L, rev, w.dt);
  for (int s = 0; s < L; ++s) w.dt[s] += bias;
  if (p.delta_softplus) {
    for (int s = 0; s < L; s += VW) {
      const vf x = loadv(w.dt + s);
      storev(w.sg + s, vsigmoid(x));
      storev(w.dt + s, vsoftplus(x));
    }
  }
  load_steps(p.u, io, row, L, rev, w.u);
  for (int s = 0; s < L; s += VW) storev(w.dtu + s, loadv(w.dt + s) * loadv(w.u + s));
  // g, the gradient of y: dout * silu(z) with z, else dout itself
  load_steps(q.dout, io, row, L, rev, w.dout);
  const float* g = w.dout;
  if (p.z) {
    load_steps(p.z, io, row, L, rev, w.z);
    for (int s = 0; s < L; s += VW) storev(w.g + s, loadv(w.dout + s) * vsilu(loadv(w.z + s)));
    g = w.g;
  }

  vf a2[NV], A[NV], dA[NV];
  {
    constexpr float kLog2e = 1.44269504088896341f;
    float As[NS];
    for (int n = 0; n < NS; ++n) As[n] = n < p.dstate ? p.A[static_cast<int64_t>(c) * p.dstate + n] : 0.0f;
    for (int v = 0; v < NV; ++v) {
      A[v] = loadv(As + v * VW);
      a2[v] = A[v] * kLog2e;
      dA[v] = splat(0.0f);
    }
  }
  const int64_t bc = (b * p.groups + c / (p.dim / p.groups)) * scratch_stride(L) * NS;
  if (p.z) {
    recompute_states<NS, true>(w, job.BT + bc, job.CT + bc, a2, L);
  } else {
    recompute_states<NS, false>(w, job.BT + bc, job.CT + bc, a2, L);
  }
  backprop_states<NS>(w, g, job.BT + bc, job.CT + bc, A, L, dBT + bc, dCT + bc, dA);

  // ddt = Q + u P (into Q, then ddelta through the softplus), du = g D + dt P (into P)
  for (int s = 0; s < L; s += VW) {
    const vf P = loadv(w.P + s);
    const vf ddt = loadv(w.Q + s) + loadv(w.u + s) * P;
    storev(w.Q + s, p.delta_softplus ? ddt * loadv(w.sg + s) : ddt);
    storev(w.P + s, loadv(g + s) * Dc + loadv(w.dt + s) * P);
  }
  store_steps(q.du + grad_row, L, rev, w.P);
  store_steps(q.ddelta + grad_row, L, rev, w.Q);
  if (p.z) {  // dz = dout * y * silu'(z), y = C . h + D u (into Y)
    for (int s = 0; s < L; s += VW) {
      const vf y = loadv(w.Y + s) + Dc * loadv(w.u + s);
      storev(w.Y + s, loadv(w.dout + s) * y * vsilu_grad(loadv(w.z + s)));
    }
    store_steps(q.dz + grad_row, L, rev, w.Y);
  }

  // the row's parts of dD and ddelta_bias: float vectors over whole vectors of steps, the rest one by one
  vf dD = splat(0.0f), dbias = splat(0.0f);
  int s = 0;
  for (; s + VW <= L; s += VW) {
    dD += loadv(g + s) * loadv(w.u + s);
    dbias += loadv(w.Q + s);
  }
  for (; s < L; ++s) {
    sums.dD += static_cast<double>(g[s]) * w.u[s];
    sums.dbias += w.Q[s];
  }
  for (int i = 0; i < VW; ++i) {
    sums.dD += dD[i];
    sums.dbias += dbias[i];
  }
  for (int v = 0; v < NV; ++v) {
    for (int i = 0; i < VW; ++i) sums.dA[v * VW + i] += dA[v][i];
  }
}

// Channels a worker takes together: batch by batch, so that one batch's B, C and dB, dC sums stay in
// cache across them.
constexpr int kBwdChannelBlock = 16;

template <int NS>
void scan_bwd_channels_ns(const CpuScanBwdJob& job, int64_t c0, int64_t c1, float* scratch, float* dBT, float* dCT) {
  const partool_scan_bwd_params_t& q = *job.p;
  const partool_scan_params_t& p = q.fwd;
  const ScanBwdBuffers w(scratch, p.length, NS);
  for (int64_t block = c0; block < c1; block += kBwdChannelBlock) {
    const int64_t end = std::min<int64_t>(c1, block + kBwdChannelBlock);
    ChannelSums<NS> sums[kBwdChannelBlock];
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t c = block; c < end; ++c) {
        scan_bwd_row<NS>(job, b, static_cast<int>(c), w, dBT, dCT, sums[c - block]);
      }
    }
    for (int64_t c = block; c < end; ++c) {
      const ChannelSums<NS>& s = sums[c - block];
      for (int n = 0; n < p.dstate; ++n) q.dA[c * p.dstate + n] = static_cast<float>(s.dA[n]);
      if (q.dD) q.dD[c] = static_cast<float>(s.dD);
      if (q.ddelta_bias) q.ddelta_bias[c] = static_cast<float>(s.dbias);
    }
  }
}

// Buffers of one conv1d backward row, laid out as the forward's (conv_rows): x zero-padded so that
// pre[t] = bias + sum_k taps[k] * xbuf[t + k]; dpre zero-padded on the other side, so that
// dx[t] = sum_k taps'[k] * dpbuf[t + k] with the taps mirrored relative to the forward's.
struct ConvBwdBuffers {
  float *xbuf, *dpbuf, *dout, *dpre, *dx;

  explicit ConvBwdBuffers(float* scratch, int L) {
    const int64_t st = scratch_stride(L);
    xbuf = scratch;
    dpbuf = xbuf + st + 16;
    dout = dpbuf + st + 16;
    dpre = dout + st;
    dx = dpre + st;
    // Padding that rows never write: zero once (rows write [shift, shift + L) and [0, L) only).
    std::fill(scratch, scratch + conv_bwd_scratch_floats(L), 0.0f);
  }
};

}  // namespace

void PARTOOL_CAT(scan_bwd_channels, PARTOOL_ROWS_SUFFIX)(const CpuScanBwdJob& job, int64_t c0, int64_t c1,
                                                         float* scratch, float* dBT, float* dCT) {
  // The entry pads job.ns to a multiple of this unit's VW, as for the forward (cpu_entry.cpp).
  if (job.ns == 4) {
    scan_bwd_channels_ns<VW <= 4 ? 4 : VW>(job, c0, c1, scratch, dBT, dCT);
  } else if (job.ns == 8) {
    scan_bwd_channels_ns<VW <= 8 ? 8 : VW>(job, c0, c1, scratch, dBT, dCT);
  } else {
    scan_bwd_channels_ns<16>(job, c0, c1, scratch, dBT, dCT);
  }
}

// Channels [c0, c1), each over its batch rows: dpre = dout * silu'(pre) (pre recomputed as the forward
// does), then dx by the mirrored taps, dweight and dbias as dot products over the row.
void PARTOOL_CAT(conv_bwd_channels, PARTOOL_ROWS_SUFFIX)(const partool_conv1d_bwd_params_t& q, int64_t c0,
                                                         int64_t c1, float* scratch) {
  const partool_conv1d_params_t& p = q.fwd;
  const int L = p.length, W = p.width, dtype = static_cast<int>(p.io_dtype);
  const int Lv = (L + VW - 1) / VW * VW;
  const ConvBwdBuffers w(scratch, L);
  const int shift = p.reverse ? 0 : W - 1;   // where x[0] sits in xbuf (as in the forward)
  const int dshift = p.reverse ? W - 1 : 0;  // where dpre[0] sits in dpbuf
  for (int64_t c = c0; c < c1; ++c) {
    float taps[PARTOOL_MAX_CONV_WIDTH], back_taps[PARTOOL_MAX_CONV_WIDTH];
    for (int k = 0; k < W; ++k) {
      taps[k] = p.weight[c * W + (p.reverse ? W - 1 - k : k)];
      back_taps[k] = p.weight[c * W + (p.reverse ? k : W - 1 - k)];
    }
    const float bias = p.bias ? p.bias[c] : 0.0f;
    double dtaps[PARTOOL_MAX_CONV_WIDTH] = {}, dbias = 0.0;
    for (int64_t b = 0; b < p.batch; ++b) {
      const int64_t row = b * p.batch_stride + c * p.dim_stride;
      load_steps(p.x, dtype, row, L, false, w.xbuf + shift);
      load_steps(q.dout, dtype, row, L, false, w.dout);  // zero beyond L: so is dpre there
      for (int t = 0; t < Lv; t += VW) {
        vf dpre = loadv(w.dout + t);
        if (p.silu) {
          vf pre = splat(bias);
          for (int k = 0; k < W; ++k) pre += taps[k] * loadv(w.xbuf + t + k);
          dpre *= vsilu_grad(pre);
        }
        storev(w.dpre + t, dpre);
      }
      std::memcpy(w.dpbuf + dshift, w.dpre, sizeof(float) * static_cast<size_t>(L));
      for (int t = 0; t < Lv; t += VW) {
        vf acc = splat(0.0f);
        for (int k = 0; k < W; ++k) acc += back_taps[k] * loadv(w.dpbuf + t + k);
        storev(w.dx + t, acc);
      }
      std::memcpy(q.dx + (b * p.dim + c) * L, w.dx, sizeof(float) * static_cast<size_t>(L));
      for (int k = 0; k < W; ++k) {
        vf acc = splat(0.0f);
        for (int t = 0; t < Lv; t += VW) acc += loadv(w.dpre + t) * loadv(w.xbuf + t + k);
        for (int i = 0; i < VW; ++i) dtaps[k] += acc[i];
      }
      for (int t = 0; t < L; ++t) dbias += w.dpre[t];
    }
    for (int k = 0; k < W; ++k) q.dweight[c * W + (p.reverse ? W - 1 - k : k)] = static_cast<float>(dtaps[k]);
    if (q.dbias) q.dbias[c] = static_cast<float>(dbias);
  }
}

}  // namespace partool
