// CPU entry points: validate, transpose B/C to (batch, groups, step, state) float32 once per call,
// then split the batch x channel rows over the caller's OpenMP team (parallel_for), each worker running
// the row kernel of the widest instruction set this CPU has (AVX-512, AVX2 + FMA, or SSE2 / NEON).
// The backward calls split the channels instead (each worker takes all batch rows of its channels).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

#include "common.hpp"
#include "cpu_kernels.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace partool {
namespace {

struct ScanRows {
  ScanRowsFn fn;
  int ns;  // states padded to 4, 8 or 16, at least the kernel's vector width
};

struct ScanBwdRows {
  ScanBwdChannelsFn fn;
  int ns;  // as ScanRows'
};

// States padded to the row kernels' vector lengths: 4, 8 or 16.
int padded_states(int dstate) { return dstate <= 4 ? 4 : (dstate <= 8 ? 8 : 16); }

#if PARTOOL_X86_ROW_KERNELS
// Instruction sets with row kernels, in increasing order.
enum class Isa { base = 0, avx2 = 1, avx512 = 2 };

// The widest set this CPU (and OS) supports, capped by PARTOOL_CPU_ISA=base|avx2 (tests use it to
// cover every row kernel on one machine).
Isa cpu_isa() {
  static const Isa best = [] {
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return Isa::base;
    const bool v4 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                    __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    return v4 ? Isa::avx512 : Isa::avx2;
  }();
  const char* cap = std::getenv("PARTOOL_CPU_ISA");
  if (cap != nullptr && std::strcmp(cap, "base") == 0) return Isa::base;
  if (cap != nullptr && std::strcmp(cap, "avx2") == 0) return std::min(best, Isa::avx2);
  return best;
}

// The row kernels' instruction set and padded state count for a scan: the AVX-512 kernel takes 16
// (padded) states in one zmm; fewer go to the AVX2 one (8 per ymm).
struct ScanIsa {
  Isa isa;
  int ns;
};
ScanIsa scan_isa(int dstate) {
  const int ns = padded_states(dstate);
  const Isa isa = cpu_isa();
  if (isa == Isa::avx512 && ns == 16) return {Isa::avx512, 16};
  if (isa == Isa::base) return {Isa::base, ns};
  return {Isa::avx2, std::max(ns, 8)};
}

ScanRows pick_scan_rows(int dstate) {
  const ScanIsa s = scan_isa(dstate);
  return {s.isa == Isa::avx512 ? scan_rows_avx512 : s.isa == Isa::avx2 ? scan_rows_avx2 : scan_rows_base, s.ns};
}

ScanBwdRows pick_scan_bwd_rows(int dstate) {
  const ScanIsa s = scan_isa(dstate);
  return {s.isa == Isa::avx512 ? scan_bwd_channels_avx512
          : s.isa == Isa::avx2 ? scan_bwd_channels_avx2
                               : scan_bwd_channels_base,
          s.ns};
}

ConvRowsFn pick_conv_rows() {
  switch (cpu_isa()) {
    case Isa::avx512:
      return conv_rows_avx512;
    case Isa::avx2:
      return conv_rows_avx2;
    default:
      return conv_rows_base;
  }
}

ConvBwdChannelsFn pick_conv_bwd_channels() {
  switch (cpu_isa()) {
    case Isa::avx512:
      return conv_bwd_channels_avx512;
    case Isa::avx2:
      return conv_bwd_channels_avx2;
    default:
      return conv_bwd_channels_base;
  }
}
#else
ScanRows pick_scan_rows(int dstate) { return {scan_rows_base, padded_states(dstate)}; }
ScanBwdRows pick_scan_bwd_rows(int dstate) { return {scan_bwd_channels_base, padded_states(dstate)}; }
ConvRowsFn pick_conv_rows() { return conv_rows_base; }
ConvBwdChannelsFn pick_conv_bwd_channels() { return conv_bwd_channels_base; }
#endif

// Runs fn(begin, end, worker) over [0, total) in chunks of `chunk` handed out on demand to up to `threads`
// workers (the caller is worker 0), so a worker that the OS preempts (the cores may be shared) does not
// hold the others up.
//
// With OpenMP the workers are the OpenMP team of the calling thread. Inside PyTorch that is the very team
// its own ops run on (the library links libgomp.so.1 by soname, which resolves to the copy torch has
// loaded): no threads to start, and none competing with PyTorch's workers, which spin for a while after
// each op (Vim-S forward on the `cpu` backend, b = 1, 2 cores, A/B in one process: 177 ms with
// std::threads started per call, 107 ms on PyTorch's team).
// Without OpenMP, std::threads are started per call; if one cannot be, the running ones finish the range.
// fn must not throw (an exception cannot leave an OpenMP region): callers allocate before the call.
template <typename Fn>
void parallel_for(int threads, int64_t total, int64_t chunk, Fn fn) {
  const int64_t chunks = (total + chunk - 1) / chunk;
  const int workers = static_cast<int>(std::min<int64_t>(threads, chunks));
  if (workers <= 1) {
    if (total > 0) fn(int64_t{0}, total, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  auto work = [&](int w) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      fn(c * chunk, std::min(total, (c + 1) * chunk), w);
    }
  };
#if defined(_OPENMP)
#pragma omp parallel num_threads(workers)
  work(omp_get_thread_num());
#else
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  try {
    for (int w = 1; w < workers; ++w) pool.emplace_back(work, w);
  } catch (const std::system_error&) {  // no more threads: the running ones take the rest
  }
  work(0);
  for (auto& t : pool) t.join();
#endif
}

// B or C (batch, groups, dstate, length; p's B/C strides) in the io dtype -> (batch, groups, Lp, ns) float32 in scan-step
// order (reversed when `reverse`), zero beyond dstate and beyond length (Lp = scratch_stride(length)).
void transpose_state(const partool_scan_params_t& p, const void* src, int ns, bool reverse, float* dst,
                     int threads) {
  const int64_t L = p.length, Lp = scratch_stride(p.length);
  const int dtype = static_cast<int>(p.io_dtype);
  parallel_for(threads, static_cast<int64_t>(p.batch) * p.groups, 1, [&](int64_t b0, int64_t b1, int) {
    for (int64_t bg = b0; bg < b1; ++bg) {
      float* out = dst + bg * Lp * ns;
      std::fill(out, out + Lp * ns, 0.0f);
      const int64_t in = (bg / p.groups) * p.bc_batch_stride + (bg % p.groups) * p.dstate * p.bc_state_stride;
      for (int n = 0; n < p.dstate; ++n) {
        const int64_t row = in + n * p.bc_state_stride;
        for (int64_t s = 0; s < L; ++s) out[s * ns + n] = load_io(src, dtype, row + (reverse ? L - 1 - s : s));
      }
    }
  });
}

int run_scan(const partool_scan_params_t* given[2], const int reverse[2], int ndir, void* out, float scale,
             int num_threads) {
  const partool_scan_params_t resolved[2] = {with_strides(*given[0]), with_strides(ndir == 2 ? *given[1] : *given[0])};
  const partool_scan_params_t* dirs[2] = {&resolved[0], &resolved[1]};
  const partool_scan_params_t& p = *dirs[0];
  const ScanRows rows_fn = pick_scan_rows(p.dstate);
  const int ns = rows_fn.ns;
  const int64_t rows = static_cast<int64_t>(p.batch) * p.dim;
  const int threads = resolve_threads(num_threads, rows);
  const size_t per_dir = static_cast<size_t>(p.batch) * p.groups * scratch_stride(p.length) * ns;
  try {
    std::vector<float> state(per_dir * 2 * ndir);
    CpuScanJob job{};
    job.ndir = ndir;
    job.out_scale = scale;
    job.out = out;
    job.ns = ns;
    for (int d = 0; d < ndir; ++d) {
      float* BT = state.data() + per_dir * 2 * d;
      float* CT = BT + per_dir;
      transpose_state(*dirs[d], dirs[d]->B, ns, reverse[d] != 0, BT, threads);
      transpose_state(*dirs[d], dirs[d]->C, ns, reverse[d] != 0, CT, threads);
      job.dir[d] = CpuDir{dirs[d], BT, CT, reverse[d]};
    }
    const size_t per_thread = static_cast<size_t>(kScratchRows * scratch_stride(p.length));
    std::vector<float> scratch(per_thread * static_cast<size_t>(threads));
    // About 8 chunks per worker: enough to even out preemption, few enough to keep rows contiguous.
    const int64_t chunk = std::max<int64_t>(1, rows / (8 * static_cast<int64_t>(threads)));
    parallel_for(threads, rows, chunk, [&](int64_t r0, int64_t r1, int w) {
      rows_fn.fn(job, r0, r1, scratch.data() + per_thread * static_cast<size_t>(w));
    });
  } catch (const std::bad_alloc&) {
    return fail(PARTOOL_ERR_OUT_OF_MEMORY, "selective scan (cpu): could not allocate %zu bytes of scratch",
                per_dir * 2 * ndir * sizeof(float));
  } catch (const std::exception& e) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "selective scan (cpu): %s", e.what());
  }
  clear_error();
  return PARTOOL_OK;
}

// `ncalls` conv1d calls of one shape (strides filled in) in one parallel region: rows [0, ncalls * rows).
int run_conv(const partool_conv1d_params_t* calls, int ncalls, int num_threads) {
  const partool_conv1d_params_t& p = calls[0];
  const int64_t rows = static_cast<int64_t>(p.batch) * p.dim, total = rows * ncalls;
  const int threads = resolve_threads(num_threads, total);
  const ConvRowsFn fn = pick_conv_rows();
  const int64_t per_thread = conv_scratch_floats(p.length);
  try {
    std::vector<float> scratch(static_cast<size_t>(per_thread * threads));
    const int64_t chunk = std::max<int64_t>(1, total / (8 * static_cast<int64_t>(threads)));
    parallel_for(threads, total, chunk, [&](int64_t r0, int64_t r1, int w) {
      for (int64_t r = r0; r < r1;) {  // the part of [r0, r1) in one call
        const int64_t call = r / rows, end = std::min(r1, (call + 1) * rows);
        fn(calls[call], r - call * rows, end - call * rows, scratch.data() + per_thread * w);
        r = end;
      }
    });
  } catch (const std::exception& e) {
    return fail(PARTOOL_ERR_OUT_OF_MEMORY, "causal conv1d (cpu): %s", e.what());
  }
  clear_error();
  return PARTOOL_OK;
}

// dB or dC (batch, groups, dstate, length) = the sum of the channel blocks' sums (each laid out as
// transpose_state's output, step order), added in block order.
void reduce_state_grads(const partool_scan_params_t& p, const float* sums, size_t per_worker, int ns, float* grad,
                        int blocks, int threads) {
  const int64_t L = p.length, Lp = scratch_stride(p.length);
  parallel_for(threads, static_cast<int64_t>(p.batch) * p.groups, 1, [&](int64_t b0, int64_t b1, int) {
    for (int64_t bg = b0; bg < b1; ++bg) {
      for (int n = 0; n < p.dstate; ++n) {
        float* out = grad + (bg * p.dstate + n) * L;
        const float* in = sums + bg * Lp * ns + n;
        for (int64_t t = 0; t < L; ++t) out[t] = in[(p.reverse ? L - 1 - t : t) * ns];
        for (int k = 1; k < blocks; ++k) {
          const float* more = in + per_worker * static_cast<size_t>(k);
          for (int64_t t = 0; t < L; ++t) out[t] += more[(p.reverse ? L - 1 - t : t) * ns];
        }
      }
    }
  });
}

// The scan backward: workers take whole channels (so dA, dD and ddelta_bias need no reduction); dB and
// dC, sums over a group's channels, go to one buffer per block of channels, added up in block order at
// the end. The blocks are a fixed partition of the channels (two per thread), so which worker ran which
// block does not change a bit of the result: a resumed training run repeats the uninterrupted one exactly.
int run_scan_bwd(const partool_scan_bwd_params_t& given, int num_threads) {
  partool_scan_bwd_params_t q = given;
  q.fwd = with_strides(given.fwd);
  const partool_scan_params_t& p = q.fwd;
  const ScanBwdRows rows_fn = pick_scan_bwd_rows(p.dstate);
  const int ns = rows_fn.ns;
  const int threads = resolve_threads(num_threads, p.dim);
  const size_t per_state = static_cast<size_t>(p.batch) * p.groups * scratch_stride(p.length) * ns;
  const size_t per_worker = 2 * per_state;  // its dB and dC sums
  const size_t per_scratch = static_cast<size_t>(scan_bwd_scratch_floats(p.length, ns));
  const size_t floats = 2 * per_state + (2 * per_worker + per_scratch) * static_cast<size_t>(threads);
  try {
    std::vector<float> state(2 * per_state);
    CpuScanBwdJob job{&q, state.data(), state.data() + per_state, ns};
    transpose_state(p, p.B, ns, p.reverse != 0, state.data(), threads);
    transpose_state(p, p.C, ns, p.reverse != 0, state.data() + per_state, threads);
    const int64_t chunk = (p.dim + 2 * threads - 1) / (2 * static_cast<int64_t>(threads));
    const int blocks = static_cast<int>((p.dim + chunk - 1) / chunk);
    std::vector<float> sums(per_worker * static_cast<size_t>(blocks));  // zeroed: a single worker fills block 0
    std::vector<float> scratch(per_scratch * static_cast<size_t>(threads));
    parallel_for(threads, p.dim, chunk, [&](int64_t c0, int64_t c1, int w) {
      float* dBT = sums.data() + per_worker * static_cast<size_t>(c0 / chunk);
      rows_fn.fn(job, c0, c1, scratch.data() + per_scratch * static_cast<size_t>(w), dBT, dBT + per_state);
    });
    reduce_state_grads(p, sums.data(), per_worker, ns, q.dB, blocks, threads);
    reduce_state_grads(p, sums.data() + per_state, per_worker, ns, q.dC, blocks, threads);
  } catch (const std::bad_alloc&) {
    return fail(PARTOOL_ERR_OUT_OF_MEMORY, "selective scan backward (cpu): could not allocate %zu bytes of scratch",
                floats * sizeof(float));
  }
  clear_error();
  return PARTOOL_OK;
}

int run_conv_bwd(const partool_conv1d_bwd_params_t& given, int num_threads) {
  partool_conv1d_bwd_params_t q = given;
  q.fwd = with_strides(given.fwd);
  const int threads = resolve_threads(num_threads, q.fwd.dim);
  const ConvBwdChannelsFn fn = pick_conv_bwd_channels();
  const size_t per_thread = static_cast<size_t>(conv_bwd_scratch_floats(q.fwd.length));
  try {
    std::vector<float> scratch(per_thread * static_cast<size_t>(threads));
    const int64_t chunk = std::max<int64_t>(1, q.fwd.dim / (8 * static_cast<int64_t>(threads)));
    parallel_for(threads, q.fwd.dim, chunk, [&](int64_t c0, int64_t c1, int w) {
      fn(q, c0, c1, scratch.data() + per_thread * static_cast<size_t>(w));
    });
  } catch (const std::bad_alloc&) {
    return fail(PARTOOL_ERR_OUT_OF_MEMORY, "causal conv1d backward (cpu): could not allocate %zu bytes of scratch",
                per_thread * static_cast<size_t>(threads) * sizeof(float));
  }
  clear_error();
  return PARTOOL_OK;
}

// Positions a worker normalises at a time: its sums of squares and scales stay in two small arrays.
constexpr int64_t kNormTile = 64;

// Residual add + RMSNorm of positions [t0, t1) of batch b. Channel-major data puts each channel's
// positions side by side, so both passes run over the channels with inner loops across positions that
// the compiler vectorises (kDtype is a constant: load_io/store_io fold to one conversion).
template <int kDtype>
void add_rms_norm_tile(const partool_add_rms_norm_params_t& p, int64_t b, int64_t t0, int64_t t1) {
  const int64_t n = t1 - t0;
  float sumsq[kNormTile] = {};
  for (int c = 0; c < p.dim; ++c) {
    const int64_t base = (b * p.dim + c) * p.length + t0;
    for (int64_t i = 0; i < n; ++i) {
      float r = load_io(p.x, kDtype, base + i);
      if (p.residual != nullptr) r += p.residual[base + i];
      if (p.residual_out != nullptr) p.residual_out[base + i] = r;
      sumsq[i] += r * r;
    }
  }
  float scale[kNormTile];
  for (int64_t i = 0; i < n; ++i) scale[i] = 1.0f / std::sqrt(sumsq[i] / static_cast<float>(p.dim) + p.eps);
  for (int c = 0; c < p.dim; ++c) {
    const int64_t base = (b * p.dim + c) * p.length + t0;
    const float w = p.weight[c];
    for (int64_t i = 0; i < n; ++i) {
      float r;
      if (p.residual_out != nullptr) {
        r = p.residual_out[base + i];
      } else {
        r = load_io(p.x, kDtype, base + i) + (p.residual != nullptr ? p.residual[base + i] : 0.0f);
      }
      store_io(p.out, kDtype, base + i, r * scale[i] * w);
    }
  }
}

}  // namespace
}  // namespace partool

extern "C" {

int partool_selective_scan_fwd_cpu(const partool_scan_params_t* p, int num_threads) {
  if (int s = partool::validate_scan(p, "partool_selective_scan_fwd_cpu")) return s;
  const partool_scan_params_t* dirs[2] = {p, nullptr};
  const int reverse[2] = {p->reverse != 0, 0};
  return partool::run_scan(dirs, reverse, 1, p->out, 1.0f, num_threads);
}

int partool_selective_scan_bidir_fwd_cpu(const partool_bidir_scan_params_t* p, int num_threads) {
  if (int s = partool::validate_bidir(p, "partool_selective_scan_bidir_fwd_cpu")) return s;
  const partool_scan_params_t* dirs[2] = {&p->fwd, &p->bwd};
  const int reverse[2] = {0, 1};
  return partool::run_scan(dirs, reverse, 2, p->out, p->out_scale, num_threads);
}

int partool_causal_conv1d_fwd_cpu(const partool_conv1d_params_t* p, int num_threads) {
  if (int s = partool::validate_conv(p, "partool_causal_conv1d_fwd_cpu")) return s;
  const partool_conv1d_params_t calls[1] = {partool::with_strides(*p)};
  return partool::run_conv(calls, 1, num_threads);
}

int partool_causal_conv1d_pair_fwd_cpu(const partool_conv1d_pair_params_t* p, int num_threads) {
  if (int s = partool::validate_conv_pair(p, "partool_causal_conv1d_pair_fwd_cpu")) return s;
  const partool_conv1d_params_t calls[2] = {partool::with_strides(p->first), partool::with_strides(p->second)};
  return partool::run_conv(calls, 2, num_threads);
}

int partool_selective_scan_bwd_cpu(const partool_scan_bwd_params_t* p, int num_threads) {
  if (int s = partool::validate_scan_bwd(p, "partool_selective_scan_bwd_cpu")) return s;
  return partool::run_scan_bwd(*p, num_threads);
}

int partool_causal_conv1d_bwd_cpu(const partool_conv1d_bwd_params_t* p, int num_threads) {
  if (int s = partool::validate_conv_bwd(p, "partool_causal_conv1d_bwd_cpu")) return s;
  return partool::run_conv_bwd(*p, num_threads);
}

int partool_add_rms_norm_fwd_cpu(const partool_add_rms_norm_params_t* p, int num_threads) {
  if (int s = partool::validate_add_rms_norm(p, "partool_add_rms_norm_fwd_cpu")) return s;
  const int64_t tiles = (p->length + partool::kNormTile - 1) / partool::kNormTile;
  const int64_t items = static_cast<int64_t>(p->batch) * tiles;
  const int threads = partool::resolve_threads(num_threads, items);
  partool::parallel_for(threads, items, 1, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / tiles, t0 = (i % tiles) * partool::kNormTile;
      const int64_t t1 = std::min<int64_t>(p->length, t0 + partool::kNormTile);
      switch (p->io_dtype) {
        case PARTOOL_DTYPE_F16:
          partool::add_rms_norm_tile<PARTOOL_DTYPE_F16>(*p, b, t0, t1);
          break;
        case PARTOOL_DTYPE_BF16:
          partool::add_rms_norm_tile<PARTOOL_DTYPE_BF16>(*p, b, t0, t1);
          break;
        default:
          partool::add_rms_norm_tile<PARTOOL_DTYPE_F32>(*p, b, t0, t1);
      }
    }
  });
  partool::clear_error();
  return PARTOOL_OK;
}

}  // extern "C"
