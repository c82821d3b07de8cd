/*
 * partool_kernels: inference kernels for Mamba-style models behind a plain C ABI.
 *
 * Selective scan (forward and backward), a fused bidirectional scan for Vim's two directions, the
 * causal depthwise conv1d + SiLU (forward and backward), and the residual add + RMSNorm between
 * blocks, each on CPU (threads across batch x channels, vectorised across the state) and on CUDA
 * (sm_80 and newer). The scan's
 * semantics follow partool's "Selective scan" contract (docs/architecture.md), which is
 * mamba_ssm's selective_scan_fn plus `reverse`:
 *
 *   dt_t = delta_t (+ delta_bias), softplus(dt_t) when delta_softplus
 *   h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t        (h_0 = 0, float32 state)
 *   y_t  = C_t . h_t + D * u_t ;   out_t = y_t * silu(z_t) when z is given
 *
 * with `reverse` scanning t = length-1 .. 0 instead (as on flipped inputs, without copies).
 *
 * Every entry point validates its arguments and returns a status (PARTOOL_OK = 0 or one of the
 * PARTOOL_ERR_* codes below); it never aborts. partool_last_error_message() gives the detail of the
 * most recent failure on the calling thread. The CUDA entry points take device pointers, enqueue
 * on the given stream and return without synchronising; they never allocate.
 */
#ifndef PARTOOL_KERNELS_H
#define PARTOOL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PARTOOL_API __declspec(dllexport)
#else
#define PARTOOL_API __attribute__((visibility("default")))
#endif

#define PARTOOL_KERNELS_ABI_VERSION 4  /* 2: element strides in the scan and conv1d structs; 3: CUDA scan variants;
                                          4: backward of the scan and of the conv1d */

/* Largest d_state the kernels accept (d_state is any value in 1..PARTOOL_MAX_DSTATE). */
#define PARTOOL_MAX_DSTATE 16
/* Widest causal conv1d the kernels accept. */
#define PARTOOL_MAX_CONV_WIDTH 4

typedef enum { PARTOOL_DTYPE_F32 = 0, PARTOOL_DTYPE_F16 = 1, PARTOOL_DTYPE_BF16 = 2 } partool_dtype_t;

/* Status codes returned by every entry point. */
enum {
  PARTOOL_OK = 0,
  PARTOOL_ERR_INVALID_ARGUMENT = 1,  /* null pointer, non-positive size, dim % groups != 0 ... */
  PARTOOL_ERR_UNSUPPORTED_DSTATE = 2, /* d_state outside 1..PARTOOL_MAX_DSTATE */
  PARTOOL_ERR_UNSUPPORTED_DTYPE = 3,  /* io_dtype not one of partool_dtype_t */
  PARTOOL_ERR_CUDA = 4,               /* a CUDA runtime call or kernel launch failed */
  PARTOOL_ERR_NO_CUDA = 5,            /* the library was built without CUDA, or no device is usable */
  PARTOOL_ERR_UNSUPPORTED_SHAPE = 6,  /* valid but beyond what a kernel handles (see the message) */
  PARTOOL_ERR_OUT_OF_MEMORY = 7       /* host scratch allocation failed (CPU kernels) */
};

typedef struct {
  int batch, dim, dstate, length, groups;   /* B/C are (batch, groups, dstate, length), channel c uses group c/(dim/groups) */
  partool_dtype_t io_dtype;                 /* dtype of u, delta, B, C, z, out */
  const void* u; const void* delta;         /* (batch, dim, length), strides below */
  const float* A;                           /* (dim, dstate) */
  const void* B; const void* C;             /* (batch, groups, dstate, length), strides below */
  const float* D;                           /* (dim) or NULL */
  const void* z;                            /* (batch, dim, length) or NULL */
  const float* delta_bias;                  /* (dim) or NULL */
  void* out;                                /* (batch, dim, length) */
  float* last_state;                        /* (batch, dim, dstate) or NULL */
  int delta_softplus;                       /* softplus(delta + delta_bias) when nonzero */
  int reverse;                              /* scan from the last step to the first */
  /* Element strides (ABI 2), so that the tensors may be views of larger buffers: slices of one projection's
   * output, or (dim, batch * length) matrices that hold the whole batch. The length axis is contiguous.
   * u, delta, z and out share one layout, element (b, c, t) at b * batch_stride + c * dim_stride + t;
   * B and C share another, element (b, g, n, t) at b * bc_batch_stride + (g * dstate + n) * bc_state_stride + t.
   * 0 means contiguous: dim * length and length; groups * dstate * length and length. The rows of out
   * must not overlap. */
  int64_t batch_stride, dim_stride;
  int64_t bc_batch_stride, bc_state_stride;
} partool_scan_params_t;

PARTOOL_API int partool_kernels_abi_version(void);
PARTOOL_API const char* partool_status_string(int status);    /* 0 = ok; nonzero: invalid argument, unsupported dstate, cuda error ... */
PARTOOL_API int partool_selective_scan_fwd_cpu(const partool_scan_params_t* p, int num_threads);  /* num_threads <= 0: all cores */
PARTOOL_API int partool_selective_scan_fwd_cuda(const partool_scan_params_t* p, void* cuda_stream);  /* device pointers */
PARTOOL_API size_t partool_selective_scan_workspace_size(const partool_scan_params_t* p);  /* CUDA scratch bytes needed (0 if none) */

/* ---- additions after the first ABI above ---- */

/* Detail of the last failing call on this thread ("" after a success); valid until the next call. */
PARTOOL_API const char* partool_last_error_message(void);

/* 1 when the library holds CUDA kernels, 0 for a CPU-only build. */
PARTOOL_API int partool_kernels_has_cuda(void);

/*
 * Fused bidirectional scan (Vim "bimamba v2") without flipped copies:
 *
 *   out = out_scale * ( scan(fwd, first -> last) + scan(bwd, last -> first) )
 *
 * where each term is that direction's y * silu(z) (+ D * u) as in the single scan. In Vim the
 * backward branch runs on flipped x and z and its result is flipped back; here the backward
 * direction's inputs stay in natural order (its conv1d runs anti-causally, see the conv1d call)
 * and `bwd` is scanned in reverse, so no flip is ever materialised. Vim averages: out_scale = 0.5.
 *
 * fwd and bwd must agree on batch, dim, dstate, length, groups, io_dtype, batch_stride and
 * dim_stride (out has that layout). Their `reverse` and `out` fields are ignored (fwd is scanned
 * forward, bwd in reverse, both into `out`); every other field, last_state and the B/C strides
 * included, is per direction (z may be the same pointer in both).
 * The CUDA version keeps the first direction's result in shared memory: it needs
 * 4 * 4 * length bytes of it per block and returns PARTOOL_ERR_UNSUPPORTED_SHAPE when the device
 * has too little (length beyond about 12,000 on H100); call the single scan twice then.
 */
typedef struct {
  partool_scan_params_t fwd;
  partool_scan_params_t bwd;
  void* out;        /* (batch, dim, length), io_dtype */
  float out_scale;  /* 0.5 averages the two directions */
} partool_bidir_scan_params_t;

PARTOOL_API int partool_selective_scan_bidir_fwd_cpu(const partool_bidir_scan_params_t* p, int num_threads);
PARTOOL_API int partool_selective_scan_bidir_fwd_cuda(const partool_bidir_scan_params_t* p, void* cuda_stream);

/*
 * CUDA scan variants (ABI 3). The library has two scan designs: the sequence-chunked kernel (a block scans a
 * tile of channels along the whole sequence in chunks, then fixes up the chunk boundaries) and the
 * state-split row kernel (each row's recurrence runs forward in registers, its 16 states split over 1-16
 * lanes). Every variant computes the same scan within the dtype's tolerance; which is fastest depends on the
 * shape and the GPU, so callers that can time them choose per shape: the TensorRT plugin advertises the
 * explicit variants as tactics, and partool's PyTorch binding times them on a shape's first call.
 * PARTOOL_SCAN_CUDA_AUTO is the library's own heuristic, and what partool_selective_scan_fwd_cuda runs.
 * A chunked tile whose shared memory does not fit the device for a shape falls back to the heuristic tile.
 */
typedef enum {
  PARTOOL_SCAN_CUDA_AUTO = 0,
  PARTOOL_SCAN_CUDA_CHUNKED = 1,         /* chunked, channel tile by heuristic */
  PARTOOL_SCAN_CUDA_CHUNKED_TILE4 = 2,   /* chunked, 4 channels a block */
  PARTOOL_SCAN_CUDA_CHUNKED_TILE8 = 3,
  PARTOOL_SCAN_CUDA_CHUNKED_TILE32 = 4,
  PARTOOL_SCAN_CUDA_ROWS = 5,            /* rows, states per lane by heuristic */
  PARTOOL_SCAN_CUDA_ROWS_STATES1 = 6,    /* rows, 1 state a lane (16 lanes a row) */
  PARTOOL_SCAN_CUDA_ROWS_STATES2 = 7,
  PARTOOL_SCAN_CUDA_ROWS_STATES4 = 8,
  PARTOOL_SCAN_CUDA_ROWS_STATES8 = 9,
  PARTOOL_SCAN_CUDA_ROWS_STATES16 = 10,  /* rows, a row's 16 states in one lane */
  PARTOOL_SCAN_CUDA_VARIANT_COUNT = 11
} partool_scan_cuda_variant_t;

/* "auto", "chunked", "chunked/tile4", ..., "rows", "rows/states1", ...; NULL outside 0..VARIANT_COUNT-1. */
PARTOOL_API const char* partool_scan_cuda_variant_name(int variant);
/* The scan calls above with a variant; PARTOOL_ERR_INVALID_ARGUMENT for a variant outside the enum. */
PARTOOL_API int partool_selective_scan_fwd_cuda_variant(const partool_scan_params_t* p, int variant, void* cuda_stream);
PARTOOL_API int partool_selective_scan_bidir_fwd_cuda_variant(const partool_bidir_scan_params_t* p, int variant,
                                                              void* cuda_stream);

/*
 * Depthwise conv1d over the sequence, with optional SiLU: for channel c,
 *   causal   (reverse == 0): out[t] = act(bias[c] + sum_k weight[c,k] * x[t - (width-1) + k])
 *   anti-causal (reverse != 0): out[t] = act(bias[c] + sum_k weight[c,k] * x[t + (width-1) - k])
 * with x = 0 outside [0, length). The causal form is nn.Conv1d(groups=dim, padding=width-1)
 * truncated to `length` (causal_conv1d_fn); the anti-causal form equals flip(conv(flip(x))), which
 * is what Vim's backward branch computes, without the flips.
 */
typedef struct {
  int batch, dim, length, width;  /* width in 1..PARTOOL_MAX_CONV_WIDTH */
  partool_dtype_t io_dtype;       /* dtype of x and out */
  const void* x;                  /* (batch, dim, length), strides below */
  const float* weight;            /* (dim, width) */
  const float* bias;              /* (dim) or NULL */
  void* out;                      /* (batch, dim, length); must not overlap x */
  int silu;                       /* apply SiLU when nonzero */
  int reverse;                    /* anti-causal direction */
  /* Element strides of x and out (one layout, as the scan's): (b, c, t) at b * batch_stride + c * dim_stride + t;
   * 0 means contiguous (dim * length, length). */
  int64_t batch_stride, dim_stride;
} partool_conv1d_params_t;

PARTOOL_API int partool_causal_conv1d_fwd_cpu(const partool_conv1d_params_t* p, int num_threads);
PARTOOL_API int partool_causal_conv1d_fwd_cuda(const partool_conv1d_params_t* p, void* cuda_stream);

/*
 * Two conv1d calls in one launch (ABI 2): Vim's causal and anti-causal convs of the same x. Each
 * call keeps every field of its own (weights, reverse, silu, strides, out); both must agree on batch,
 * dim, length, width and io_dtype, and neither out may be the other's x.
 */
typedef struct {
  partool_conv1d_params_t first;
  partool_conv1d_params_t second;
} partool_conv1d_pair_params_t;

PARTOOL_API int partool_causal_conv1d_pair_fwd_cpu(const partool_conv1d_pair_params_t* p, int num_threads);
PARTOOL_API int partool_causal_conv1d_pair_fwd_cuda(const partool_conv1d_pair_params_t* p, void* cuda_stream);

/*
 * Residual add + RMSNorm over the channels, in the kernels' channel-major (batch, dim, length) layout:
 * the add + norm between two Vim blocks, with the residual stream kept in float32 (mamba_ssm's fused
 * add_norm with residual_in_fp32). For every batch b and position t, over the channels c:
 *
 *   r[c]   = residual[b,c,t] + x[b,c,t]            (r = x when residual is NULL)
 *   out[c] = r[c] / sqrt(mean_c(r[c]^2) + eps) * weight[c]
 *
 * r is written to residual_out (float32) unless that is NULL; residual_out may be residual itself
 * (in place). out must not overlap x or the residual tensors.
 */
typedef struct {
  int batch, dim, length;
  partool_dtype_t io_dtype;  /* dtype of x and out */
  float eps;
  const void* x;             /* (batch, dim, length), contiguous */
  const float* residual;     /* (batch, dim, length) or NULL */
  const float* weight;       /* (dim) */
  float* residual_out;       /* (batch, dim, length) or NULL */
  void* out;                 /* (batch, dim, length), io_dtype */
} partool_add_rms_norm_params_t;

PARTOOL_API int partool_add_rms_norm_fwd_cpu(const partool_add_rms_norm_params_t* p, int num_threads);
PARTOOL_API int partool_add_rms_norm_fwd_cuda(const partool_add_rms_norm_params_t* p, void* cuda_stream);

/*
 * Backward of the selective scan (ABI 4): the gradients of a loss with respect to every input of one
 * partool_selective_scan_fwd_* call, given the gradient `dout` of its `out` (the last state gets no
 * gradient). Like mamba_ssm's backward it recomputes the states from the inputs instead of storing them:
 * no (batch, dim, length, dstate) tensor is ever kept, forward or backward. With dt the delta after bias
 * and softplus, a_t = exp(dt_t * A), y_t = C_t . h_t + D * u_t, and g_t the gradient of y_t
 * (dout_t * silu(z_t) with z, else dout_t), the states' gradient runs the other way,
 *
 *   dh_t = g_t * C_t + a_{t+1} * dh_{t+1}          (from the last scanned step to the first)
 *
 * and dA += dh_t * dt_t * a_t * h_{t-1}, dB_t += dh_t * dt_t * u_t (summed over the group's channels),
 * dC_t += g_t * h_t (likewise), du_t = g_t * D + sum_n dh_t * dt_t * B_t, ddt_t = sum_n dh_t * (A * a_t *
 * h_{t-1} + B_t * u_t), ddelta_t = ddt_t * sigmoid(delta_t + delta_bias) with softplus (else ddt_t),
 * ddelta_bias = sum over batch and time of ddelta, dD = sum g_t * u_t, dz_t = dout_t * y_t * silu'(z_t).
 * With `reverse`, "the last scanned step" is t = 0 and h_{t-1} means h_{t+1}.
 *
 * `fwd` is the forward call's argument block (inputs, flags, strides; its out and last_state are not
 * read). Every gradient is float32, contiguous and written, not accumulated. dD, dz and ddelta_bias are
 * required exactly when fwd has D, z and delta_bias (NULL otherwise); du, ddelta, dA, dB and dC always.
 * The CPU call takes host scratch of about 2 * num_threads * batch * groups * dstate * length * 8 bytes
 * (the sums of dB and dC per block of channels, dstate padded to the vector width) and gives the same bits
 * on every run with the same thread count; the CUDA call allocates nothing and sums dA, dB, dC, dD and
 * ddelta_bias with atomics (cudaMemsetAsync zeroes them first), so their float32 rounding may differ run
 * to run.
 */
typedef struct {
  partool_scan_params_t fwd;
  const void* dout;     /* (batch, dim, length), io_dtype, in fwd's u layout (batch_stride, dim_stride) */
  float* du;            /* (batch, dim, length) */
  float* ddelta;        /* (batch, dim, length): of delta as passed, before delta_bias and softplus */
  float* dA;            /* (dim, dstate) */
  float* dB;            /* (batch, groups, dstate, length) */
  float* dC;            /* (batch, groups, dstate, length) */
  float* dD;            /* (dim) */
  float* dz;            /* (batch, dim, length) */
  float* ddelta_bias;   /* (dim) */
} partool_scan_bwd_params_t;

PARTOOL_API int partool_selective_scan_bwd_cpu(const partool_scan_bwd_params_t* p, int num_threads);
PARTOOL_API int partool_selective_scan_bwd_cuda(const partool_scan_bwd_params_t* p, void* cuda_stream);

/*
 * Backward of the depthwise conv1d + optional SiLU (ABI 4), given `dout` of one
 * partool_causal_conv1d_fwd_* call: dx (the conv's transpose: the mirrored taps over the other side),
 * dweight[c,k] = sum over batch and time of dpre[t] * x[tap position], dbias[c] = sum of dpre, where
 * dpre = dout * silu'(pre-activation) with SiLU, else dout. Gradients are float32, contiguous and
 * written; dbias is required exactly when fwd has a bias. The CUDA call sums dweight and dbias with
 * atomics after zeroing them (cudaMemsetAsync).
 */
typedef struct {
  partool_conv1d_params_t fwd;  /* the forward call (its out is not read) */
  const void* dout;             /* (batch, dim, length), io_dtype, in fwd's x layout */
  float* dx;                    /* (batch, dim, length) */
  float* dweight;               /* (dim, width) */
  float* dbias;                 /* (dim) */
} partool_conv1d_bwd_params_t;

PARTOOL_API int partool_causal_conv1d_bwd_cpu(const partool_conv1d_bwd_params_t* p, int num_threads);
PARTOOL_API int partool_causal_conv1d_bwd_cuda(const partool_conv1d_bwd_params_t* p, void* cuda_stream);

#ifdef __cplusplus
}
#endif

#endif /* PARTOOL_KERNELS_H */
