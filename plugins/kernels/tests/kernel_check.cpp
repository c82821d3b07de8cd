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
// the padding between rows untouched, and on the CPU the same bits from 1 and 3 threads.
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

  partool_conv1d_params_t params(Target& target, int which, bool reverse, Buffer& out) {
    partool_conv1d_params_t p{};
    p.batch = c.batch, p.dim = c.dim, p.length = c.length, p.width = c.width, p.io_dtype = c.dtype;
    p.x = target.place(x, false);
    p.weight = static_cast<const float*>(target.place(weight[which], false));
    p.bias = c.bias ? static_cast<const float*>(target.place(bias[which], false)) : nullptr;
    p.out = target.place(out, true);
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
    partool_conv1d_params_t p = d.params(target, 0, reverse, out);
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
  partool_conv1d_pair_params_t pair{d.params(target, 0, false, first), d.params(target, 1, true, second)};
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
  for (const auto& c : conv_cases()) check_conv(report, target, c, seed++, nullptr);
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
  report.expect(quiet.failures == 0, "the thread-count cases are within tolerance");
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
  if (!partool_kernels_has_cuda()) {  // (the emulation library reports CUDA)
    partool_scan_params_t p = d.params(cpu, false);
    p.out = out.data();
    report.expect(partool_selective_scan_fwd_cuda(&p, nullptr) == PARTOOL_ERR_NO_CUDA,
                  "a CPU-only build: the CUDA entry returns PARTOOL_ERR_NO_CUDA");
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
  check_errors(report);
  for (const auto& [key, err] : report.worst) std::printf("worst relative error %-10s %.2e\n", key.c_str(), err);
  std::printf("%s\n", cuda_note.c_str());
  std::printf("partool_kernels_check: %d cases, %d failed\n", report.cases, report.failures);
  return report.failures == 0 ? 0 : 1;
}
