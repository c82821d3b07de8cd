// partool_kernels_check: every entry point of libpartool_kernels against scalar double-precision
// references written from the formulas in partool_kernels.h, with no PyTorch and no Python.
//
// Why a C++ program beside the Python tests: it runs wherever the library is built, so it checks builds
// the Python suite never sees: the aarch64 CPU kernels (a Jetson's CPU; CI cross-builds them and runs this
// under qemu-aarch64) and, when the library has CUDA and a GPU is present, the CUDA kernels on that GPU
// (a Jetson without PyTorch included), the whole sweep with the default scan kernel and then the scans with
// every explicit partool_scan_cuda_variant_t (the choices TensorRT's tactics and partool's tuner make). Each case fills strided buffers with random values rounded to the io
// dtype, runs the kernel, and compares with the reference computed on the same rounded values:
// max |kernel - reference| / max |reference| within 1e-5 (float32), 2e-3 (float16) or 1e-2 (bfloat16),
// the padding between rows untouched, and on the CPU the same bits from 1 and 3 threads. The backward calls
// (float32 gradients) are held to the same tolerances, each gradient against its own largest value, with
// guard elements after every gradient that must keep their sentinel.
//
//   partool_kernels_check [--cpu-only] [--verbose] [--variants auto,NAME,...]
//
// exit status 0 when every case passes, 1 otherwise, 2 for bad arguments. --variants narrows the CUDA part to
// the named scan variants ("auto" runs the whole sweep, an explicit name such as rows/states4 its scans); the
// default is auto and every explicit variant.
//
// Built against libpartool_kernels_cudaemu (PARTOOL_CHECK_CUDA_EMULATED) as partool_kernels_check_cudaemu,
// it runs the same cases through the CUDA kernels on the CPU emulator.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "partool_kernels.h"

#ifdef PARTOOL_CHECK_CUDA
#include <cuda_runtime_api.h>
#endif

namespace {

// ---------------------------------------------------------------- values in an io dtype

float bits_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// IEEE binary16 from a float, round to nearest even (finite values of moderate size only, as here).
uint16_t to_half(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000u : 0u;
  const float a = std::fabs(f);
  if (a < 6.103515625e-05f) {  // below the smallest normal half: a multiple of 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  int exp;
  const float m = std::frexp(a, &exp);  // a = m * 2^exp, m in [0.5, 1)
  uint32_t mant = static_cast<uint32_t>(std::nearbyint(std::ldexp(m, 11)));  // 11 bits, the leading 1 included
  uint32_t biased = static_cast<uint32_t>(exp + 14);
  if (mant == 2048u) mant = 1024u, ++biased;  // rounded up to the next power of two
  return static_cast<uint16_t>(sign | (biased << 10) | (mant - 1024u));
}

float from_half(uint16_t h) {
  const float sign = (h & 0x8000u) ? -1.0f : 1.0f;
  const int biased = (h >> 10) & 31, mant = h & 1023;
  if (biased == 0) return sign * std::ldexp(static_cast<float>(mant), -24);
  return sign * std::ldexp(1.0f + static_cast<float>(mant) / 1024.0f, biased - 15);
}

uint16_t to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

float from_bf16(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

const char* dtype_name(partool_dtype_t t) {
  return t == PARTOOL_DTYPE_F16 ? "f16" : t == PARTOOL_DTYPE_BF16 ? "bf16" : "f32";
}

double tolerance(partool_dtype_t t) { return t == PARTOOL_DTYPE_F16 ? 2e-3 : t == PARTOOL_DTYPE_BF16 ? 1e-2 : 1e-5; }

// n elements of one dtype on the host. set() rounds, so get() returns exactly what the kernel reads.
struct Buffer {
  partool_dtype_t dtype;
  std::vector<unsigned char> bytes;

  Buffer() : dtype(PARTOOL_DTYPE_F32) {}
  Buffer(partool_dtype_t t, size_t n) : dtype(t), bytes(n * (t == PARTOOL_DTYPE_F32 ? 4 : 2)) {}
  size_t width() const { return dtype == PARTOOL_DTYPE_F32 ? 4 : 2; }
  size_t size() const { return bytes.size() / width(); }
  void* data() { return bytes.data(); }

  void set(size_t i, float v) {
    if (dtype == PARTOOL_DTYPE_F32) {
      std::memcpy(&bytes[4 * i], &v, 4);
      return;
    }
    const uint16_t h = dtype == PARTOOL_DTYPE_F16 ? to_half(v) : to_bf16(v);
    std::memcpy(&bytes[2 * i], &h, 2);
  }
  float get(size_t i) const {
    if (dtype == PARTOOL_DTYPE_F32) {
      float v;
      std::memcpy(&v, &bytes[4 * i], 4);
      return v;
    }
    uint16_t h;
    std::memcpy(&h, &bytes[2 * i], 2);
    return dtype == PARTOOL_DTYPE_F16 ? from_half(h) : from_bf16(h);
  }
};

// A buffer of normal random values.
Buffer normal(std::mt19937& gen, partool_dtype_t t, size_t n, float mean, float stddev) {
  std::normal_distribution<float> dist(mean, stddev);
  Buffer b(t, n);
  for (size_t i = 0; i < n; ++i) b.set(i, dist(gen));
  return b;
}

constexpr float kSentinel = 7.0f;  // exact in every dtype; what output padding must still hold

Buffer sentinel(partool_dtype_t t, size_t n) {
  Buffer b(t, n);
  for (size_t i = 0; i < n; ++i) b.set(i, kSentinel);
  return b;
}

double silu(double v) { return v / (1.0 + std::exp(-v)); }

// ---------------------------------------------------------------- where a case runs

// The CPU entry points on the host buffers, or the CUDA ones on device copies of them.
class Target {
 public:
  virtual ~Target() = default;
  virtual std::string name() const = 0;
  // The pointer a kernel gets for `b` (the same one for the same buffer); outputs are copied back by finish().
  virtual void* place(Buffer& b, bool output) = 0;
  virtual int scan(const partool_scan_params_t* p) = 0;
  virtual int bidir(const partool_bidir_scan_params_t* p) = 0;
  virtual int conv(const partool_conv1d_params_t* p) = 0;
  virtual int conv_pair(const partool_conv1d_pair_params_t* p) = 0;
  virtual int norm(const partool_add_rms_norm_params_t* p) = 0;
  virtual int scan_bwd(const partool_scan_bwd_params_t* p) = 0;
  virtual int conv_bwd(const partool_conv1d_bwd_params_t* p) = 0;
  virtual std::string finish() { return ""; }  // "" or what went wrong
};

class CpuTarget : public Target {
 public:
  explicit CpuTarget(int threads) : threads_(threads) {}
  std::string name() const override { return "cpu/" + std::to_string(threads_) + "t"; }
  void* place(Buffer& b, bool) override { return b.data(); }
  int scan(const partool_scan_params_t* p) override { return partool_selective_scan_fwd_cpu(p, threads_); }
  int bidir(const partool_bidir_scan_params_t* p) override { return partool_selective_scan_bidir_fwd_cpu(p, threads_); }
  int conv(const partool_conv1d_params_t* p) override { return partool_causal_conv1d_fwd_cpu(p, threads_); }
  int conv_pair(const partool_conv1d_pair_params_t* p) override { return partool_causal_conv1d_pair_fwd_cpu(p, threads_); }
  int norm(const partool_add_rms_norm_params_t* p) override { return partool_add_rms_norm_fwd_cpu(p, threads_); }
  int scan_bwd(const partool_scan_bwd_params_t* p) override { return partool_selective_scan_bwd_cpu(p, threads_); }
  int conv_bwd(const partool_conv1d_bwd_params_t* p) override { return partool_causal_conv1d_bwd_cpu(p, threads_); }

 private:
  int threads_;
};

#if defined(PARTOOL_CHECK_CUDA) || defined(PARTOOL_CHECK_CUDA_EMULATED)
// The CUDA entry points, on the default stream; the scans with one partool_scan_cuda_variant_t.
class CudaCalls : public Target {
 public:
  explicit CudaCalls(int variant) : variant_(variant) {}
  int scan(const partool_scan_params_t* p) override {
    return partool_selective_scan_fwd_cuda_variant(p, variant_, nullptr);
  }
  int bidir(const partool_bidir_scan_params_t* p) override {
    return partool_selective_scan_bidir_fwd_cuda_variant(p, variant_, nullptr);
  }
  int conv(const partool_conv1d_params_t* p) override { return partool_causal_conv1d_fwd_cuda(p, nullptr); }
  int conv_pair(const partool_conv1d_pair_params_t* p) override { return partool_causal_conv1d_pair_fwd_cuda(p, nullptr); }
  int norm(const partool_add_rms_norm_params_t* p) override { return partool_add_rms_norm_fwd_cuda(p, nullptr); }
  int scan_bwd(const partool_scan_bwd_params_t* p) override { return partool_selective_scan_bwd_cuda(p, nullptr); }
  int conv_bwd(const partool_conv1d_bwd_params_t* p) override { return partool_causal_conv1d_bwd_cuda(p, nullptr); }

 protected:
  std::string variant_name() const { return partool_scan_cuda_variant_name(variant_); }
  int variant_;
};
#endif

#ifdef PARTOOL_CHECK_CUDA_EMULATED
// libpartool_kernels_cudaemu: the CUDA kernels run on the CPU emulator, synchronously, on host pointers.
// It shows that the cases and tolerances here hold for the CUDA kernels, so that a failure on a real GPU
// points at the GPU build or the device, not at this program.
class EmulatedCudaTarget : public CudaCalls {
 public:
  using CudaCalls::CudaCalls;
  std::string name() const override { return "cuda-emulated/" + variant_name(); }
  void* place(Buffer& b, bool) override { return b.data(); }
};
#endif

#ifdef PARTOOL_CHECK_CUDA
class CudaTarget : public CudaCalls {
 public:
  using CudaCalls::CudaCalls;
  ~CudaTarget() override { release(); }
  std::string name() const override { return "cuda/" + variant_name(); }
  void* place(Buffer& b, bool output) override {
    auto it = copies_.find(&b);
    if (it != copies_.end()) {
      it->second.output = it->second.output || output;
      return it->second.ptr;
    }
    void* ptr = nullptr;
    if (cudaMalloc(&ptr, b.bytes.size()) != cudaSuccess ||
        cudaMemcpy(ptr, b.data(), b.bytes.size(), cudaMemcpyHostToDevice) != cudaSuccess) {
      error_ = "cudaMalloc/cudaMemcpy failed";
    }
    copies_[&b] = {ptr, output};
    return ptr;
  }
  std::string finish() override {
    const cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess && error_.empty()) error_ = std::string("kernel failed: ") + cudaGetErrorString(err);
    for (auto& [buffer, copy] : copies_) {
      if (copy.output && error_.empty() &&
          cudaMemcpy(buffer->data(), copy.ptr, buffer->bytes.size(), cudaMemcpyDeviceToHost) != cudaSuccess) {
        error_ = "cudaMemcpy back failed";
      }
    }
    release();
    std::string out = error_;
    error_.clear();
    return out;
  }

 private:
  struct Copy {
    void* ptr;
    bool output;
  };
  void release() {
    for (auto& entry : copies_) cudaFree(entry.second.ptr);
    copies_.clear();
  }
  std::map<Buffer*, Copy> copies_;
  std::string error_;
};

// "" when a CUDA device is usable, else why not.
std::string cuda_unusable() {
  if (!partool_kernels_has_cuda()) return "the library was built without CUDA";
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  return count > 0 ? "" : "no CUDA device";
}
#endif

// ---------------------------------------------------------------- results

struct Report {
  bool verbose = false;
  int cases = 0, failures = 0;
  std::map<std::string, double> worst;  // worst relative error per "target dtype"

  void record(const std::string& target, const std::string& what, partool_dtype_t dtype, double err,
              const std::string& problem) {
    ++cases;
    const bool ok = problem.empty() && err <= tolerance(dtype);
    const std::string key = target + " " + dtype_name(dtype);
    worst[key] = std::max(worst[key], err);
    if (!ok) ++failures;
    if (!ok || verbose) {
      std::printf("%s %-6s %-64s rel err %.2e (tol %.0e)%s%s\n", ok ? "ok  " : "FAIL", target.c_str(), what.c_str(), err,
                  tolerance(dtype), problem.empty() ? "" : "  ", problem.c_str());
    }
  }
  void expect(bool ok, const std::string& what) {
    ++cases;
    if (!ok) ++failures;
    if (!ok || verbose) std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  }
};

// Relative error of a kernel output against a dense reference; `at(i)` maps the reference's i-th
// element to the output buffer's index.
template <typename Index>
double compare(const Buffer& got, const std::vector<double>& want, Index at) {
  double err = 0.0, scale = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = got.get(at(i));
    if (!std::isfinite(g)) return INFINITY;
    err = std::max(err, std::fabs(g - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return err / scale;
}

// "" when every element of `out` outside the rows still holds the sentinel.
std::string padding_untouched(const Buffer& out, const std::vector<bool>& in_rows) {
  for (size_t i = 0; i < out.size(); ++i) {
    if (!in_rows[i] && out.get(i) != kSentinel) return "padding element " + std::to_string(i) + " overwritten";
  }
  return "";
}

// ---------------------------------------------------------------- selective scan

struct ScanCase {
  int batch, dim, dstate, length, groups;
  partool_dtype_t dtype;
  bool z, D, bias, softplus, last_state, padded;

  std::string describe(const char* kind) const {
    char text[200];
    std::snprintf(text, sizeof text, "%s b%d d%d n%d l%d g%d %s%s%s%s%s%s%s", kind, batch, dim, dstate, length, groups,
                  dtype_name(dtype), z ? " z" : "", D ? " D" : "", bias ? " bias" : "", softplus ? " softplus" : "",
                  last_state ? " last" : "", padded ? " strided" : "");
    return text;
  }
};

// One direction's inputs in the ABI's layouts: io tensors (b, c, t) at b*bs + c*ds + t, B/C (b, g, n, t)
// at b*bcb + (g*n_state + n)*bcs + t. Padded cases leave gaps between rows (ABI 2 strides).
struct ScanData {
  ScanCase c;
  int64_t bs, ds, bcb, bcs;
  Buffer u, delta, z, B, C, A, D, bias;

  ScanData(const ScanCase& sc, std::mt19937& gen)
      : c(sc),
        bs(sc.padded ? int64_t(sc.dim) * (sc.length + 3) + 5 : int64_t(sc.dim) * sc.length),
        ds(sc.padded ? sc.length + 3 : sc.length),
        bcb(sc.padded ? int64_t(sc.groups) * sc.dstate * (sc.length + 2) + 1 : int64_t(sc.groups) * sc.dstate * sc.length),
        bcs(sc.padded ? sc.length + 2 : sc.length),
        u(normal(gen, sc.dtype, io_size(), 0.0f, 1.0f)),
        // softplus(delta + bias) ~ 0.3, as in trained Mamba layers; without softplus delta must be positive
        delta(normal(gen, sc.dtype, io_size(), sc.softplus ? -1.0f : 0.3f, sc.softplus ? 0.5f : 0.1f)),
        z(normal(gen, sc.dtype, io_size(), 0.0f, 1.0f)),
        B(normal(gen, sc.dtype, bc_size(), 0.0f, 1.0f)),
        C(normal(gen, sc.dtype, bc_size(), 0.0f, 1.0f)),
        A(normal(gen, PARTOOL_DTYPE_F32, size_t(sc.dim) * sc.dstate, 0.0f, 0.5f)),
        D(normal(gen, PARTOOL_DTYPE_F32, sc.dim, 0.0f, 1.0f)),
        bias(normal(gen, PARTOOL_DTYPE_F32, sc.dim, 0.0f, 0.1f)) {
    for (size_t i = 0; i < A.size(); ++i) A.set(i, -std::exp(A.get(i)));  // A < 0: a decaying state
    if (!sc.softplus) {
      for (size_t i = 0; i < delta.size(); ++i) delta.set(i, std::fabs(delta.get(i)) + 0.01f);
    }
  }
  size_t io_size() const { return size_t(bs) * c.batch; }
  size_t bc_size() const { return size_t(bcb) * c.batch; }
  size_t io(int b, int ch, int t) const { return size_t(b * bs + ch * ds + t); }
  size_t bc(int b, int g, int n, int t) const { return size_t(b * bcb + (int64_t(g) * c.dstate + n) * bcs + t); }
  size_t dense(size_t i) const {  // the dense reference's i-th (b, c, t) -> its strided index
    const int t = int(i % c.length), ch = int(i / c.length % c.dim), b = int(i / c.length / c.dim);
    return io(b, ch, t);
  }
  std::vector<bool> rows() const {
    std::vector<bool> in(io_size(), false);
    for (size_t i = 0; i < size_t(c.batch) * c.dim * c.length; ++i) in[dense(i)] = true;
    return in;
  }

  // The ABI's formula, in double; y dense (b, c, t), last (b, c, n).
  void reference(bool reverse, std::vector<double>& y, std::vector<double>& last) const {
    y.assign(size_t(c.batch) * c.dim * c.length, 0.0);
    last.assign(size_t(c.batch) * c.dim * c.dstate, 0.0);
    const int per_group = c.dim / c.groups;
    std::vector<double> h(c.dstate);
    for (int b = 0; b < c.batch; ++b) {
      for (int ch = 0; ch < c.dim; ++ch) {
        const int g = ch / per_group;
        std::fill(h.begin(), h.end(), 0.0);
        for (int s = 0; s < c.length; ++s) {
          const int t = reverse ? c.length - 1 - s : s;
          const double x = u.get(io(b, ch, t));
          double dt = delta.get(io(b, ch, t)) + (c.bias ? bias.get(ch) : 0.0);
          if (c.softplus) dt = std::log1p(std::exp(dt));
          double acc = 0.0;
          for (int n = 0; n < c.dstate; ++n) {
            h[n] = std::exp(dt * A.get(size_t(ch) * c.dstate + n)) * h[n] + dt * B.get(bc(b, g, n, t)) * x;
            acc += C.get(bc(b, g, n, t)) * h[n];
          }
          if (c.D) acc += D.get(ch) * x;
          if (c.z) acc *= silu(z.get(io(b, ch, t)));
          y[(size_t(b) * c.dim + ch) * c.length + t] = acc;
        }
        for (int n = 0; n < c.dstate; ++n) last[(size_t(b) * c.dim + ch) * c.dstate + n] = h[n];
      }
    }
  }

  partool_scan_params_t params(Target& target, bool reverse) {
    partool_scan_params_t p{};
    p.batch = c.batch, p.dim = c.dim, p.dstate = c.dstate, p.length = c.length, p.groups = c.groups;
    p.io_dtype = c.dtype;
    p.u = target.place(u, false), p.delta = target.place(delta, false);
    p.A = static_cast<const float*>(target.place(A, false));
    p.B = target.place(B, false), p.C = target.place(C, false);
    p.D = c.D ? static_cast<const float*>(target.place(D, false)) : nullptr;
    p.z = c.z ? target.place(z, false) : nullptr;
    p.delta_bias = c.bias ? static_cast<const float*>(target.place(bias, false)) : nullptr;
    p.delta_softplus = c.softplus, p.reverse = reverse;
    if (c.padded) p.batch_stride = bs, p.dim_stride = ds, p.bc_batch_stride = bcb, p.bc_state_stride = bcs;
    return p;
  }
};

// Kernel outputs of one run: out (io dtype, the io layout) and the last states (float32, dense).
struct ScanOutputs {
  Buffer out, last_fwd, last_bwd;
  int status = -1;
  std::string problem;
};

ScanOutputs run_scan(Target& target, ScanData& d, bool reverse) {
  ScanOutputs r;
  r.out = sentinel(d.c.dtype, d.io_size());
  r.last_fwd = sentinel(PARTOOL_DTYPE_F32, size_t(d.c.batch) * d.c.dim * d.c.dstate);
  partool_scan_params_t p = d.params(target, reverse);
  p.out = target.place(r.out, true);
  p.last_state = d.c.last_state ? static_cast<float*>(target.place(r.last_fwd, true)) : nullptr;
  r.status = target.scan(&p);
  r.problem = target.finish();
  return r;
}

ScanOutputs run_bidir(Target& target, ScanData& fwd, ScanData& bwd) {
  const size_t states = size_t(fwd.c.batch) * fwd.c.dim * fwd.c.dstate;
  ScanOutputs r;
  r.out = sentinel(fwd.c.dtype, fwd.io_size());
  r.last_fwd = sentinel(PARTOOL_DTYPE_F32, states);
  r.last_bwd = sentinel(PARTOOL_DTYPE_F32, states);
  partool_bidir_scan_params_t p{};
  p.fwd = fwd.params(target, false), p.bwd = bwd.params(target, true);
  p.out = target.place(r.out, true), p.out_scale = 0.5f;
  if (fwd.c.last_state) {
    p.fwd.last_state = static_cast<float*>(target.place(r.last_fwd, true));
    p.bwd.last_state = static_cast<float*>(target.place(r.last_bwd, true));
  }
  r.status = target.bidir(&p);
  r.problem = target.finish();
  return r;
}

std::string status_problem(int status) {
  return status == PARTOOL_OK ? "" : std::string("status ") + std::to_string(status) + ": " + partool_last_error_message();
}

void check_scan(Report& report, Target& target, const ScanCase& c, uint32_t seed, ScanOutputs* keep) {
  std::mt19937 gen(seed);
  ScanData d(c, gen);
  for (bool reverse : {false, true}) {
    ScanOutputs r = run_scan(target, d, reverse);
    std::vector<double> y, last;
    d.reference(reverse, y, last);
    std::string problem = r.problem.empty() ? status_problem(r.status) : r.problem;
    double err = INFINITY;
    if (problem.empty()) {
      err = compare(r.out, y, [&](size_t i) { return d.dense(i); });
      problem = padding_untouched(r.out, d.rows());
      if (c.last_state) err = std::max(err, compare(r.last_fwd, last, [](size_t i) { return i; }));
    }
    report.record(target.name(), c.describe(reverse ? "scan reverse" : "scan"), c.dtype, err, problem);
    if (keep != nullptr && reverse) *keep = std::move(r);
  }
}

void check_bidir(Report& report, Target& target, const ScanCase& c, uint32_t seed, ScanOutputs* keep) {
  std::mt19937 gen(seed);
  ScanData fwd(c, gen), bwd(c, gen);
  ScanOutputs r = run_bidir(target, fwd, bwd);
  std::vector<double> yf, lf, yb, lb;
  fwd.reference(false, yf, lf);
  bwd.reference(true, yb, lb);
  for (size_t i = 0; i < yf.size(); ++i) yf[i] = 0.5 * (yf[i] + yb[i]);
  std::string problem = r.problem.empty() ? status_problem(r.status) : r.problem;
  double err = INFINITY;
  if (problem.empty()) {
    err = compare(r.out, yf, [&](size_t i) { return fwd.dense(i); });
    problem = padding_untouched(r.out, fwd.rows());
    if (c.last_state) {
      err = std::max(err, compare(r.last_fwd, lf, [](size_t i) { return i; }));
      err = std::max(err, compare(r.last_bwd, lb, [](size_t i) { return i; }));
    }
  }
  report.record(target.name(), c.describe("bidir"), c.dtype, err, problem);
  if (keep != nullptr) *keep = std::move(r);
}

// ---------------------------------------------------------------- selective scan backward

// Elements after every gradient that must keep the sentinel: a kernel writes its gradient and no further.
constexpr size_t kGuard = 16;

// A float32 gradient buffer of n elements and the guard.
Buffer gradient_buffer(size_t n) { return sentinel(PARTOOL_DTYPE_F32, n + kGuard); }

// The worst relative error over a call's gradients, which gradient it was, and any gradient written past its end.
struct GradCheck {
  double err = 0.0;
  std::string worst, problem;

  void add(const char* name, const Buffer& got, const std::vector<double>& want) {
    const double e = compare(got, want, [](size_t i) { return i; });
    if (!(e <= err)) err = e, worst = name;  // (a NaN or inf error is the worst)
    for (size_t i = want.size(); i < got.size() && problem.empty(); ++i) {
      if (got.get(i) != kSentinel) problem = std::string(name) + " written past its end";
    }
  }
};

double silu_grad(double v) {
  const double s = 1.0 / (1.0 + std::exp(-v));
  return s * (1.0 + v * (1.0 - s));
}

// The gradients of the scan's inputs, dense: du, ddelta, dz (b, c, t); dA (c, n); dB, dC (b, g, n, t); dD,
// ddelta_bias (c).
struct ScanGrads {
  std::vector<double> du, ddelta, dz, dA, dB, dC, dD, dbias;
};

// partool_kernels.h's backward formulas in double, one row at a time: the forward with every state kept,
// then dh_s = g_s C_s + a_{s+1} dh_{s+1} from the last scanned step back to the first.
ScanGrads scan_bwd_reference(const ScanData& d, const Buffer& dout, bool reverse) {
  const ScanCase& c = d.c;
  const int L = c.length, N = c.dstate, per_group = c.dim / c.groups;
  const size_t io = size_t(c.batch) * c.dim * L, bc = size_t(c.batch) * c.groups * N * L;
  ScanGrads r;
  r.du.assign(io, 0.0), r.ddelta.assign(io, 0.0), r.dz.assign(io, 0.0);
  r.dA.assign(size_t(c.dim) * N, 0.0), r.dB.assign(bc, 0.0), r.dC.assign(bc, 0.0);
  r.dD.assign(c.dim, 0.0), r.dbias.assign(c.dim, 0.0);
  std::vector<double> dt(L), pre(L), a(size_t(L) * N), h(size_t(L + 1) * N), y(L), dh(N), next(N);
  for (int b = 0; b < c.batch; ++b) {
    for (int ch = 0; ch < c.dim; ++ch) {
      const int g = ch / per_group;
      const double D = c.D ? d.D.get(ch) : 0.0;
      auto time = [&](int s) { return reverse ? L - 1 - s : s; };
      auto A = [&](int n) { return double(d.A.get(size_t(ch) * N + n)); };
      auto B = [&](int s, int n) { return double(d.B.get(d.bc(b, g, n, time(s)))); };
      auto C = [&](int s, int n) { return double(d.C.get(d.bc(b, g, n, time(s)))); };
      auto u = [&](int s) { return double(d.u.get(d.io(b, ch, time(s)))); };
      // forward: h[(s + 1) * N + n] is h_s, h[n] = h_{-1} = 0
      std::fill(h.begin(), h.begin() + N, 0.0);
      for (int s = 0; s < L; ++s) {
        pre[s] = d.delta.get(d.io(b, ch, time(s))) + (c.bias ? d.bias.get(ch) : 0.0);
        dt[s] = c.softplus ? std::log1p(std::exp(pre[s])) : pre[s];
        y[s] = D * u(s);
        for (int n = 0; n < N; ++n) {
          a[size_t(s) * N + n] = std::exp(dt[s] * A(n));
          h[size_t(s + 1) * N + n] = a[size_t(s) * N + n] * h[size_t(s) * N + n] + dt[s] * B(s, n) * u(s);
          y[s] += C(s, n) * h[size_t(s + 1) * N + n];
        }
      }
      // backward
      std::fill(next.begin(), next.end(), 0.0);
      for (int s = L - 1; s >= 0; --s) {
        const size_t at = (size_t(b) * c.dim + ch) * L + time(s);
        const double z = c.z ? d.z.get(d.io(b, ch, time(s))) : 0.0, go = dout.get(d.io(b, ch, time(s)));
        const double gy = c.z ? go * silu(z) : go;
        double du = gy * D, ddt = 0.0;
        for (int n = 0; n < N; ++n) {
          const double as = a[size_t(s) * N + n], hprev = h[size_t(s) * N + n], hs = h[size_t(s + 1) * N + n];
          dh[n] = gy * C(s, n) + next[n];
          next[n] = as * dh[n];
          r.dA[size_t(ch) * N + n] += dh[n] * dt[s] * as * hprev;
          const size_t bcn = ((size_t(b) * c.groups + g) * N + n) * L + time(s);
          r.dB[bcn] += dh[n] * dt[s] * u(s);
          r.dC[bcn] += gy * hs;
          du += dh[n] * dt[s] * B(s, n);
          ddt += dh[n] * (A(n) * as * hprev + B(s, n) * u(s));
        }
        r.du[at] = du;
        r.ddelta[at] = c.softplus ? ddt / (1.0 + std::exp(-pre[s])) : ddt;
        r.dz[at] = c.z ? go * y[s] * silu_grad(z) : 0.0;
        r.dbias[ch] += r.ddelta[at];
        r.dD[ch] += gy * u(s);
      }
    }
  }
  return r;
}

// Kernel gradients of one backward call (float32, dense, each followed by the guard).
struct ScanBwdOutputs {
  Buffer du, ddelta, dz, dA, dB, dC, dD, dbias;
  int status = -1;
  std::string problem;
};

// The backward of d's forward scan; dz, dD and ddelta_bias are passed exactly when the case has z, D, bias.
ScanBwdOutputs run_scan_bwd(Target& target, ScanData& d, Buffer& dout, bool reverse) {
  const ScanCase& c = d.c;
  const size_t io = size_t(c.batch) * c.dim * c.length, bc = size_t(c.batch) * c.groups * c.dstate * c.length;
  ScanBwdOutputs r;
  auto grad = [&](Buffer& buffer, size_t n, bool used) {
    buffer = gradient_buffer(n);
    return used ? static_cast<float*>(target.place(buffer, true)) : nullptr;
  };
  partool_scan_bwd_params_t p{};
  p.fwd = d.params(target, reverse);  // out and last_state stay NULL: the backward reads neither
  p.dout = target.place(dout, false);
  p.du = grad(r.du, io, true), p.ddelta = grad(r.ddelta, io, true), p.dz = grad(r.dz, io, c.z);
  p.dA = grad(r.dA, size_t(c.dim) * c.dstate, true);
  p.dB = grad(r.dB, bc, true), p.dC = grad(r.dC, bc, true);
  p.dD = grad(r.dD, c.dim, c.D), p.ddelta_bias = grad(r.dbias, c.dim, c.bias);
  r.status = target.scan_bwd(&p);
  r.problem = target.finish();
  return r;
}

void check_scan_bwd(Report& report, Target& target, const ScanCase& c, uint32_t seed, ScanBwdOutputs* keep) {
  std::mt19937 gen(seed);
  ScanData d(c, gen);
  Buffer dout = normal(gen, c.dtype, d.io_size(), 0.0f, 1.0f);
  for (bool reverse : {false, true}) {
    ScanBwdOutputs r = run_scan_bwd(target, d, dout, reverse);
    std::string problem = r.problem.empty() ? status_problem(r.status) : r.problem;
    GradCheck g;
    if (problem.empty()) {
      const ScanGrads want = scan_bwd_reference(d, dout, reverse);
      g.add("du", r.du, want.du), g.add("ddelta", r.ddelta, want.ddelta), g.add("dA", r.dA, want.dA);
      g.add("dB", r.dB, want.dB), g.add("dC", r.dC, want.dC);
      if (c.z) g.add("dz", r.dz, want.dz);
      if (c.D) g.add("dD", r.dD, want.dD);
      if (c.bias) g.add("ddelta_bias", r.dbias, want.dbias);
      problem = g.problem;
    }
    const std::string what = c.describe(reverse ? "scan bwd reverse" : "scan bwd") + (g.worst.empty() ? "" : ": " + g.worst);
    report.record(target.name(), what, c.dtype, problem.empty() ? g.err : INFINITY, problem);
    if (keep != nullptr && reverse) *keep = std::move(r);
  }
}

// ---------------------------------------------------------------- causal conv1d

struct ConvCase {
  int batch, dim, length, width;
  partool_dtype_t dtype;
  bool silu, bias, padded;

  std::string describe(const char* kind) const {
    char text[160];
    std::snprintf(text, sizeof text, "%s b%d d%d l%d w%d %s%s%s%s", kind, batch, dim, length, width, dtype_name(dtype),
                  silu ? " silu" : "", bias ? " bias" : "", padded ? " strided" : "");
    return text;
  }
};

struct ConvData {
  ConvCase c;
  int64_t bs, ds;
  Buffer x, weight[2], bias[2];

  ConvData(const ConvCase& cc, std::mt19937& gen)
      : c(cc),
        bs(cc.padded ? int64_t(cc.dim) * (cc.length + 2) + 3 : int64_t(cc.dim) * cc.length),
        ds(cc.padded ? cc.length + 2 : cc.length),
        x(normal(gen, cc.dtype, size(), 0.0f, 1.0f)),
        weight{normal(gen, PARTOOL_DTYPE_F32, size_t(cc.dim) * cc.width, 0.0f, 0.5f),
               normal(gen, PARTOOL_DTYPE_F32, size_t(cc.dim) * cc.width, 0.0f, 0.5f)},
        bias{normal(gen, PARTOOL_DTYPE_F32, cc.dim, 0.0f, 0.5f), normal(gen, PARTOOL_DTYPE_F32, cc.dim, 0.0f, 0.5f)} {}
  size_t size() const { return size_t(bs) * c.batch; }
  size_t at(int b, int ch, int t) const { return size_t(b * bs + ch * ds + t); }
  size_t dense(size_t i) const {
    return at(int(i / c.length / c.dim), int(i / c.length % c.dim), int(i % c.length));
  }
  std::vector<bool> rows() const {
    std::vector<bool> in(size(), false);
    for (size_t i = 0; i < size_t(c.batch) * c.dim * c.length; ++i) in[dense(i)] = true;
    return in;
  }

  std::vector<double> reference(int which, bool reverse) const {
    std::vector<double> y(size_t(c.batch) * c.dim * c.length);
    for (int b = 0; b < c.batch; ++b) {
      for (int ch = 0; ch < c.dim; ++ch) {
        for (int t = 0; t < c.length; ++t) {
          double acc = c.bias ? bias[which].get(ch) : 0.0;
          for (int k = 0; k < c.width; ++k) {
            const int src = reverse ? t + (c.width - 1) - k : t - (c.width - 1) + k;
            if (src >= 0 && src < c.length) acc += double(weight[which].get(size_t(ch) * c.width + k)) * x.get(at(b, ch, src));
          }
          y[(size_t(b) * c.dim + ch) * c.length + t] = c.silu ? silu(acc) : acc;
        }
      }
    }
    return y;
  }

  // out NULL leaves p.out NULL (a backward call does not read it).
  partool_conv1d_params_t params(Target& target, int which, bool reverse, Buffer* out) {
    partool_conv1d_params_t p{};
    p.batch = c.batch, p.dim = c.dim, p.length = c.length, p.width = c.width, p.io_dtype = c.dtype;
    p.x = target.place(x, false);
    p.weight = static_cast<const float*>(target.place(weight[which], false));
    p.bias = c.bias ? static_cast<const float*>(target.place(bias[which], false)) : nullptr;
    p.out = out != nullptr ? target.place(*out, true) : nullptr;
    p.silu = c.silu, p.reverse = reverse;
    if (c.padded) p.batch_stride = bs, p.dim_stride = ds;
    return p;
  }
};

void check_conv(Report& report, Target& target, const ConvCase& c, uint32_t seed, std::vector<Buffer>* keep) {
  std::mt19937 gen(seed);
  ConvData d(c, gen);
  for (bool reverse : {false, true}) {
    Buffer out = sentinel(c.dtype, d.size());
    partool_conv1d_params_t p = d.params(target, 0, reverse, &out);
    const int status = target.conv(&p);
    std::string problem = target.finish();
    if (problem.empty()) problem = status_problem(status);
    double err = INFINITY;
    if (problem.empty()) {
      err = compare(out, d.reference(0, reverse), [&](size_t i) { return d.dense(i); });
      problem = padding_untouched(out, d.rows());
    }
    report.record(target.name(), c.describe(reverse ? "conv1d anti-causal" : "conv1d causal"), c.dtype, err, problem);
    if (keep != nullptr) keep->push_back(std::move(out));
  }
  // the pair: causal with weights 0 and anti-causal with weights 1, as Vim's two directions
  Buffer first = sentinel(c.dtype, d.size()), second = sentinel(c.dtype, d.size());
  partool_conv1d_pair_params_t pair{d.params(target, 0, false, &first), d.params(target, 1, true, &second)};
  const int status = target.conv_pair(&pair);
  std::string problem = target.finish();
  if (problem.empty()) problem = status_problem(status);
  double err = INFINITY;
  if (problem.empty()) {
    err = std::max(compare(first, d.reference(0, false), [&](size_t i) { return d.dense(i); }),
                   compare(second, d.reference(1, true), [&](size_t i) { return d.dense(i); }));
    problem = padding_untouched(first, d.rows());
    if (problem.empty()) problem = padding_untouched(second, d.rows());
  }
  report.record(target.name(), c.describe("conv1d pair"), c.dtype, err, problem);
  if (keep != nullptr) keep->push_back(std::move(first)), keep->push_back(std::move(second));
}

// The conv's gradients (weights 0), dense: dx (b, c, t), dweight (c, k), dbias (c). Each tap's contribution
// is scattered back from the output it fed, the forward formula read the other way.
struct ConvGrads {
  std::vector<double> dx, dweight, dbias;
};

ConvGrads conv_bwd_reference(const ConvData& d, const Buffer& dout, bool reverse) {
  const ConvCase& c = d.c;
  ConvGrads r;
  r.dx.assign(size_t(c.batch) * c.dim * c.length, 0.0);
  r.dweight.assign(size_t(c.dim) * c.width, 0.0);
  r.dbias.assign(c.dim, 0.0);
  for (int b = 0; b < c.batch; ++b) {
    for (int ch = 0; ch < c.dim; ++ch) {
      auto src = [&](int t, int k) { return reverse ? t + (c.width - 1) - k : t - (c.width - 1) + k; };
      auto w = [&](int k) { return double(d.weight[0].get(size_t(ch) * c.width + k)); };
      for (int t = 0; t < c.length; ++t) {
        double pre = c.bias ? d.bias[0].get(ch) : 0.0;
        for (int k = 0; k < c.width; ++k) {
          if (src(t, k) >= 0 && src(t, k) < c.length) pre += w(k) * d.x.get(d.at(b, ch, src(t, k)));
        }
        const double go = dout.get(d.at(b, ch, t));
        const double dpre = c.silu ? go * silu_grad(pre) : go;
        r.dbias[ch] += dpre;
        for (int k = 0; k < c.width; ++k) {
          if (src(t, k) < 0 || src(t, k) >= c.length) continue;
          r.dx[(size_t(b) * c.dim + ch) * c.length + src(t, k)] += w(k) * dpre;
          r.dweight[size_t(ch) * c.width + k] += dpre * d.x.get(d.at(b, ch, src(t, k)));
        }
      }
    }
  }
  return r;
}

void check_conv_bwd(Report& report, Target& target, const ConvCase& c, uint32_t seed, std::vector<Buffer>* keep) {
  std::mt19937 gen(seed);
  ConvData d(c, gen);
  Buffer dout = normal(gen, c.dtype, d.size(), 0.0f, 1.0f);
  for (bool reverse : {false, true}) {
    Buffer dx = gradient_buffer(size_t(c.batch) * c.dim * c.length), dweight = gradient_buffer(size_t(c.dim) * c.width);
    Buffer dbias = gradient_buffer(c.dim);
    partool_conv1d_bwd_params_t p{};
    p.fwd = d.params(target, 0, reverse, nullptr);
    p.dout = target.place(dout, false);
    p.dx = static_cast<float*>(target.place(dx, true));
    p.dweight = static_cast<float*>(target.place(dweight, true));
    p.dbias = c.bias ? static_cast<float*>(target.place(dbias, true)) : nullptr;
    const int status = target.conv_bwd(&p);
    std::string problem = target.finish();
    if (problem.empty()) problem = status_problem(status);
    GradCheck g;
    if (problem.empty()) {
      const ConvGrads want = conv_bwd_reference(d, dout, reverse);
      g.add("dx", dx, want.dx), g.add("dweight", dweight, want.dweight);
      if (c.bias) g.add("dbias", dbias, want.dbias);
      problem = g.problem;
    }
    const std::string what =
        c.describe(reverse ? "conv1d bwd anti-causal" : "conv1d bwd causal") + (g.worst.empty() ? "" : ": " + g.worst);
    report.record(target.name(), what, c.dtype, problem.empty() ? g.err : INFINITY, problem);
    if (keep != nullptr) keep->push_back(std::move(dx)), keep->push_back(std::move(dweight)), keep->push_back(std::move(dbias));
  }
}

// ---------------------------------------------------------------- residual add + RMSNorm

enum class ResidualOut { none, separate, in_place };

struct NormCase {
  int batch, dim, length;
  partool_dtype_t dtype;
  bool residual;
  ResidualOut residual_out;

  std::string describe() const {
    static const char* outs[] = {"", " residual_out", " residual_out in place"};
    char text[160];
    std::snprintf(text, sizeof text, "add_rms_norm b%d d%d l%d %s%s%s", batch, dim, length, dtype_name(dtype),
                  residual ? " residual" : "", outs[int(residual_out)]);
    return text;
  }
};

void check_norm(Report& report, Target& target, const NormCase& c, uint32_t seed, std::vector<Buffer>* keep) {
  std::mt19937 gen(seed);
  const size_t n = size_t(c.batch) * c.dim * c.length;
  Buffer x = normal(gen, c.dtype, n, 0.0f, 1.0f), residual = normal(gen, PARTOOL_DTYPE_F32, n, 0.5f, 2.0f);
  Buffer weight = normal(gen, PARTOOL_DTYPE_F32, c.dim, 1.0f, 0.2f);
  const float eps = 1e-5f;
  // reference, before an in-place call overwrites the residual
  std::vector<double> r(n), out_ref(n);
  for (int b = 0; b < c.batch; ++b) {
    for (int t = 0; t < c.length; ++t) {
      double sumsq = 0.0;
      for (int ch = 0; ch < c.dim; ++ch) {
        const size_t i = (size_t(b) * c.dim + ch) * c.length + t;
        r[i] = double(x.get(i)) + (c.residual ? residual.get(i) : 0.0);
        sumsq += r[i] * r[i];
      }
      const double scale = 1.0 / std::sqrt(sumsq / c.dim + eps);
      for (int ch = 0; ch < c.dim; ++ch) {
        const size_t i = (size_t(b) * c.dim + ch) * c.length + t;
        out_ref[i] = r[i] * scale * weight.get(ch);
      }
    }
  }
  Buffer out = sentinel(c.dtype, n), residual_out = sentinel(PARTOOL_DTYPE_F32, n);
  Buffer& r_out = c.residual_out == ResidualOut::in_place ? residual : residual_out;
  partool_add_rms_norm_params_t p{};
  p.batch = c.batch, p.dim = c.dim, p.length = c.length, p.io_dtype = c.dtype, p.eps = eps;
  p.x = target.place(x, false);
  p.residual = c.residual ? static_cast<const float*>(target.place(residual, false)) : nullptr;
  p.weight = static_cast<const float*>(target.place(weight, false));
  p.residual_out = c.residual_out == ResidualOut::none ? nullptr : static_cast<float*>(target.place(r_out, true));
  p.out = target.place(out, true);
  const int status = target.norm(&p);
  std::string problem = target.finish();
  if (problem.empty()) problem = status_problem(status);
  double err = INFINITY;
  if (problem.empty()) {
    err = compare(out, out_ref, [](size_t i) { return i; });
    if (c.residual_out != ResidualOut::none) err = std::max(err, compare(r_out, r, [](size_t i) { return i; }));
  }
  report.record(target.name(), c.describe(), c.dtype, err, problem);
  if (keep != nullptr) keep->push_back(std::move(out)), keep->push_back(std::move(r_out));
}

// ---------------------------------------------------------------- the sweep

const partool_dtype_t kDtypes[] = {PARTOOL_DTYPE_F32, PARTOOL_DTYPE_F16, PARTOOL_DTYPE_BF16};

std::vector<ScanCase> scan_cases() {
  std::vector<ScanCase> cases;
  const int shapes[][4] = {  // dstate, length, groups, dim
      {16, 197, 1, 8}, {16, 1, 1, 4}, {1, 64, 1, 6}, {5, 33, 2, 8}, {16, 600, 2, 4}, {8, 130, 1, 3}};
  int i = 0;
  for (auto dtype : kDtypes) {
    for (const auto& s : shapes) {
      const bool odd = i++ % 2 == 1;
      // Vim's configuration (z, D, bias, softplus) on every shape, and the bare scan on every other one
      cases.push_back({2, s[3], s[0], s[1], s[2], dtype, true, true, true, true, true, odd});
      if (odd) cases.push_back({2, s[3], s[0], s[1], s[2], dtype, false, false, false, false, false, !odd});
    }
  }
  return cases;
}

// The backward's cases: the forward's sweep, plus per dtype the optional inputs apart (z alone with
// softplus; D and delta_bias without softplus, four groups).
std::vector<ScanCase> scan_bwd_cases() {
  std::vector<ScanCase> cases = scan_cases();
  for (auto dtype : kDtypes) {
    cases.push_back({2, 8, 5, 33, 2, dtype, true, false, false, true, false, true});
    cases.push_back({3, 8, 16, 70, 4, dtype, false, true, true, false, false, false});
  }
  return cases;
}

std::vector<ConvCase> conv_cases() {
  std::vector<ConvCase> cases;
  int i = 0;
  for (auto dtype : kDtypes) {
    for (int width = 1; width <= PARTOOL_MAX_CONV_WIDTH; ++width) {
      const bool odd = i++ % 2 == 1;
      cases.push_back({2, 5, width == 2 ? 1 : 37 + width, width, dtype, !odd, odd || width == 4, odd});
    }
  }
  return cases;
}

std::vector<NormCase> norm_cases() {
  std::vector<NormCase> cases;
  for (auto dtype : kDtypes) {
    cases.push_back({2, 384, 37, dtype, true, ResidualOut::in_place});
    cases.push_back({1, 24, 197, dtype, true, ResidualOut::separate});
    cases.push_back({3, 7, 5, dtype, false, ResidualOut::none});
  }
  return cases;
}

void run_sweep(Report& report, Target& target, bool scans_only = false) {
  uint32_t seed = 1;
  for (const auto& c : scan_cases()) {
    check_scan(report, target, c, seed++, nullptr);
    check_bidir(report, target, c, seed++, nullptr);
  }
  if (scans_only) return;
  for (const auto& c : scan_bwd_cases()) check_scan_bwd(report, target, c, seed++, nullptr);
  for (const auto& c : conv_cases()) {
    check_conv(report, target, c, seed++, nullptr);
    check_conv_bwd(report, target, c, seed++, nullptr);
  }
  for (const auto& c : norm_cases()) check_norm(report, target, c, seed++, nullptr);
}

#if defined(PARTOOL_CHECK_CUDA) || defined(PARTOOL_CHECK_CUDA_EMULATED)
// The CUDA scan variants TensorRT and the PyTorch binding may pick: each forced tile or state split (the
// heuristic ones, CHUNKED and ROWS, always resolve to one of these).
std::vector<int> explicit_scan_variants() {
  std::vector<int> out;
  for (int v = PARTOOL_SCAN_CUDA_AUTO + 1; v < PARTOOL_SCAN_CUDA_VARIANT_COUNT; ++v) {
    if (v != PARTOOL_SCAN_CUDA_CHUNKED && v != PARTOOL_SCAN_CUDA_ROWS) out.push_back(v);
  }
  return out;
}

// The whole sweep with the library's default variant ("auto"), then the scans with each explicit variant
// of `variants` (all of them by default).
template <typename CudaTargetType>
int run_cuda_sweeps(Report& report, const std::vector<int>& variants) {
  int ran = 0;
  for (int v : variants) {
    CudaTargetType target(v);
    run_sweep(report, target, v != PARTOOL_SCAN_CUDA_AUTO);
    ++ran;
  }
  return ran;
}

// "auto,rows/states4" -> their enum values; an unknown name is reported and ends the program (exit 2).
bool parse_variants(const std::string& list, std::vector<int>& out) {
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string name = list.substr(start, comma - start);
    int found = -1;
    for (int v = 0; v < PARTOOL_SCAN_CUDA_VARIANT_COUNT; ++v) {
      if (name == partool_scan_cuda_variant_name(v) && v != PARTOOL_SCAN_CUDA_CHUNKED && v != PARTOOL_SCAN_CUDA_ROWS) found = v;
    }
    if (found < 0) {
      std::fprintf(stderr, "--variants: unknown scan variant '%s'; use auto or explicit ones such as chunked/tile8, rows/states4\n",
                   name.c_str());
      return false;
    }
    out.push_back(found);
    start = comma + 1;
  }
  return true;
}
#endif

bool same_bytes(const Buffer& a, const Buffer& b) { return a.bytes == b.bytes; }

// max |a - b| / max |a| over two buffers of one size.
double relative_difference(const Buffer& a, const Buffer& b) {
  double diff = 0.0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(double(a.get(i)) - b.get(i)));
    scale = std::max(scale, std::fabs(double(a.get(i))));
  }
  return diff / scale;
}

// The CPU kernels split rows among threads; every row is computed the same way whichever thread takes it.
void check_thread_counts(Report& report) {
  CpuTarget one(1), three(3);
  Report quiet;  // the sweep already reported the values
  const ScanCase sc{3, 8, 16, 197, 2, PARTOOL_DTYPE_F32, true, true, true, true, true, true};
  ScanOutputs a, b;
  check_scan(quiet, one, sc, 99, &a);
  check_scan(quiet, three, sc, 99, &b);
  report.expect(same_bytes(a.out, b.out) && same_bytes(a.last_fwd, b.last_fwd), "scan: 1 and 3 threads give the same bits");
  check_bidir(quiet, one, sc, 98, &a);
  check_bidir(quiet, three, sc, 98, &b);
  report.expect(same_bytes(a.out, b.out), "bidir: 1 and 3 threads give the same bits");
  std::vector<Buffer> ca, cb;
  const ConvCase cc{3, 8, 50, 4, PARTOOL_DTYPE_F16, true, true, true};
  check_conv(quiet, one, cc, 97, &ca);
  check_conv(quiet, three, cc, 97, &cb);
  bool conv_same = ca.size() == cb.size();
  for (size_t i = 0; conv_same && i < ca.size(); ++i) conv_same = same_bytes(ca[i], cb[i]);
  report.expect(conv_same, "conv1d: 1 and 3 threads give the same bits");
  std::vector<Buffer> na, nb;
  const NormCase nc{3, 96, 70, PARTOOL_DTYPE_BF16, true, ResidualOut::separate};
  check_norm(quiet, one, nc, 96, &na);
  check_norm(quiet, three, nc, 96, &nb);
  report.expect(same_bytes(na[0], nb[0]) && same_bytes(na[1], nb[1]), "add_rms_norm: 1 and 3 threads give the same bits");
  ScanBwdOutputs sa, sb;
  check_scan_bwd(quiet, one, sc, 95, &sa);
  check_scan_bwd(quiet, three, sc, 95, &sb);
  report.expect(same_bytes(sa.du, sb.du) && same_bytes(sa.ddelta, sb.ddelta) && same_bytes(sa.dz, sb.dz) &&
                    same_bytes(sa.dA, sb.dA) && same_bytes(sa.dD, sb.dD) && same_bytes(sa.dbias, sb.dbias),
                "scan bwd: 1 and 3 threads give the same bits (all but dB, dC)");
  // dB and dC add per-block sums over channels, the blocks set by the thread count: their rounding follows
  // the thread count, but not the scheduling (a resumed training run must repeat the same bits).
  const double bc_diff = std::max(relative_difference(sa.dB, sb.dB), relative_difference(sa.dC, sb.dC));
  char what[120];
  std::snprintf(what, sizeof what, "scan bwd: dB and dC from 1 and 3 threads within 1e-6 (%.1e)", bc_diff);
  report.expect(bc_diff <= 1e-6, what);
  ScanBwdOutputs again;
  check_scan_bwd(quiet, three, sc, 95, &again);
  report.expect(same_bytes(sb.dB, again.dB) && same_bytes(sb.dC, again.dC),
                "scan bwd: dB and dC from two runs on 3 threads are the same bits");
  ca.clear(), cb.clear();
  check_conv_bwd(quiet, one, cc, 94, &ca);
  check_conv_bwd(quiet, three, cc, 94, &cb);
  conv_same = ca.size() == cb.size();
  for (size_t i = 0; conv_same && i < ca.size(); ++i) conv_same = same_bytes(ca[i], cb[i]);
  report.expect(conv_same, "conv1d bwd: 1 and 3 threads give the same bits");
  report.expect(quiet.failures == 0, "the thread-count cases are within tolerance");
}

// The backward calls' argument rules: the gradients that must be given, the optional ones given exactly
// with their inputs, the forward's own checks; the forward's out is not needed. `d` is a bare f32 scan.
void check_bwd_errors(Report& report, ScanData& d, CpuTarget& cpu) {
  const size_t io = size_t(d.c.batch) * d.c.dim * d.c.length;
  std::vector<float> du(io), ddelta(io), dz(io), dA(size_t(d.c.dim) * d.c.dstate), dB(d.bc_size()), dC(d.bc_size());
  std::vector<float> dD(d.c.dim);
  auto scan = [&](auto edit) {
    partool_scan_bwd_params_t p{};
    p.fwd = d.params(cpu, false);
    p.dout = d.u.data();
    p.du = du.data(), p.ddelta = ddelta.data(), p.dA = dA.data(), p.dB = dB.data(), p.dC = dC.data();
    edit(p);
    return partool_selective_scan_bwd_cpu(&p, 1);
  };
  report.expect(scan([](partool_scan_bwd_params_t&) {}) == PARTOOL_OK, "scan bwd: a valid call (fwd.out NULL) returns PARTOOL_OK");
  report.expect(scan([](partool_scan_bwd_params_t& p) { p.dout = nullptr; }) == PARTOOL_ERR_INVALID_ARGUMENT &&
                    std::strstr(partool_last_error_message(), "dout") != nullptr,
                "scan bwd: dout = NULL: PARTOOL_ERR_INVALID_ARGUMENT naming dout");
  report.expect(scan([](partool_scan_bwd_params_t& p) { p.dC = nullptr; }) == PARTOOL_ERR_INVALID_ARGUMENT,
                "scan bwd: dC = NULL: PARTOOL_ERR_INVALID_ARGUMENT");
  report.expect(scan([&](partool_scan_bwd_params_t& p) { p.dD = dD.data(); }) == PARTOOL_ERR_INVALID_ARGUMENT &&
                    std::strstr(partool_last_error_message(), "dD") != nullptr,
                "scan bwd: dD without fwd.D: PARTOOL_ERR_INVALID_ARGUMENT naming dD");
  report.expect(scan([&](partool_scan_bwd_params_t& p) { p.fwd.z = d.z.data(); }) == PARTOOL_ERR_INVALID_ARGUMENT &&
                    std::strstr(partool_last_error_message(), "dz") != nullptr,
                "scan bwd: fwd.z without dz: PARTOOL_ERR_INVALID_ARGUMENT naming dz");
  report.expect(scan([&](partool_scan_bwd_params_t& p) { p.fwd.z = d.z.data(), p.dz = dz.data(); }) == PARTOOL_OK,
                "scan bwd: fwd.z with dz returns PARTOOL_OK");
  report.expect(scan([](partool_scan_bwd_params_t& p) { p.fwd.dstate = PARTOOL_MAX_DSTATE + 1; }) ==
                    PARTOOL_ERR_UNSUPPORTED_DSTATE,
                "scan bwd: d_state 17: PARTOOL_ERR_UNSUPPORTED_DSTATE");
  report.expect(partool_selective_scan_bwd_cpu(nullptr, 1) == PARTOOL_ERR_INVALID_ARGUMENT,
                "scan bwd: params NULL: PARTOOL_ERR_INVALID_ARGUMENT");

  std::mt19937 gen(7);
  ConvData cd({1, 4, 8, 3, PARTOOL_DTYPE_F32, true, false, false}, gen);
  std::vector<float> dx(32), dweight(12), dbias(4);
  auto conv = [&](auto edit) {
    partool_conv1d_bwd_params_t p{};
    p.fwd = cd.params(cpu, 0, false, nullptr);
    p.dout = cd.x.data();
    p.dx = dx.data(), p.dweight = dweight.data();
    edit(p);
    return partool_causal_conv1d_bwd_cpu(&p, 1);
  };
  report.expect(conv([](partool_conv1d_bwd_params_t&) {}) == PARTOOL_OK, "conv1d bwd: a valid call (fwd.out NULL) returns PARTOOL_OK");
  report.expect(conv([](partool_conv1d_bwd_params_t& p) { p.dx = nullptr; }) == PARTOOL_ERR_INVALID_ARGUMENT &&
                    std::strstr(partool_last_error_message(), "dx") != nullptr,
                "conv1d bwd: dx = NULL: PARTOOL_ERR_INVALID_ARGUMENT naming dx");
  report.expect(conv([&](partool_conv1d_bwd_params_t& p) { p.dbias = dbias.data(); }) == PARTOOL_ERR_INVALID_ARGUMENT,
                "conv1d bwd: dbias without fwd.bias: PARTOOL_ERR_INVALID_ARGUMENT");
  report.expect(conv([&](partool_conv1d_bwd_params_t& p) { p.fwd.bias = dbias.data(); }) == PARTOOL_ERR_INVALID_ARGUMENT,
                "conv1d bwd: fwd.bias without dbias: PARTOOL_ERR_INVALID_ARGUMENT");
  report.expect(conv([](partool_conv1d_bwd_params_t& p) { p.fwd.width = PARTOOL_MAX_CONV_WIDTH + 1; }) ==
                    PARTOOL_ERR_UNSUPPORTED_SHAPE,
                "conv1d bwd: width 5: PARTOOL_ERR_UNSUPPORTED_SHAPE");
}

// The largest |numeric - analytic| / max |analytic| over the elements of one input: the numeric gradient of
// loss() by central differences, stepping the element by about 1e-3 (as stored in its dtype).
template <typename Loss>
double difference_error(Buffer& x, const std::vector<double>& grad, Loss loss) {
  double err = 0.0, scale = 1e-30;
  for (size_t i = 0; i < grad.size(); ++i) {
    const float x0 = x.get(i);
    x.set(i, x0 + 1e-3f);
    const double up = loss(), x_up = x.get(i);
    x.set(i, x0 - 1e-3f);
    const double down = loss(), x_down = x.get(i);
    x.set(i, x0);
    err = std::max(err, std::fabs((up - down) / (x_up - x_down) - grad[i]));
    scale = std::max(scale, std::fabs(grad[i]));
  }
  return err / scale;
}

// The backward references against central differences of the forward references (small contiguous
// float32 cases, so every gradient's index is its input's): the sweep's gradients are those of the
// forward it checks. Central differences are accurate to about 1e-6 here; 1e-4 leaves room.
void check_references(Report& report) {
  const ScanCase scans[] = {{1, 4, 3, 6, 2, PARTOOL_DTYPE_F32, true, true, true, true, false, false},
                            {1, 4, 3, 6, 2, PARTOOL_DTYPE_F32, false, true, true, false, false, false}};
  for (const ScanCase& sc : scans) {
    std::mt19937 gen(11);
    ScanData d(sc, gen);
    const Buffer dout = normal(gen, PARTOOL_DTYPE_F32, d.io_size(), 0.0f, 1.0f);
    for (bool reverse : {false, true}) {
      const ScanGrads g = scan_bwd_reference(d, dout, reverse);
      auto loss = [&] {
        std::vector<double> y, last;
        d.reference(reverse, y, last);
        double sum = 0.0;
        for (size_t i = 0; i < y.size(); ++i) sum += y[i] * dout.get(i);
        return sum;
      };
      double err = std::max({difference_error(d.u, g.du, loss), difference_error(d.delta, g.ddelta, loss),
                             difference_error(d.A, g.dA, loss), difference_error(d.B, g.dB, loss),
                             difference_error(d.C, g.dC, loss), difference_error(d.D, g.dD, loss),
                             difference_error(d.bias, g.dbias, loss)});
      if (sc.z) err = std::max(err, difference_error(d.z, g.dz, loss));
      char what[160];
      std::snprintf(what, sizeof what, "%s: reference gradients = central differences (%.1e)",
                    sc.describe(reverse ? "scan bwd reverse" : "scan bwd").c_str(), err);
      report.expect(err <= 1e-4, what);
    }
  }
  std::mt19937 gen(12);
  ConvData d({1, 3, 7, 3, PARTOOL_DTYPE_F32, true, true, false}, gen);
  const Buffer dout = normal(gen, PARTOOL_DTYPE_F32, d.size(), 0.0f, 1.0f);
  for (bool reverse : {false, true}) {
    const ConvGrads g = conv_bwd_reference(d, dout, reverse);
    auto loss = [&] {
      const std::vector<double> y = d.reference(0, reverse);
      double sum = 0.0;
      for (size_t i = 0; i < y.size(); ++i) sum += y[i] * dout.get(i);
      return sum;
    };
    const double err = std::max({difference_error(d.x, g.dx, loss), difference_error(d.weight[0], g.dweight, loss),
                                 difference_error(d.bias[0], g.dbias, loss)});
    char what[160];
    std::snprintf(what, sizeof what, "%s: reference gradients = central differences (%.1e)",
                  d.c.describe(reverse ? "conv1d bwd anti-causal" : "conv1d bwd causal").c_str(), err);
    report.expect(err <= 1e-4, what);
  }
}

// Bad arguments come back as statuses with a message, never as a crash.
void check_errors(Report& report) {
  report.expect(partool_kernels_abi_version() == PARTOOL_KERNELS_ABI_VERSION, "ABI version matches the header");
  report.expect(std::strlen(partool_status_string(PARTOOL_ERR_UNSUPPORTED_DSTATE)) > 0, "status strings");
  std::mt19937 gen(5);
  CpuTarget cpu(1);
  ScanData d({1, 4, 16, 8, 1, PARTOOL_DTYPE_F32, false, false, false, false, false, false}, gen);
  Buffer out(PARTOOL_DTYPE_F32, d.io_size());
  auto call = [&](auto edit) {
    partool_scan_params_t p = d.params(cpu, false);
    p.out = out.data();
    edit(p);
    return partool_selective_scan_fwd_cpu(&p, 1);
  };
  report.expect(call([](partool_scan_params_t&) {}) == PARTOOL_OK, "a valid call returns PARTOOL_OK");
  report.expect(call([](partool_scan_params_t& p) { p.u = nullptr; }) == PARTOOL_ERR_INVALID_ARGUMENT &&
                    std::strlen(partool_last_error_message()) > 0,
                "u = NULL: PARTOOL_ERR_INVALID_ARGUMENT with a message");
  report.expect(call([](partool_scan_params_t& p) { p.dstate = PARTOOL_MAX_DSTATE + 1; }) == PARTOOL_ERR_UNSUPPORTED_DSTATE,
                "d_state 17: PARTOOL_ERR_UNSUPPORTED_DSTATE");
  report.expect(call([](partool_scan_params_t& p) { p.io_dtype = static_cast<partool_dtype_t>(9); }) ==
                    PARTOOL_ERR_UNSUPPORTED_DTYPE,
                "io_dtype 9: PARTOOL_ERR_UNSUPPORTED_DTYPE");
  report.expect(call([](partool_scan_params_t& p) { p.groups = 3; }) == PARTOOL_ERR_INVALID_ARGUMENT,
                "dim 4 in 3 groups: PARTOOL_ERR_INVALID_ARGUMENT");
  {
    partool_scan_params_t p = d.params(cpu, false);
    p.out = out.data();
    report.expect(partool_selective_scan_fwd_cuda_variant(&p, PARTOOL_SCAN_CUDA_VARIANT_COUNT, nullptr) ==
                      PARTOOL_ERR_INVALID_ARGUMENT,
                  "scan variant 11: PARTOOL_ERR_INVALID_ARGUMENT");
    const char* first = partool_scan_cuda_variant_name(PARTOOL_SCAN_CUDA_AUTO);
    const char* last = partool_scan_cuda_variant_name(PARTOOL_SCAN_CUDA_ROWS_STATES16);
    report.expect(first != nullptr && std::strcmp(first, "auto") == 0 && last != nullptr &&
                      std::strcmp(last, "rows/states16") == 0 &&
                      partool_scan_cuda_variant_name(PARTOOL_SCAN_CUDA_VARIANT_COUNT) == nullptr &&
                      partool_scan_cuda_variant_name(-1) == nullptr,
                  "scan variant names: auto .. rows/states16, NULL outside the enum");
  }
  check_bwd_errors(report, d, cpu);
  if (!partool_kernels_has_cuda()) {  // (the emulation library reports CUDA)
    partool_scan_params_t p = d.params(cpu, false);
    p.out = out.data();
    report.expect(partool_selective_scan_fwd_cuda(&p, nullptr) == PARTOOL_ERR_NO_CUDA,
                  "a CPU-only build: the CUDA entry returns PARTOOL_ERR_NO_CUDA");
    std::mt19937 gen_bwd(6);
    ScanData sd({1, 4, 16, 8, 1, PARTOOL_DTYPE_F32, false, false, false, false, false, false}, gen_bwd);
    std::vector<float> grads(64);
    partool_scan_bwd_params_t sb{};
    sb.fwd = sd.params(cpu, false);
    sb.dout = sd.u.data();
    sb.du = sb.ddelta = sb.dA = sb.dB = sb.dC = grads.data();
    report.expect(partool_selective_scan_bwd_cuda(&sb, nullptr) == PARTOOL_ERR_NO_CUDA,
                  "a CPU-only build: the CUDA scan backward returns PARTOOL_ERR_NO_CUDA");
    ConvData cd({1, 2, 8, 4, PARTOOL_DTYPE_F32, true, false, false}, gen_bwd);
    partool_conv1d_bwd_params_t cb{};
    cb.fwd = cd.params(cpu, 0, false, nullptr);
    cb.dout = cd.x.data();
    cb.dx = cb.dweight = grads.data();
    report.expect(partool_causal_conv1d_bwd_cuda(&cb, nullptr) == PARTOOL_ERR_NO_CUDA,
                  "a CPU-only build: the CUDA conv1d backward returns PARTOOL_ERR_NO_CUDA");
  }
}

}  // namespace

int main(int argc, char** argv) {
  Report report;
  bool cpu_only = false;
  std::string variant_list;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--verbose") {
      report.verbose = true;
    } else if (arg == "--cpu-only") {
      cpu_only = true;
    } else if (arg == "--variants" && i + 1 < argc) {
      variant_list = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--cpu-only] [--verbose] [--variants auto,NAME,...]\n", argv[0]);
      return 2;
    }
  }
#if defined(PARTOOL_CHECK_CUDA) || defined(PARTOOL_CHECK_CUDA_EMULATED)
  std::vector<int> variants{PARTOOL_SCAN_CUDA_AUTO};
  if (variant_list.empty()) {
    for (int v : explicit_scan_variants()) variants.push_back(v);
  } else if (variants.clear(); !parse_variants(variant_list, variants)) {
    return 2;
  }
#endif
  CpuTarget cpu(2);
  run_sweep(report, cpu);
  std::string cuda_note = "cuda: not built in";
#ifdef PARTOOL_CHECK_CUDA
  const std::string unusable = cpu_only ? "--cpu-only" : cuda_unusable();
  if (unusable.empty()) {
    const int ran = run_cuda_sweeps<CudaTarget>(report, variants);
    cuda_note = "cuda: checked (" + std::to_string(ran) + " scan variants)";
  } else {
    cuda_note = "cuda: skipped (" + unusable + ")";
  }
#elif defined(PARTOOL_CHECK_CUDA_EMULATED)
  cuda_note = "cuda: emulated on the CPU";
  if (!cpu_only) {
    const int ran = run_cuda_sweeps<EmulatedCudaTarget>(report, variants);
    cuda_note += " (" + std::to_string(ran) + " scan variants)";
  }
#else
  (void)cpu_only;
  (void)variant_list;
#endif
  check_thread_counts(report);
  check_references(report);
  check_errors(report);
  for (const auto& [key, err] : report.worst) std::printf("worst relative error %-10s %.2e\n", key.c_str(), err);
  std::printf("%s\n", cuda_note.c_str());
  std::printf("partool_kernels_check: %d cases, %d failed\n", report.cases, report.failures);
  return report.failures == 0 ? 0 : 1;
}
