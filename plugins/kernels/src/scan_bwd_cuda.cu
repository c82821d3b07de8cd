// CUDA backward of the selective scan (partool_selective_scan_bwd_cuda; the math is in partool_kernels.h).
//
// Memory. Training must not keep the (batch, dim, length, dstate) states, so the kernel recomputes them, in
// two passes over each row (b, c) and in chunks of kK = 32 steps of the scan order:
//   pass 1  runs the recurrence forward from h = 0 and keeps only the chunk-boundary states (the state
//           entering each chunk);
//   pass 2  walks the chunks from the last to the first: recomputes the chunk's kK states into registers
//           from its boundary state, then runs the reverse recurrence dh_t = g_t C_t + a_{t+1} dh_{t+1}
//           over them, carrying a_{t+1} dh_{t+1} from one chunk to the one before it.
// The boundary states are parked in the row's own ddelta output: chunk i's 16 states at the positions of its
// first 16 steps, which pass 2 reads back before it overwrites them with chunk i's ddelta (only full chunks
// park: the first chunk starts from 0, and the last one's boundary state is still in registers when pass 2
// starts). So any length runs with no scratch memory and no limit from registers or shared memory.
//
// Work split (state-split, like the row forward scan_rows_cuda.cu). A block (128 threads) owns kRows = 8
// consecutive channels of one (batch, group); a row takes 16 neighbouring lanes, lane n holding state n (lanes
// past d_state carry zeros: A = B = C = 0 keeps their state and its gradient at 0, and they still take part in
// the shuffles). Per chunk the block stages u, dt and the chunk's other inputs as [kRows][kK] and B, C as
// [kK][16] in shared memory (30 KB in all) with coalesced loads, and writes du, ddelta and dz back from
// [kRows][kK] tiles. nvcc 13 keeps a lane's 32 recomputed states in registers (128 a thread on sm_80, 96 on
// sm_90, no spills).
//
// Reductions. The sums over the states that a step needs (C.h for y and dz, dh.B for du and ddt, dh.A.a.h
// for ddt) feed nothing back into the recurrence, so they wait for 16 steps: each lane keeps its terms of 16
// steps, and a transposing reduction (row_sums16: 15 shuffles for 16 sums, where 16 butterflies would take
// 64) leaves lane n with the totals of the group's step n, which it finishes. dB and dC (sums over the
// group's channels) are added over the two rows of a warp by one shuffle, over the block's four warps in
// shared memory, then once per block with atomicAdd; dA, dD and ddelta_bias (sums over batch and time) build
// up in registers over the whole row and take one atomicAdd per row. The atomics make the float32 rounding of
// these sums vary from run to run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.hpp"
#include "cuda_common.hpp"
#include "scan_cuda_common.cuh"

namespace partool {
namespace {

constexpr int kBwdThreads = 128;
constexpr int kLanesPerRow = PARTOOL_MAX_DSTATE;  // one state a lane
constexpr int kRows = kBwdThreads / kLanesPerRow;  // channels a block
constexpr int kWarps = kBwdThreads / 32;
constexpr int kK = 32;  // steps a chunk (a multiple of 16): the registers that hold the chunk's recomputed states
constexpr int kRowStride = kK + 1;     // [kRows][kK] tiles: odd, so that the rows of a warp hit distinct banks
constexpr int kStateStride = kLanesPerRow + 1;  // [kK][16] tiles: odd, so that staging by step is conflict-free
static_assert(kLanesPerRow == 16 && kK % kLanesPerRow == 0, "two rows a warp, chunks of whole 16-step groups");

// Shared-memory floats: 8 row tiles (u, dt, g, dsoftplus, dz factor; du, ddelta, y), B and C, and the
// per-warp dB and dC partial sums.
constexpr int kRowTile = kRows * kRowStride;
constexpr int kStateTile = kK * kStateStride;
constexpr int kSharedFloats = 8 * kRowTile + 2 * kStateTile + 2 * kWarps * kStateTile;

struct ScanBwdArgs {
  const void* u;
  const void* delta;
  const float* A;
  const void* B;
  const void* C;
  const float* D;
  const void* z;
  const float* delta_bias;
  const void* dout;
  float* du;
  float* ddelta;
  float* dA;
  float* dB;
  float* dC;
  float* dD;
  float* dz;
  float* ddelta_bias;
  int64_t batch_stride, dim_stride;        // u, delta, z and dout: element (b, c, t) at b * batch_stride + c * dim_stride + t
  int64_t bc_batch_stride, bc_state_stride;  // B and C: (b, g, n, t) at b * bc_batch_stride + (g * dstate + n) * bc_state_stride + t
  int batch, dim, dstate, length, groups;
  int tiles_per_group;  // blocks per (batch, group)
  int softplus, reverse;
};

struct Tiles {
  float *u, *dt, *g, *dsp, *dzf;  // inputs: u, dt, g = dout silu(z), d softplus / d delta, dout silu'(z)
  float *du, *ddelta, *y;         // outputs of the chunk's steps
  float *B, *C;                   // [kK][kStateStride]
  float *dB, *dC;                 // [kWarps][kK][kStateStride]
};

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

// Stages the chunk of logical steps [s0, s0 + kK) of the block's rows: u, dt and B always; with `all` also
// C and the gradient factors of dout. Steps past the sequence and rows past the group read as zeros: dt = 0
// leaves the state as it is (a = 1, no input) and g = 0 adds no gradient.
template <typename T>
__device__ void stage_chunk(const ScanBwdArgs& a, const Tiles& s, int b, int g, int c0, int nvalid, int s0,
                            bool all) {
  const int L = a.length;
  for (int e = threadIdx.x; e < kRows * kK; e += kBwdThreads) {
    const int r = e / kK, k = e % kK, step = s0 + k;
    const int at = r * kRowStride + k;
    float uv = 0.0f, dt = 0.0f, gv = 0.0f, dsp = 1.0f, dzf = 0.0f;
    if (r < nvalid && step < L) {
      const int64_t idx = b * a.batch_stride + (c0 + r) * a.dim_stride + (a.reverse ? L - 1 - step : step);
      uv = to_float(static_cast<const T*>(a.u)[idx]);
      const float x = to_float(static_cast<const T*>(a.delta)[idx]) + (a.delta_bias ? a.delta_bias[c0 + r] : 0.0f);
      dt = a.softplus ? softplus(x) : x;
      if (all) {
        if (a.softplus) dsp = sigmoid(x);  // softplus'(x)
        const float d = to_float(static_cast<const T*>(a.dout)[idx]);
        gv = d;
        if (a.z != nullptr) {
          const float zv = to_float(static_cast<const T*>(a.z)[idx]), sz = sigmoid(zv);
          gv = d * zv * sz;                                // dout silu(z)
          dzf = d * sz * fmaf(zv, 1.0f - sz, 1.0f);        // dout silu'(z)
        }
      }
    }
    s.u[at] = uv;
    s.dt[at] = dt;
    if (all) {
      s.g[at] = gv;
      s.dsp[at] = dsp;
      s.dzf[at] = dzf;
    }
  }
  const int64_t bc = b * a.bc_batch_stride + static_cast<int64_t>(g) * a.dstate * a.bc_state_stride;
  for (int e = threadIdx.x; e < kLanesPerRow * kK; e += kBwdThreads) {
    const int n = e / kK, k = e % kK, step = s0 + k;  // consecutive threads: consecutive steps (coalesced)
    float bv = 0.0f, cv = 0.0f;
    if (n < a.dstate && step < L) {
      const int64_t idx = bc + n * a.bc_state_stride + (a.reverse ? L - 1 - step : step);
      bv = to_float(static_cast<const T*>(a.B)[idx]);
      if (all) cv = to_float(static_cast<const T*>(a.C)[idx]);
    }
    s.B[k * kStateStride + n] = bv;
    if (all) s.C[k * kStateStride + n] = cv;
  }
}

// Sum over the 16 lanes of a row, in every lane.
__device__ __forceinline__ float row_sum(float v) {
#pragma unroll
  for (int off = kLanesPerRow / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off, kLanesPerRow);
  return v;
}

// One halving step of row_sums16: a lane keeps one half of v[0 .. 2 Half) (the upper one when its bit Half is
// set), sends the other to the lane whose bit Half differs and adds what comes back, so that v[i] then holds
// element i (+ Half when kept upper) summed over both lanes.
template <int Half>
__device__ __forceinline__ void fold_half(float (&v)[kLanesPerRow], int n) {
  const bool upper = (n & Half) != 0;
#pragma unroll
  for (int i = 0; i < Half; ++i) {
    const float send = upper ? v[i] : v[i + Half];
    v[i] = (upper ? v[i + Half] : v[i]) + __shfl_xor_sync(0xffffffffu, send, Half, kLanesPerRow);
  }
}

// The 16 sums over the lanes of a row of v[0..15], by recursive halving: lane n of the row returns the sum
// of v[n]. v is clobbered.
__device__ __forceinline__ float row_sums16(float (&v)[kLanesPerRow], int n) {
  static_assert(kLanesPerRow == 16, "four halvings");
  fold_half<8>(v, n);
  fold_half<4>(v, n);
  fold_half<2>(v, n);
  fold_half<1>(v, n);
  return v[0];
}

template <typename T>
__global__ void __launch_bounds__(kBwdThreads) scan_bwd_kernel(const ScanBwdArgs args) {
  PARTOOL_DYNAMIC_SHARED(float, smem);
  Tiles s;
  s.u = smem;
  s.dt = s.u + kRowTile;
  s.g = s.dt + kRowTile;
  s.dsp = s.g + kRowTile;
  s.dzf = s.dsp + kRowTile;
  s.du = s.dzf + kRowTile;
  s.ddelta = s.du + kRowTile;
  s.y = s.ddelta + kRowTile;
  s.B = s.y + kRowTile;
  s.C = s.B + kStateTile;
  s.dB = s.C + kStateTile;
  s.dC = s.dB + kWarps * kStateTile;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int row = tid / kLanesPerRow, n = tid % kLanesPerRow;
  const int L = args.length, dim = args.dim, groups = args.groups, dstate = args.dstate;
  const int tiles = args.tiles_per_group;
  const int b = blockIdx.x / (groups * tiles);
  const int g = (blockIdx.x / tiles) % groups;
  const int cpg = dim / groups;
  const int c0 = g * cpg + (blockIdx.x % tiles) * kRows;
  const int nvalid = min(kRows, cpg - (blockIdx.x % tiles) * kRows);
  const int c = c0 + row;
  const bool row_valid = row < nvalid, state_valid = row_valid && n < dstate;
  const float An = state_valid ? args.A[static_cast<int64_t>(c) * dstate + n] : 0.0f;
  const float A2 = An * kLog2e;
  const float Dc = row_valid && args.D != nullptr ? args.D[c] : 0.0f;
  const int nchunks = (L + kK - 1) / kK;
  const int64_t grad_row = (static_cast<int64_t>(b) * dim + c) * L;  // this row in du, ddelta, dz (contiguous)
  // Where chunk `chunk` parks its boundary state of this lane: one of the chunk's own ddelta positions.
  auto parking = [&](int chunk) {
    const int step = chunk * kK + n;
    return args.ddelta + grad_row + (args.reverse ? L - 1 - step : step);
  };
  auto at = [&](int k) { return row * kRowStride + k; };

  // ---- pass 1: the states entering chunks 1 .. nchunks - 1
  float h = 0.0f;
  for (int chunk = 0; chunk + 1 < nchunks; ++chunk) {
    if (chunk > 0 && state_valid) *parking(chunk) = h;
    __syncthreads();  // the previous chunk's readers of the tiles are done
    stage_chunk<T>(args, s, b, g, c0, nvalid, chunk * kK, false);
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kK; ++k) {
      const float dt = s.dt[at(k)];
      h = fmaf(ex2(dt * A2), h, dt * s.u[at(k)] * s.B[k * kStateStride + n]);
    }
  }

  // ---- pass 2: the chunks from the last to the first
  float carry = 0.0f;  // a_{t+1} dh_{t+1} of the step after the chunk (0 after the last step)
  float dA_sum = 0.0f, dD_sum = 0.0f, dbias_sum = 0.0f;
  for (int chunk = nchunks - 1; chunk >= 0; --chunk) {
    const int s0 = chunk * kK;
    // The state entering the chunk: pass 1's last one in registers, parked ones read back before this
    // chunk's ddelta overwrites them (after the second barrier below).
    const float h_in = chunk == nchunks - 1 ? h : (chunk > 0 && state_valid ? *parking(chunk) : 0.0f);
    __syncthreads();  // the previous chunk's stores from the tiles are done
    stage_chunk<T>(args, s, b, g, c0, nvalid, s0, true);
    __syncthreads();

    // The chunk's states, recomputed as in the forward: hs[k] after step k.
    float hs[kK];
    {
      float hh = h_in;
#pragma unroll
      for (int k = 0; k < kK; ++k) {
        const float dt = s.dt[at(k)];
        hh = fmaf(ex2(dt * A2), hh, dt * s.u[at(k)] * s.B[k * kStateStride + n]);
        hs[k] = hh;
      }
    }
    // The reverse recurrence, from the chunk's last step to its first, in groups of 16 steps.
#pragma unroll
    for (int k0 = kK - kLanesPerRow; k0 >= 0; k0 -= kLanesPerRow) {
      float dhB[kLanesPerRow], dhAah[kLanesPerRow], Ch[kLanesPerRow];  // this state's terms of step k0 + j
#pragma unroll
      for (int j = kLanesPerRow - 1; j >= 0; --j) {
        const int k = k0 + j;
        const float dt = s.dt[at(k)], uv = s.u[at(k)], gv = s.g[at(k)];
        const float Bn = s.B[k * kStateStride + n], Cn = s.C[k * kStateStride + n];
        const float a = ex2(dt * A2);
        const float ah = a * (k > 0 ? hs[k - 1] : h_in);  // a_t h_{t-1}
        const float dh = fmaf(gv, Cn, carry);
        carry = a * dh;
        dA_sum = fmaf(dh * dt, ah, dA_sum);
        dhB[j] = dh * Bn;
        dhAah[j] = dh * An * ah;
        Ch[j] = Cn * hs[k];
        // dB and dC of this step, added over the warp's two rows (its lanes n and n + 16)
        float dBv = dh * dt * uv, dCv = gv * hs[k];
        dBv += __shfl_xor_sync(0xffffffffu, dBv, kLanesPerRow);
        dCv += __shfl_xor_sync(0xffffffffu, dCv, kLanesPerRow);
        if (lane < kLanesPerRow) {
          s.dB[(warp * kK + k) * kStateStride + n] = dBv;
          s.dC[(warp * kK + k) * kStateStride + n] = dCv;
        }
      }
      // Lane n finishes step k0 + n of the group.
      const float sum_dhB = row_sums16(dhB, n), sum_dhAah = row_sums16(dhAah, n), sum_Ch = row_sums16(Ch, n);
      const int k = k0 + n;
      const float dt = s.dt[at(k)], uv = s.u[at(k)], gv = s.g[at(k)];
      const float ddelta = fmaf(uv, sum_dhB, sum_dhAah) * s.dsp[at(k)];  // ddt = sum_n dh (A a h_{t-1} + B u)
      s.du[at(k)] = fmaf(dt, sum_dhB, gv * Dc);
      s.ddelta[at(k)] = ddelta;
      s.y[at(k)] = fmaf(Dc, uv, sum_Ch);
      dD_sum = fmaf(gv, uv, dD_sum);
      dbias_sum += ddelta;
    }
    __syncthreads();

    // Coalesced stores of the chunk's du, ddelta and dz; its dB and dC summed over the warps, then added.
    for (int e = tid; e < kRows * kK; e += kBwdThreads) {
      const int r = e / kK, k = e % kK, step = s0 + k;
      if (r >= nvalid || step >= L) continue;
      const int64_t idx = (static_cast<int64_t>(b) * dim + c0 + r) * L + (args.reverse ? L - 1 - step : step);
      const int i = r * kRowStride + k;
      args.du[idx] = s.du[i];
      args.ddelta[idx] = s.ddelta[i];
      if (args.dz != nullptr) args.dz[idx] = s.y[i] * s.dzf[i];
    }
    const int64_t bc_grad = (static_cast<int64_t>(b) * groups + g) * dstate * L;  // dB, dC: contiguous
    for (int e = tid; e < kLanesPerRow * kK; e += kBwdThreads) {
      const int sn = e / kK, k = e % kK, step = s0 + k;
      if (sn >= dstate || step >= L) continue;
      float sum_B = 0.0f, sum_C = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        sum_B += s.dB[(w * kK + k) * kStateStride + sn];
        sum_C += s.dC[(w * kK + k) * kStateStride + sn];
      }
      const int64_t idx = bc_grad + static_cast<int64_t>(sn) * L + (args.reverse ? L - 1 - step : step);
      atomicAdd(args.dB + idx, sum_B);
      atomicAdd(args.dC + idx, sum_C);
    }
  }

  if (state_valid) atomicAdd(args.dA + static_cast<int64_t>(c) * dstate + n, dA_sum);
  dD_sum = row_sum(dD_sum);  // each lane summed its own steps of every group
  dbias_sum = row_sum(dbias_sum);
  if (row_valid && n == 0) {
    if (args.dD != nullptr) atomicAdd(args.dD + c, dD_sum);
    if (args.ddelta_bias != nullptr) atomicAdd(args.ddelta_bias + c, dbias_sum);
  }
}

int scan_bwd(const partool_scan_bwd_params_t* p, void* cuda_stream, const char* where) {
  if (int s = validate_scan_bwd(p, where)) return s;
  DeviceInfo dev;  // no usable device: PARTOOL_ERR_NO_CUDA before anything is enqueued
  if (int s = device_info(&dev, where)) return s;
  const partool_scan_params_t& f = p->fwd;
  const struct {
    const void* ptr;
    const char* name;
  } ptrs[] = {{f.u, "u"},         {f.delta, "delta"},   {f.A, "A"},
              {f.B, "B"},         {f.C, "C"},           {f.D, "D"},
              {f.z, "z"},         {f.delta_bias, "delta_bias"}, {p->dout, "dout"},
              {p->du, "du"},      {p->ddelta, "ddelta"}, {p->dA, "dA"},
              {p->dB, "dB"},      {p->dC, "dC"},        {p->dD, "dD"},
              {p->dz, "dz"},      {p->ddelta_bias, "ddelta_bias"}};
  for (const auto& x : ptrs) {
    if (int s = check_device_ptr(x.ptr, x.name, where)) return s;
  }
  const partool_scan_params_t q = with_strides(f);
  ScanBwdArgs args{};
  args.u = q.u;
  args.delta = q.delta;
  args.A = q.A;
  args.B = q.B;
  args.C = q.C;
  args.D = q.D;
  args.z = q.z;
  args.delta_bias = q.delta_bias;
  args.dout = p->dout;
  args.du = p->du;
  args.ddelta = p->ddelta;
  args.dA = p->dA;
  args.dB = p->dB;
  args.dC = p->dC;
  args.dD = p->dD;
  args.dz = p->dz;
  args.ddelta_bias = p->ddelta_bias;
  args.batch_stride = q.batch_stride;
  args.dim_stride = q.dim_stride;
  args.bc_batch_stride = q.bc_batch_stride;
  args.bc_state_stride = q.bc_state_stride;
  args.batch = q.batch;
  args.dim = q.dim;
  args.dstate = q.dstate;
  args.length = q.length;
  args.groups = q.groups;
  args.softplus = q.delta_softplus;
  args.reverse = q.reverse;
  args.tiles_per_group = (q.dim / q.groups + kRows - 1) / kRows;
  const int64_t blocks = static_cast<int64_t>(q.batch) * q.groups * args.tiles_per_group;
  if (blocks > 0x7fffffff) {
    return fail(PARTOOL_ERR_UNSUPPORTED_SHAPE, "%s: batch * dim too large (%lld blocks)", where,
                static_cast<long long>(blocks));
  }

  auto stream = static_cast<cudaStream_t>(cuda_stream);
  const size_t f4 = sizeof(float);
  const size_t bc_bytes = f4 * q.batch * q.groups * q.dstate * static_cast<size_t>(q.length);
  const struct {
    float* ptr;
    size_t bytes;
  } sums[] = {{p->dA, f4 * q.dim * q.dstate}, {p->dB, bc_bytes}, {p->dC, bc_bytes},
              {p->dD, f4 * q.dim},           {p->ddelta_bias, f4 * q.dim}};
  for (const auto& x : sums) {
    const cudaError_t err = zero_async(x.ptr, x.bytes, stream);
    if (err != cudaSuccess) return fail(PARTOOL_ERR_CUDA, "%s: cudaMemsetAsync failed: %s", where, error_string(err));
  }

  const size_t smem = sizeof(float) * kSharedFloats;
  const unsigned nblocks = static_cast<unsigned>(blocks);
  cudaError_t err;
  switch (q.io_dtype) {
    case PARTOOL_DTYPE_F16:
      err = launch_kernel(scan_bwd_kernel<__half>, nblocks, kBwdThreads, smem, stream, args);
      break;
    case PARTOOL_DTYPE_BF16:
      err = launch_kernel(scan_bwd_kernel<__nv_bfloat16>, nblocks, kBwdThreads, smem, stream, args);
      break;
    default:
      err = launch_kernel(scan_bwd_kernel<float>, nblocks, kBwdThreads, smem, stream, args);
  }
  if (err != cudaSuccess) return fail(PARTOOL_ERR_CUDA, "%s: kernel launch failed: %s", where, error_string(err));
  clear_error();
  return PARTOOL_OK;
}

}  // namespace
}  // namespace partool

extern "C" int partool_selective_scan_bwd_cuda(const partool_scan_bwd_params_t* p, void* cuda_stream) {
  return partool::scan_bwd(p, cuda_stream, "partool_selective_scan_bwd_cuda");
}
