// Shared host-side pieces of the CPU and CUDA entry points: argument validation and the per-thread
// error message behind partool_last_error_message().
#pragma once

#include <cstdint>

#include "partool_kernels.h"

namespace partool {

// Records `message` (printf-style) as this thread's last error and returns `status`.
int fail(int status, const char* fmt, ...);
// Clears this thread's last error (called on success).
void clear_error();

// Element size of an io dtype, 0 when the dtype is not a partool_dtype_t.
int dtype_size(int dtype);

// Checks every field of a scan; `where` names the entry point in messages.
int validate_scan(const partool_scan_params_t* p, const char* where);
// Checks a bidirectional call: both directions, their agreement, and `out`.
int validate_bidir(const partool_bidir_scan_params_t* p, const char* where);
// Checks a conv1d call.
int validate_conv(const partool_conv1d_params_t* p, const char* where);
// Checks a pair of conv1d calls: each, their agreement, and no out aliasing the other's x.
int validate_conv_pair(const partool_conv1d_pair_params_t* p, const char* where);
// Checks a scan backward: its forward call (whose out and last_state are not read), dout, and that every
// gradient is given, the optional ones (dD, dz, ddelta_bias) exactly when the forward has D, z, delta_bias.
int validate_scan_bwd(const partool_scan_bwd_params_t* p, const char* where);
// Checks a conv1d backward: its forward call (whose out is not read), dout, dx, dweight, and dbias exactly
// when the forward has a bias.
int validate_conv_bwd(const partool_conv1d_bwd_params_t* p, const char* where);
// Checks an add + RMSNorm call.
int validate_add_rms_norm(const partool_add_rms_norm_params_t* p, const char* where);

// Checks a CUDA scan variant (partool_scan_cuda_variant_t).
int validate_scan_variant(int variant, const char* where);

// The call with its zero (default) strides replaced by the contiguous ones; every kernel reads the
// strides of such a copy.
partool_scan_params_t with_strides(const partool_scan_params_t& p);
partool_conv1d_params_t with_strides(const partool_conv1d_params_t& p);

// Number of worker threads for the CPU kernels: num_threads <= 0 means all hardware threads.
int resolve_threads(int num_threads, int64_t work_items);

}  // namespace partool
