// Row kernels of the CPU scan and conv1d. Included by one .cpp per instruction set, which defines
// PARTOOL_ROWS_SUFFIX (base, avx2) and is compiled with that set's flags. The state vector, softplus
// and SiLU run on explicit SIMD vectors (exp and log are the Cephes polynomials, ~2 ulp).
#include <cmath>
#include <cstdint>

#include "cpu_kernels.hpp"

#define PARTOOL_CAT2(a, b) a##_##b
#define PARTOOL_CAT(a, b) PARTOOL_CAT2(a, b)

namespace partool {
namespace {

// GCC/Clang vector extensions: one source, lowered to AVX2 in the avx2 unit and to SSE2/NEON in
// the base unit (auto-vectorisation of the same loops failed on the selects in exp).
#if defined(__AVX2__)
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

// e^x, clamped to about [-87, 88]: Cephes expf (~2 ulp).
inline vf vexp(vf x) {
  x = x < -87.33654f ? splat(-87.33654f) : x;
  x = x > 88.37626f ? splat(88.37626f) : x;
  vf fx = x * 1.44269504088896341f + 0.5f;
  const vf tr = __builtin_convertvector(__builtin_convertvector(fx, vi), vf);
  fx = tr > fx ? tr - 1.0f : tr;  // floor
  const vf r = x - fx * 0.693359375f + fx * 2.12194440e-4f;
  const vf r2 = r * r;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const vi e = (__builtin_convertvector(fx, vi) + 127) << 23;
  return p * reinterpret_cast<const vf&>(e);
}

// ln(x) for normal positive x: Cephes logf.
inline vf vlog(vf x) {
  const vi bits = reinterpret_cast<const vi&>(x);
  vi e = ((bits >> 23) & 0xff) - 126;
  const vi mbits = (bits & 0x007fffff) | 0x3f000000;
  vf m = reinterpret_cast<const vf&>(mbits);  // mantissa in [0.5, 1)
  const vi small = m < 0.707106781186547524f;  // all ones where true
  e = e + small;                               // -1 where small
  m = small ? m + m - 1.0f : m - 1.0f;
  const vf m2 = m * m;
  vf p = splat(7.0376836292e-2f);
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  const vf fe = __builtin_convertvector(e, vf);
  const vf y = m * m2 * p + fe * -2.12194440e-4f - 0.5f * m2;
  return m + y + fe * 0.693359375f;
}

// softplus(x) = log1p(exp(x)), and x itself above 20 (torch's and mamba_ssm's threshold).
// log1p(v) = log(1+v) * v / ((1+v) - 1) keeps the precision of tiny v (Goldberg's trick).
inline vf vsoftplus(vf x) {
  const vf v = vexp(x < 20.0f ? x : splat(20.0f));
  const vf w = 1.0f + v;
  const vf d = w - 1.0f;
  const vf l1p = d == 0.0f ? v : vlog(w) * (v / (d == 0.0f ? splat(1.0f) : d));
  return x > 20.0f ? x : l1p;
}

inline vf vsilu(vf x) { return x / (1.0f + vexp(-x)); }

inline float hsum(vf v) {
  float s = 0.0f;
  for (int i = 0; i < VW; ++i) s += v[i];
  return s;
}

// Applies f to x[0 .. n) in place, VW at a time; x must have room for n rounded up to VW.
template <typename Fn>
inline void map_inplace(float* x, int n, Fn f) {
  for (int t = 0; t < n; t += VW) storev(x + t, f(loadv(x + t)));
}

// One direction of one row: writes (acc ? +=: =) its per-step output y*silu(z) + D*u into yrow.
template <int NS>
void scan_row(const CpuDir& dir, int64_t b, int c, bool acc, float* yrow, float* dt, float* du, float* gate) {
  static_assert(NS % VW == 0, "states are padded to a multiple of the vector width");
  constexpr int NV = NS / VW;
  const partool_scan_params_t& p = *dir.p;
  const int L = p.length, io = static_cast<int>(p.io_dtype);
  const int64_t row = (b * p.dim + c) * static_cast<int64_t>(L);
  const int g = c / (p.dim / p.groups);
  const float bias = p.delta_bias ? p.delta_bias[c] : 0.0f;
  const float Dc = p.D ? p.D[c] : 0.0f;
  for (int t = 0; t < L; ++t) dt[t] = load_io(p.delta, io, row + t) + bias;
  if (p.delta_softplus) map_inplace(dt, L, vsoftplus);
  for (int t = 0; t < L; ++t) {
    const float uu = load_io(p.u, io, row + t);
    du[t] = dt[t] * uu;
    gate[t] = Dc * uu;  // D*u, the skip term
  }
  float a_s[NS];
  for (int n = 0; n < NS; ++n) a_s[n] = n < p.dstate ? p.A[static_cast<int64_t>(c) * p.dstate + n] : 0.0f;
  vf a[NV], h[NV];
  for (int v = 0; v < NV; ++v) {
    a[v] = loadv(a_s + v * VW);
    h[v] = splat(0.0f);
  }
  const float* BT = dir.BT + (b * p.groups + g) * static_cast<int64_t>(L) * NS;
  const float* CT = dir.CT + (b * p.groups + g) * static_cast<int64_t>(L) * NS;
  for (int s = 0; s < L; ++s) {
    const int t = dir.reverse ? L - 1 - s : s;
    const float* Bt = BT + static_cast<int64_t>(t) * NS;
    const float* Ct = CT + static_cast<int64_t>(t) * NS;
    vf y = splat(0.0f);
    for (int v = 0; v < NV; ++v) {
      h[v] = vexp(dt[t] * a[v]) * h[v] + du[t] * loadv(Bt + v * VW);
      y += loadv(Ct + v * VW) * h[v];
    }
    gate[t] += hsum(y);
  }
  if (p.z) {
    for (int t = 0; t < L; ++t) du[t] = load_io(p.z, io, row + t);
    map_inplace(du, L, vsilu);
    for (int t = 0; t < L; ++t) gate[t] *= du[t];
  }
  if (p.last_state) {
    float hs[NS];
    for (int v = 0; v < NV; ++v) storev(hs + v * VW, h[v]);
    float* ls = p.last_state + (b * p.dim + c) * static_cast<int64_t>(p.dstate);
    for (int n = 0; n < p.dstate; ++n) ls[n] = hs[n];
  }
  if (acc) {
    for (int t = 0; t < L; ++t) yrow[t] += gate[t];
  } else {
    for (int t = 0; t < L; ++t) yrow[t] = gate[t];
  }
}

template <int NS>
void scan_rows_ns(const CpuScanJob& job, int64_t r0, int64_t r1, float* scratch) {
  const partool_scan_params_t& p0 = *job.dir[0].p;
  const int L = p0.length;
  const int64_t stride = scratch_stride(L);
  float* yrow = scratch;
  float* dt = scratch + stride;
  float* du = scratch + 2 * stride;
  float* gate = scratch + 3 * stride;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / p0.dim;
    const int c = static_cast<int>(r % p0.dim);
    for (int d = 0; d < job.ndir; ++d) scan_row<NS>(job.dir[d], b, c, d > 0, yrow, dt, du, gate);
    for (int t = 0; t < L; ++t) store_io(job.out, static_cast<int>(p0.io_dtype), r * L + t, job.out_scale * yrow[t]);
  }
}

}  // namespace

void PARTOOL_CAT(scan_rows, PARTOOL_ROWS_SUFFIX)(const CpuScanJob& job, int64_t r0, int64_t r1, float* scratch) {
  if (VW <= 4 && job.ns <= 4) {
    scan_rows_ns<VW <= 4 ? 4 : VW>(job, r0, r1, scratch);
  } else if (job.ns <= 8) {
    scan_rows_ns<8>(job, r0, r1, scratch);
  } else {
    scan_rows_ns<16>(job, r0, r1, scratch);
  }
}

void PARTOOL_CAT(conv_rows, PARTOOL_ROWS_SUFFIX)(const partool_conv1d_params_t& p, int64_t r0, int64_t r1) {
  const int L = p.length, W = p.width, dtype = static_cast<int>(p.io_dtype);
  for (int64_t r = r0; r < r1; ++r) {
    const int c = static_cast<int>(r % p.dim);
    const float* w = p.weight + static_cast<int64_t>(c) * W;
    const float bias = p.bias ? p.bias[c] : 0.0f;
    const int64_t row = r * L;
    for (int t = 0; t < L; ++t) {
      float acc = bias;
      for (int k = 0; k < W; ++k) {
        // causal: x[t - (W-1) + k]; anti-causal: x[t + (W-1) - k]
        const int s = p.reverse ? t + (W - 1) - k : t - (W - 1) + k;
        if (s >= 0 && s < L) acc += w[k] * load_io(p.x, dtype, row + s);
      }
      store_io(p.out, dtype, row + t, p.silu ? acc / (1.0f + std::exp(-acc)) : acc);
    }
  }
}

}  // namespace partool
