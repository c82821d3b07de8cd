// CPU entry points: validate, transpose B/C to (batch, groups, length, state) float32 once per call,
// then split the batch x channel rows over std::threads, each running the row kernel of the widest
// instruction set this CPU has.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <thread>
#include <vector>

#include "common.hpp"
#include "cpu_kernels.hpp"

namespace partool {
namespace {

// The AVX2 row kernels run when the CPU has AVX2 + FMA, unless PARTOOL_CPU_ISA=base asks for the
// portable ones (tests use it to cover both on one machine).
bool cpu_has_avx2() {
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* isa = std::getenv("PARTOOL_CPU_ISA");
  return yes && !(isa != nullptr && std::strcmp(isa, "base") == 0);
#else
  return false;
#endif
}

ScanRowsFn pick_scan_rows() {
#if defined(__x86_64__) || defined(_M_X64)
  if (cpu_has_avx2()) return scan_rows_avx2;
#endif
  return scan_rows_base;
}

ConvRowsFn pick_conv_rows() {
#if defined(__x86_64__) || defined(_M_X64)
  if (cpu_has_avx2()) return conv_rows_avx2;
#endif
  return conv_rows_base;
}

// Runs fn(begin, end, worker) over [0, total) split into `threads` contiguous ranges.
template <typename Fn>
void parallel_for(int threads, int64_t total, Fn fn) {
  if (threads <= 1) {
    fn(int64_t{0}, total, 0);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  const int64_t step = (total + threads - 1) / threads;
  try {
    for (int w = 1; w < threads; ++w) {
      const int64_t b = std::min(total, w * step), e = std::min(total, b + step);
      pool.emplace_back([=] { fn(b, e, w); });
    }
  } catch (...) {  // could not start a thread: finish what started, then report
    for (auto& t : pool) t.join();
    throw;
  }
  fn(int64_t{0}, std::min(total, step), 0);
  for (auto& t : pool) t.join();
}

// B/C rows are padded to 4, 8 or 16 states; the row kernels round 4 up to their vector width.
int padded_states(int dstate) {
  const int ns = dstate <= 4 ? 4 : (dstate <= 8 ? 8 : 16);
  return (ns == 4 && cpu_has_avx2()) ? 8 : ns;
}

// B or C (batch, groups, dstate, length) in the io dtype -> (batch, groups, length, ns) float32.
void transpose_state(const partool_scan_params_t& p, const void* src, int ns, float* dst, int threads) {
  const int64_t L = p.length;
  const int dtype = static_cast<int>(p.io_dtype);
  parallel_for(threads, static_cast<int64_t>(p.batch) * p.groups, [&](int64_t b0, int64_t b1, int) {
    for (int64_t bg = b0; bg < b1; ++bg) {
      float* out = dst + bg * L * ns;
      const int64_t in = bg * p.dstate * L;
      for (int64_t t = 0; t < L; ++t) {
        for (int n = 0; n < ns; ++n) out[t * ns + n] = n < p.dstate ? load_io(src, dtype, in + n * L + t) : 0.0f;
      }
    }
  });
}

int run_scan(const partool_scan_params_t* dirs[2], const int reverse[2], int ndir, void* out, float scale,
             int num_threads) {
  const partool_scan_params_t& p = *dirs[0];
  const int ns = padded_states(p.dstate);
  const int64_t rows = static_cast<int64_t>(p.batch) * p.dim;
  const int threads = resolve_threads(num_threads, rows);
  const size_t per_dir = static_cast<size_t>(p.batch) * p.groups * p.length * ns;
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
      transpose_state(*dirs[d], dirs[d]->B, ns, BT, threads);
      transpose_state(*dirs[d], dirs[d]->C, ns, CT, threads);
      job.dir[d] = CpuDir{dirs[d], BT, CT, reverse[d]};
    }
    const ScanRowsFn rows_fn = pick_scan_rows();
    std::vector<std::vector<float>> scratch(static_cast<size_t>(threads), std::vector<float>(static_cast<size_t>(4 * scratch_stride(p.length))));
    parallel_for(threads, rows, [&](int64_t r0, int64_t r1, int w) { rows_fn(job, r0, r1, scratch[w].data()); });
  } catch (const std::bad_alloc&) {
    return fail(PARTOOL_ERR_OUT_OF_MEMORY, "selective scan (cpu): could not allocate %zu bytes of scratch",
                per_dir * 2 * ndir * sizeof(float));
  } catch (const std::exception& e) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "selective scan (cpu): %s", e.what());
  }
  clear_error();
  return PARTOOL_OK;
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
  const int64_t rows = static_cast<int64_t>(p->batch) * p->dim;
  const int threads = partool::resolve_threads(num_threads, rows);
  const partool::ConvRowsFn fn = partool::pick_conv_rows();
  try {
    partool::parallel_for(threads, rows, [&](int64_t r0, int64_t r1, int) { fn(*p, r0, r1); });
  } catch (const std::exception& e) {
    return partool::fail(PARTOOL_ERR_OUT_OF_MEMORY, "causal conv1d (cpu): %s", e.what());
  }
  partool::clear_error();
  return PARTOOL_OK;
}

}  // extern "C"
