// Argument validation, status strings and per-thread error messages shared by all entry points.
#include "common.hpp"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <thread>
#include <utility>

namespace partool {

// Read by partool_last_error_message(); per thread so concurrent callers keep their own detail.
thread_local char g_message[512] = "";

int fail(int status, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(g_message, sizeof(g_message), fmt, args);
  va_end(args);
  return status;
}

void clear_error() { g_message[0] = '\0'; }

int dtype_size(int dtype) {
  switch (dtype) {
    case PARTOOL_DTYPE_F32:
      return 4;
    case PARTOOL_DTYPE_F16:
    case PARTOOL_DTYPE_BF16:
      return 2;
    default:
      return 0;
  }
}

partool_scan_params_t with_strides(const partool_scan_params_t& p) {
  partool_scan_params_t r = p;
  const int64_t L = p.length;
  if (r.dim_stride == 0) r.dim_stride = L;
  if (r.batch_stride == 0) r.batch_stride = static_cast<int64_t>(p.dim) * L;
  if (r.bc_state_stride == 0) r.bc_state_stride = L;
  if (r.bc_batch_stride == 0) r.bc_batch_stride = static_cast<int64_t>(p.groups) * p.dstate * L;
  return r;
}

partool_conv1d_params_t with_strides(const partool_conv1d_params_t& p) {
  partool_conv1d_params_t r = p;
  if (r.dim_stride == 0) r.dim_stride = p.length;
  if (r.batch_stride == 0) r.batch_stride = static_cast<int64_t>(p.dim) * p.length;
  return r;
}

namespace {

// Whether rows of `length` elements at b * batch_stride + c * dim_stride (b < batch, c < dim) are disjoint:
// one axis must step past a whole row and the other past everything the first spans (an axis of size 1
// steps nowhere).
bool rows_disjoint(int64_t batch, int64_t dim, int64_t length, int64_t batch_stride, int64_t dim_stride) {
  int64_t inner_n = dim, inner_s = dim_stride, outer_n = batch, outer_s = batch_stride;
  if (inner_n == 1 || (outer_n != 1 && outer_s < inner_s)) {
    std::swap(inner_n, outer_n);
    std::swap(inner_s, outer_s);
  }
  if (inner_n != 1 && inner_s < length) return false;
  return outer_n == 1 || outer_s >= (inner_n - 1) * inner_s + length;
}

int validate_rows(int batch, int dim, int length, const char* where) {
  if (batch <= 0 || dim <= 0 || length <= 0) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT,
                "%s: batch, dim and length must be positive (got batch=%d dim=%d length=%d)", where, batch, dim, length);
  }
  return PARTOOL_OK;
}

int validate_dtype(partool_dtype_t dtype, const char* where) {
  if (dtype_size(static_cast<int>(dtype)) == 0) {
    return fail(PARTOOL_ERR_UNSUPPORTED_DTYPE, "%s: io_dtype=%d is not f32 (0), f16 (1) or bf16 (2)", where,
                static_cast<int>(dtype));
  }
  return PARTOOL_OK;
}

// Negative strides, and output rows that overlap, are refused.
int validate_strides(int64_t batch, int64_t dim, int64_t length, int64_t batch_stride, int64_t dim_stride,
                     const char* what, const char* where) {
  if (batch_stride < 0 || dim_stride < 0) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: %s strides must be >= 0 (0: contiguous), got batch_stride=%lld dim_stride=%lld",
                where, what, static_cast<long long>(batch_stride), static_cast<long long>(dim_stride));
  }
  if (!rows_disjoint(batch, dim, length, batch_stride == 0 ? dim * length : batch_stride,
                     dim_stride == 0 ? length : dim_stride)) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT,
                "%s: %s rows overlap (batch_stride=%lld dim_stride=%lld for %lld x %lld rows of %lld)", where, what,
                static_cast<long long>(batch_stride), static_cast<long long>(dim_stride), static_cast<long long>(batch),
                static_cast<long long>(dim), static_cast<long long>(length));
  }
  return PARTOOL_OK;
}

}  // namespace

int validate_scan(const partool_scan_params_t* p, const char* where) {
  if (p == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: params is NULL", where);
  if (p->batch <= 0 || p->dim <= 0 || p->length <= 0 || p->groups <= 0) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT,
                "%s: batch, dim, length and groups must be positive (got batch=%d dim=%d length=%d groups=%d)",
                where, p->batch, p->dim, p->length, p->groups);
  }
  if (p->dstate < 1 || p->dstate > PARTOOL_MAX_DSTATE) {
    return fail(PARTOOL_ERR_UNSUPPORTED_DSTATE, "%s: dstate=%d is outside the supported 1..%d", where,
                p->dstate, PARTOOL_MAX_DSTATE);
  }
  if (p->dim % p->groups != 0) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: dim=%d is not divisible by groups=%d", where, p->dim,
                p->groups);
  }
  if (int s = validate_dtype(p->io_dtype, where)) return s;
  const struct {
    const void* ptr;
    const char* name;
  } required[] = {{p->u, "u"}, {p->delta, "delta"}, {p->A, "A"}, {p->B, "B"}, {p->C, "C"}, {p->out, "out"}};
  for (const auto& r : required) {
    if (r.ptr == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: %s is NULL", where, r.name);
  }
  if (int s = validate_strides(p->batch, p->dim, p->length, p->batch_stride, p->dim_stride, "u/delta/z/out", where)) {
    return s;
  }
  if (p->bc_batch_stride < 0 || p->bc_state_stride < 0) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: B/C strides must be >= 0 (0: contiguous), got %lld and %lld", where,
                static_cast<long long>(p->bc_batch_stride), static_cast<long long>(p->bc_state_stride));
  }
  clear_error();
  return PARTOOL_OK;
}

int validate_bidir(const partool_bidir_scan_params_t* p, const char* where) {
  if (p == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: params is NULL", where);
  // The per-direction `out` is ignored; validate each direction with the shared output in its place.
  partool_scan_params_t f = p->fwd, b = p->bwd;
  f.out = p->out;
  b.out = p->out;
  if (int s = validate_scan(&f, where)) return s;
  if (int s = validate_scan(&b, where)) return s;
  if (f.batch != b.batch || f.dim != b.dim || f.dstate != b.dstate || f.length != b.length ||
      f.groups != b.groups || f.io_dtype != b.io_dtype) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT,
                "%s: fwd and bwd differ in batch/dim/dstate/length/groups/io_dtype "
                "(%d/%d/%d/%d/%d/%d vs %d/%d/%d/%d/%d/%d)",
                where, f.batch, f.dim, f.dstate, f.length, f.groups, static_cast<int>(f.io_dtype), b.batch,
                b.dim, b.dstate, b.length, b.groups, static_cast<int>(b.io_dtype));
  }
  const partool_scan_params_t fs = with_strides(f), bs = with_strides(b);
  if (fs.batch_stride != bs.batch_stride || fs.dim_stride != bs.dim_stride) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT,
                "%s: fwd and bwd differ in batch_stride/dim_stride (%lld/%lld vs %lld/%lld); out has one layout", where,
                static_cast<long long>(fs.batch_stride), static_cast<long long>(fs.dim_stride),
                static_cast<long long>(bs.batch_stride), static_cast<long long>(bs.dim_stride));
  }
  clear_error();
  return PARTOOL_OK;
}

int validate_conv(const partool_conv1d_params_t* p, const char* where) {
  if (p == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: params is NULL", where);
  if (int s = validate_rows(p->batch, p->dim, p->length, where)) return s;
  if (p->width < 1 || p->width > PARTOOL_MAX_CONV_WIDTH) {
    return fail(PARTOOL_ERR_UNSUPPORTED_SHAPE, "%s: width=%d is outside the supported 1..%d", where, p->width,
                PARTOOL_MAX_CONV_WIDTH);
  }
  if (int s = validate_dtype(p->io_dtype, where)) return s;
  if (p->x == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: x is NULL", where);
  if (p->weight == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: weight is NULL", where);
  if (p->out == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: out is NULL", where);
  if (p->out == p->x) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: out must not be x (no in-place conv)", where);
  if (int s = validate_strides(p->batch, p->dim, p->length, p->batch_stride, p->dim_stride, "x/out", where)) return s;
  clear_error();
  return PARTOOL_OK;
}

int validate_conv_pair(const partool_conv1d_pair_params_t* p, const char* where) {
  if (p == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: params is NULL", where);
  if (int s = validate_conv(&p->first, where)) return s;
  if (int s = validate_conv(&p->second, where)) return s;
  const partool_conv1d_params_t &a = p->first, &b = p->second;
  if (a.batch != b.batch || a.dim != b.dim || a.length != b.length || a.width != b.width || a.io_dtype != b.io_dtype) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT,
                "%s: the two calls differ in batch/dim/length/width/io_dtype (%d/%d/%d/%d/%d vs %d/%d/%d/%d/%d)", where,
                a.batch, a.dim, a.length, a.width, static_cast<int>(a.io_dtype), b.batch, b.dim, b.length, b.width,
                static_cast<int>(b.io_dtype));
  }
  if (a.out == b.x || b.out == a.x || a.out == b.out) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: an out is the other call's x or out", where);
  }
  clear_error();
  return PARTOOL_OK;
}

namespace {

// Stands in for the forward's `out`, which a backward does not read, so that the forward's own validation
// (which requires an out) can be reused unchanged.
char g_unread_out;

// An optional gradient must be given exactly when the forward has the matching input.
int validate_optional_grad(const void* input, const float* grad, const char* input_name, const char* grad_name,
                           const char* where) {
  if ((input != nullptr) == (grad != nullptr)) return PARTOOL_OK;
  return fail(PARTOOL_ERR_INVALID_ARGUMENT, input != nullptr ? "%s: %s is NULL but fwd.%s is set"
                                                             : "%s: %s must be NULL when fwd.%s is NULL",
              where, grad_name, input_name);
}

}  // namespace

int validate_scan_bwd(const partool_scan_bwd_params_t* p, const char* where) {
  if (p == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: params is NULL", where);
  partool_scan_params_t f = p->fwd;
  f.out = &g_unread_out;
  if (int s = validate_scan(&f, where)) return s;
  const struct {
    const void* ptr;
    const char* name;
  } required[] = {{p->dout, "dout"}, {p->du, "du"}, {p->ddelta, "ddelta"},
                  {p->dA, "dA"},     {p->dB, "dB"}, {p->dC, "dC"}};
  for (const auto& r : required) {
    if (r.ptr == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: %s is NULL", where, r.name);
  }
  if (int s = validate_optional_grad(f.D, p->dD, "D", "dD", where)) return s;
  if (int s = validate_optional_grad(f.z, p->dz, "z", "dz", where)) return s;
  if (int s = validate_optional_grad(f.delta_bias, p->ddelta_bias, "delta_bias", "ddelta_bias", where)) return s;
  clear_error();
  return PARTOOL_OK;
}

int validate_conv_bwd(const partool_conv1d_bwd_params_t* p, const char* where) {
  if (p == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: params is NULL", where);
  partool_conv1d_params_t f = p->fwd;
  f.out = &g_unread_out;
  if (int s = validate_conv(&f, where)) return s;
  if (p->dout == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: dout is NULL", where);
  if (p->dx == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: dx is NULL", where);
  if (p->dweight == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: dweight is NULL", where);
  if (int s = validate_optional_grad(f.bias, p->dbias, "bias", "dbias", where)) return s;
  clear_error();
  return PARTOOL_OK;
}

int validate_add_rms_norm(const partool_add_rms_norm_params_t* p, const char* where) {
  if (p == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: params is NULL", where);
  if (int s = validate_rows(p->batch, p->dim, p->length, where)) return s;
  if (int s = validate_dtype(p->io_dtype, where)) return s;
  if (!(p->eps >= 0.0f)) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: eps=%g must be >= 0", where, p->eps);
  if (p->x == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: x is NULL", where);
  if (p->weight == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: weight is NULL", where);
  if (p->out == nullptr) return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: out is NULL", where);
  if (p->out == p->x || p->out == p->residual || p->out == p->residual_out) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: out must not be x, residual or residual_out", where);
  }
  if (p->residual_out != nullptr && static_cast<const void*>(p->residual_out) == p->x) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: residual_out must not be x", where);
  }
  clear_error();
  return PARTOOL_OK;
}

namespace {
// Indexed by partool_scan_cuda_variant_t.
constexpr const char* kScanVariantNames[PARTOOL_SCAN_CUDA_VARIANT_COUNT] = {
    "auto",         "chunked",      "chunked/tile4", "chunked/tile8", "chunked/tile32", "rows",
    "rows/states1", "rows/states2", "rows/states4",  "rows/states8",  "rows/states16"};
}  // namespace

int validate_scan_variant(int variant, const char* where) {
  if (variant < 0 || variant >= PARTOOL_SCAN_CUDA_VARIANT_COUNT) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: scan variant %d is not one of 0..%d (partool_scan_cuda_variant_t)",
                where, variant, PARTOOL_SCAN_CUDA_VARIANT_COUNT - 1);
  }
  return PARTOOL_OK;
}

int resolve_threads(int num_threads, int64_t work_items) {
  int n = num_threads > 0 ? num_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n, work_items)));
}

}  // namespace partool

extern "C" {

int partool_kernels_abi_version(void) { return PARTOOL_KERNELS_ABI_VERSION; }

const char* partool_status_string(int status) {
  switch (status) {
    case PARTOOL_OK:
      return "ok";
    case PARTOOL_ERR_INVALID_ARGUMENT:
      return "invalid argument";
    case PARTOOL_ERR_UNSUPPORTED_DSTATE:
      return "unsupported dstate";
    case PARTOOL_ERR_UNSUPPORTED_DTYPE:
      return "unsupported dtype";
    case PARTOOL_ERR_CUDA:
      return "cuda error";
    case PARTOOL_ERR_NO_CUDA:
      return "no cuda: library built without CUDA or no usable device";
    case PARTOOL_ERR_UNSUPPORTED_SHAPE:
      return "unsupported shape";
    case PARTOOL_ERR_OUT_OF_MEMORY:
      return "out of memory";
    default:
      return "unknown status";
  }
}

const char* partool_last_error_message(void) { return partool::g_message; }

const char* partool_scan_cuda_variant_name(int variant) {
  if (variant < 0 || variant >= PARTOOL_SCAN_CUDA_VARIANT_COUNT) return nullptr;
  return partool::kScanVariantNames[variant];
}

}  // extern "C"
