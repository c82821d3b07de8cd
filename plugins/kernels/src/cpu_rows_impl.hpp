// Row kernels of the CPU scan and conv1d. Included by one .cpp per instruction set, which defines
// PARTOOL_ROWS_SUFFIX (base, avx2, avx512) and is compiled with that set's flags. The state of one
// channel lives in SIMD vectors across its states (one zmm holds all 16 under AVX-512); each step
// costs an exp2 (degree-5 polynomial, ~2 ulp), two FMAs for the state and one product C*h whose
// horizontal sum is deferred: VW steps' products are reduced together by a transpose-add tree.
// softplus(delta + bias), D*u and silu(z) run as separate vector passes over the row.
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <initializer_list>

#include "cpu_kernels.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#define PARTOOL_CAT2(a, b) a##_##b
#define PARTOOL_CAT(a, b) PARTOOL_CAT2(a, b)

namespace partool {
namespace {

// GCC/Clang vector extensions: one source, lowered to AVX-512, AVX2, SSE2 or NEON by each unit's flags.
#if defined(__AVX512F__)
constexpr int VW = 16;
#elif defined(__AVX2__)
constexpr int VW = 8;
#else
constexpr int VW = 4;
#endif
typedef float vf __attribute__((vector_size(4 * VW)));
typedef int32_t vi __attribute__((vector_size(4 * VW)));

inline vf splat(float x) { return vf{} + x; }
inline vf loadv(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void storev(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
inline vf as_float(vi v) {
  vf f;
  std::memcpy(&f, &v, sizeof(f));
  return f;
}

// 2^k * p for integral k (as float): AVX-512's vscalefps (0 or inf beyond the float range); elsewhere
// k enters the exponent field directly, so k must lie in [-126, 127] (the callers clamp).
inline vf scale_pow2(vf p, vf k) {
#if defined(__AVX512F__)
  return static_cast<vf>(_mm512_scalef_ps(static_cast<__m512>(p), static_cast<__m512>(k)));
#else
  return p * as_float((__builtin_convertvector(k, vi) + 127) << 23);
#endif
}

// x rounded to the nearest integer (ties to even), |x| < 2^22.
inline vf round_nearest(vf x) {
#if defined(__AVX512F__)
  return static_cast<vf>(_mm512_roundscale_ps(static_cast<__m512>(x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  return (x + 12582912.0f) - 12582912.0f;  // 1.5 * 2^23: the sum has no fraction bits left
#endif
}

// 2^x, the scan's decay factor. AVX-512: with xh = x + 1/2, f = xh - floor(xh) in [0, 1) (vreduceps) and
// 2^x = q(f) * 2^floor(xh) (vscalefps floors its exponent), q the minimax degree-5 polynomial of
// 2^(f - 1/2) (1.9e-7 relative in float32); 0 or inf beyond the float range. Elsewhere: k = round(x),
// 2^k * p(x - k) with p the minimax degree-5 polynomial of 2^f on [-1/2, 1/2] (1.7e-7), x clamped to
// [-126, 127] for scale_pow2 (2^-126 next to the state is as good as 0).
inline vf vexp2(vf x) {
#if defined(__AVX512F__)
  const __m512 xh = static_cast<__m512>(x + 0.5f);
  const vf f = static_cast<vf>(_mm512_reduce_ps(xh, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
  vf q = splat(1.3259677216410637e-3f);
  q = q * f + 6.360956933349371e-3f;
  q = q * f + 3.947107121348381e-2f;
  q = q * f + 1.6981562972068787e-1f;
  q = q * f + 4.901331067085266e-1f;
  q = q * f + 7.071067094802856e-1f;
  return static_cast<vf>(_mm512_scalef_ps(static_cast<__m512>(q), xh));
#else
  x = x < -126.0f ? splat(-126.0f) : x;
  x = x > 127.0f ? splat(127.0f) : x;
  const vf k = round_nearest(x);
  const vf f = x - k;
  vf p = splat(1.3266964815557003e-3f);
  p = p * f + 9.672051295638084e-3f;
  p = p * f + 5.5507197976112366e-2f;
  p = p * f + 2.4022233486175537e-1f;
  p = p * f + 6.931470036506653e-1f;
  p = p * f + 1.0f;
  return scale_pow2(p, k);
#endif
}

// e^x: Cody-Waite reduction by k*ln2 (exact in two parts) and Cephes' expf polynomial (~2 ulp).
// Clamped to [-87.3, 88] where scale_pow2 needs it.
inline vf vexp(vf x) {
#if !defined(__AVX512F__)
  x = x < -87.33654f ? splat(-87.33654f) : x;
  x = x > 88.0f ? splat(88.0f) : x;
#endif
  const vf k = round_nearest(x * 1.44269504088896341f);
  const vf r = x - k * 0.693359375f + k * 2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  return scale_pow2(p, k);
}

// softplus(x) = log1p(exp(x)) = max(x, 0) + log1p(exp(-|x|)), with log1p(v) on v in (0, 1] as v times
// a degree-8 minimax polynomial (2e-7 relative in float32). Above 20 the second term is below half an
// ulp of x, so this equals torch's and mamba_ssm's softplus with its x > 20 threshold.
inline vf vsoftplus(vf x) {
  const vf ax = x < 0.0f ? -x : x;
  const vf v = vexp(-ax);
  vf p = splat(5.397230852395296e-3f);
  p = p * v - 3.022291138768196e-2f;
  p = p * v + 7.951832562685013e-2f;
  p = p * v - 1.3787056505680084e-1f;
  p = p * v + 1.9173592329025269e-1f;
  p = p * v - 2.4863746762275696e-1f;
  p = p * v + 3.332236409187317e-1f;
  p = p * v - 4.9999696016311646e-1f;
  p = p * v + 1.0f;
  return (x > 0.0f ? x : splat(0.0f)) + v * p;
}

inline vf vsilu(vf x) { return x / (1.0f + vexp(-x)); }

// r[i] = the sum of p[i]'s lanes, for VW vectors p[0 .. VW): a transpose-add tree. The inputs enter the
// tree permuted (order[]) so that the sums come out in natural order.
inline vf reduce_lanes(const vf* p) {
#if defined(__AVX512F__)
  constexpr int order[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
  __m512 c[8], g[4], m[2];
  for (int i = 0; i < 8; ++i) {  // 16 -> 8: halves of two vectors side by side
    const __m512 a = static_cast<__m512>(p[order[2 * i]]), b = static_cast<__m512>(p[order[2 * i + 1]]);
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
  }
  for (int i = 0; i < 4; ++i)  // 8 -> 4: one 128-bit quarter per input
    g[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0xdd));
  for (int i = 0; i < 2; ++i)  // 4 -> 2 lanes per input, within quarters
    m[i] = _mm512_add_ps(_mm512_shuffle_ps(g[2 * i], g[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(g[2 * i], g[2 * i + 1], 0xee));
  return static_cast<vf>(_mm512_add_ps(_mm512_shuffle_ps(m[0], m[1], 0x88), _mm512_shuffle_ps(m[0], m[1], 0xdd)));
#elif defined(__AVX2__)
  constexpr int order[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  __m256 c[4], m[2];
  for (int i = 0; i < 4; ++i) {  // 8 -> 4 lanes per input: 128-bit halves side by side
    const __m256 a = static_cast<__m256>(p[order[2 * i]]), b = static_cast<__m256>(p[order[2 * i + 1]]);
    c[i] = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
  }
  for (int i = 0; i < 2; ++i)
    m[i] = _mm256_add_ps(_mm256_shuffle_ps(c[2 * i], c[2 * i + 1], 0x44),
                         _mm256_shuffle_ps(c[2 * i], c[2 * i + 1], 0xee));
  return static_cast<vf>(_mm256_add_ps(_mm256_shuffle_ps(m[0], m[1], 0x88), _mm256_shuffle_ps(m[0], m[1], 0xdd)));
#elif defined(__aarch64__) && defined(__ARM_NEON)
  const float32x4_t a = vpaddq_f32(static_cast<float32x4_t>(p[0]), static_cast<float32x4_t>(p[1]));
  const float32x4_t b = vpaddq_f32(static_cast<float32x4_t>(p[2]), static_cast<float32x4_t>(p[3]));
  return static_cast<vf>(vpaddq_f32(a, b));
#else
  vf r;
  for (int i = 0; i < VW; ++i) r[i] = (p[i][0] + p[i][2]) + (p[i][1] + p[i][3]);
  return r;
#endif
}

// Elements [0, L) of a row in the io dtype -> float32 dst, in scan-step order (reversed when `rev`).
void load_steps(const void* base, int dtype, int64_t off, int L, bool rev, float* dst) {
  switch (dtype) {
    case PARTOOL_DTYPE_F16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + off;
      for (int s = 0; s < L; ++s) dst[s] = half_to_float(src[rev ? L - 1 - s : s]);
      break;
    }
    case PARTOOL_DTYPE_BF16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + off;
      for (int s = 0; s < L; ++s) dst[s] = bf16_to_float(src[rev ? L - 1 - s : s]);
      break;
    }
    default: {
      const float* src = static_cast<const float*>(base) + off;
      if (rev) {
        for (int s = 0; s < L; ++s) dst[s] = src[L - 1 - s];
      } else {
        for (int s = 0; s < L; ++s) dst[s] = src[s];
      }
    }
  }
}

void store_row(void* base, int dtype, int64_t off, int L, float scale, const float* src) {
  switch (dtype) {
    case PARTOOL_DTYPE_F16:
      for (int t = 0; t < L; ++t) static_cast<uint16_t*>(base)[off + t] = float_to_half(scale * src[t]);
      break;
    case PARTOOL_DTYPE_BF16:
      for (int t = 0; t < L; ++t) static_cast<uint16_t*>(base)[off + t] = float_to_bf16(scale * src[t]);
      break;
    default:
      for (int t = 0; t < L; ++t) static_cast<float*>(base)[off + t] = scale * src[t];
  }
}

// The recurrence over the L steps of one channel, all inputs in step order: ys[s] = C_s . h_s with
// h_s = 2^(dt_s * a2) * h_{s-1} + du_s * B_s, a2 = A * log2(e); returns the last h in hs. ys has room for
// L rounded up to VW.
template <int NS>
void scan_steps(const float* dt, const float* du, const float* BT, const float* CT, const float* a2s, int L,
                float* ys, float* hs) {
  static_assert(NS % VW == 0, "states are padded to a multiple of the vector width");
  constexpr int NV = NS / VW;
  vf a2[NV], h[NV];
  for (int v = 0; v < NV; ++v) {
    a2[v] = loadv(a2s + v * VW);
    h[v] = splat(0.0f);
  }
  // One step: advances h, returns the products C_s * h_s (summed over the NV vectors).
  auto step = [&](int s) {
    const float* Bs = BT + static_cast<int64_t>(s) * NS;
    const float* Cs = CT + static_cast<int64_t>(s) * NS;
    vf y = splat(0.0f);
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      h[v] = vexp2(dt[s] * a2[v]) * h[v] + du[s] * loadv(Bs + v * VW);
      y += loadv(Cs + v * VW) * h[v];
    }
    return y;
  };
  int s0 = 0;
  for (; s0 + VW <= L; s0 += VW) {  // VW steps, then one transpose-add for their VW sums
    vf prod[VW];
#pragma GCC unroll 16
    for (int j = 0; j < VW; ++j) prod[j] = step(s0 + j);
    storev(ys + s0, reduce_lanes(prod));
  }
  if (s0 < L) {
    vf prod[VW] = {};
    for (int j = 0; j < L - s0; ++j) prod[j] = step(s0 + j);
    storev(ys + s0, reduce_lanes(prod));
  }
  for (int v = 0; v < NV; ++v) storev(hs + v * VW, h[v]);
}

// Per-thread row buffers, each scratch_stride(L) floats.
struct RowBuffers {
  float* dt;
  float* u;
  float* du;
  float* ys;
  float* yrow;
};

// One direction of one row: its output y*silu(z) + D*u, in scan-step order, into w.ys.
template <int NS>
void scan_row(const CpuDir& dir, int64_t b, int c, const RowBuffers& w) {
  const partool_scan_params_t& p = *dir.p;
  const int L = p.length, io = static_cast<int>(p.io_dtype);
  const int Lp = static_cast<int>(scratch_stride(L));
  const bool rev = dir.reverse != 0;
  const int64_t row = b * p.batch_stride + c * p.dim_stride;
  const int g = c / (p.dim / p.groups);
  const float bias = p.delta_bias ? p.delta_bias[c] : 0.0f;
  const float Dc = p.D ? p.D[c] : 0.0f;

  load_steps(p.delta, io, row, L, rev, w.dt);
  load_steps(p.u, io, row, L, rev, w.u);
  for (int s = 0; s < L; ++s) w.dt[s] += bias;
  if (p.delta_softplus) {
    for (int s = 0; s < L; s += VW) storev(w.dt + s, vsoftplus(loadv(w.dt + s)));
  }
  for (int s = 0; s < L; s += VW) storev(w.du + s, loadv(w.dt + s) * loadv(w.u + s));

  constexpr float kLog2e = 1.44269504088896341f;
  float a2[NS], hs[NS];
  for (int n = 0; n < NS; ++n) a2[n] = n < p.dstate ? p.A[static_cast<int64_t>(c) * p.dstate + n] * kLog2e : 0.0f;
  const int64_t bc = (b * p.groups + g) * static_cast<int64_t>(Lp) * NS;
  scan_steps<NS>(w.dt, w.du, dir.BT + bc, dir.CT + bc, a2, L, w.ys, hs);

  for (int s = 0; s < L; s += VW) storev(w.ys + s, loadv(w.ys + s) + Dc * loadv(w.u + s));
  if (p.z) {
    load_steps(p.z, io, row, L, rev, w.dt);  // dt is free again
    for (int s = 0; s < L; s += VW) storev(w.ys + s, loadv(w.ys + s) * vsilu(loadv(w.dt + s)));
  }
  if (p.last_state) {
    float* ls = p.last_state + (b * p.dim + c) * static_cast<int64_t>(p.dstate);
    for (int n = 0; n < p.dstate; ++n) ls[n] = hs[n];
  }
}

// Pulls the row at element `offset` of an io-dtype array toward the cache before its use: a row's loads
// come in one burst that the hardware prefetchers do not run ahead of.
inline void prefetch_row(const void* base, int dtype, int64_t offset, int L) {
  if (base == nullptr) return;
  const int64_t size = dtype == PARTOOL_DTYPE_F32 ? 4 : 2;
  const char* row = static_cast<const char*>(base) + offset * size;
  for (int64_t i = 0; i < L * size; i += 64) __builtin_prefetch(row + i);
}

template <int NS>
void scan_rows_ns(const CpuScanJob& job, int64_t r0, int64_t r1, float* scratch) {
  const partool_scan_params_t& p0 = *job.dir[0].p;
  const int L = p0.length;
  const int64_t stride = scratch_stride(L);
  const RowBuffers w{scratch, scratch + stride, scratch + 2 * stride, scratch + 3 * stride, scratch + 4 * stride};
  const bool direct = job.ndir == 1 && !job.dir[0].reverse;  // ys is already the output row
  const RowOrder order(p0.batch, p0.dim, p0.batch_stride, p0.dim_stride);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = order.batch_of(r);
    const int c = order.channel_of(r);
    const int64_t next = order.batch_of(r + 1) * p0.batch_stride + order.channel_of(r + 1) * p0.dim_stride;
    for (int d = 0; r + 1 < r1 && d < job.ndir; ++d) {
      const partool_scan_params_t& pd = *job.dir[d].p;
      for (const void* x : {pd.delta, pd.u, pd.z}) prefetch_row(x, static_cast<int>(pd.io_dtype), next, L);
    }
    for (int d = 0; d < job.ndir; ++d) {
      scan_row<NS>(job.dir[d], b, c, w);
      if (direct) break;
      // Time t is scan step t, or step L-1-t in reverse.
      const int s0 = job.dir[d].reverse ? L - 1 : 0, ds = job.dir[d].reverse ? -1 : 1;
      if (d == 0) {
        for (int t = 0; t < L; ++t) w.yrow[t] = w.ys[s0 + ds * t];
      } else {
        for (int t = 0; t < L; ++t) w.yrow[t] += w.ys[s0 + ds * t];
      }
    }
    store_row(job.out, static_cast<int>(p0.io_dtype), b * p0.batch_stride + c * p0.dim_stride, L, job.out_scale,
              direct ? w.ys : w.yrow);
  }
}

}  // namespace

void PARTOOL_CAT(scan_rows, PARTOOL_ROWS_SUFFIX)(const CpuScanJob& job, int64_t r0, int64_t r1, float* scratch) {
  // The entry pads job.ns to a multiple of this unit's VW (cpu_entry.cpp: pick_rows).
  if (job.ns == 4) {
    scan_rows_ns<VW <= 4 ? 4 : VW>(job, r0, r1, scratch);
  } else if (job.ns == 8) {
    scan_rows_ns<VW <= 8 ? 8 : VW>(job, r0, r1, scratch);
  } else {
    scan_rows_ns<16>(job, r0, r1, scratch);
  }
}

// Depthwise conv of rows [r0, r1): each row is loaded once into a zero-padded float buffer laid out so
// that out[t] = bias + sum_k w[k] * buf[t + k] for both directions (causal: x shifted right by W-1;
// anti-causal: x as is with mirrored taps), then VW outputs at a time take W unaligned vector loads.
void PARTOOL_CAT(conv_rows, PARTOOL_ROWS_SUFFIX)(const partool_conv1d_params_t& p, int64_t r0, int64_t r1,
                                                 float* scratch) {
  const int L = p.length, W = p.width, dtype = static_cast<int>(p.io_dtype);
  const int Lv = (L + VW - 1) / VW * VW;  // outputs computed, a whole number of vectors
  float* buf = scratch;                    // Lv + W - 1 floats; only [shift, shift + L) is ever written
  float* out = scratch + scratch_stride(L) + 16;
  std::fill(buf, buf + Lv + W - 1, 0.0f);
  const int shift = p.reverse ? 0 : W - 1;  // where x[0] sits in buf
  const RowOrder order(p.batch, p.dim, p.batch_stride, p.dim_stride);
  for (int64_t r = r0; r < r1; ++r) {
    const int c = order.channel_of(r);
    const int64_t row = order.batch_of(r) * p.batch_stride + c * p.dim_stride;
    float taps[PARTOOL_MAX_CONV_WIDTH];
    for (int k = 0; k < W; ++k) taps[k] = p.weight[static_cast<int64_t>(c) * W + (p.reverse ? W - 1 - k : k)];
    load_steps(p.x, dtype, row, L, false, buf + shift);
    const vf bias = splat(p.bias ? p.bias[c] : 0.0f);
    for (int t = 0; t < Lv; t += VW) {
      vf acc = bias;
      for (int k = 0; k < W; ++k) acc += taps[k] * loadv(buf + t + k);
      storev(out + t, p.silu ? vsilu(acc) : acc);
    }
    store_row(p.out, dtype, row, L, 1.0f, out);
  }
}

}  // namespace partool
