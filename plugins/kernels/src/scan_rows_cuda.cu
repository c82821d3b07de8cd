// CUDA selective scan, state-split rows: the second kernel design, for Vim's short sequences.
//
// Why a second design. At Vim-S shapes (l = 197, d = 768, n = 16) the sequence is short and there are
// many rows (batch x channels), so the chunked kernel's three passes (local scan, chunk-summary scan,
// fixup) and their barriers cost more than the parallelism along the sequence brings: measured on an
// H200 it ran 478 us at b = 64 against a 23 us HBM floor. Here a row's recurrence runs forward in
// registers with no fixup and one exponential per step and state (the MUFU-bound minimum), and the
// parallelism that small batches lack comes from splitting the 16 states of a row over TPR = 16 / S
// neighbouring lanes (C.h summed with warp shuffles) instead of splitting the sequence.
//
// Work split. A block (128 threads) owns RPB = 128 / TPR consecutive channels of one (batch, group);
// lane `part` of a row holds states [part * S, part * S + S). The sequence goes in tiles of LT steps:
// u, softplus(delta + bias) and silu(z) of the tile are staged as float [RPB][LT + 1 or 2] (an odd row
// stride: rows read at the same step hit distinct banks), B and C as [LT][16] (a broadcast to all rows);
// each row walks the tile's steps in scan order; the row's first lane writes
// y = (C.h + D u) silu(z) over silu(z) in shared memory, and the block stores the tile coalesced.
// d_state < 16 is zero-padded (A = B = C = 0 keeps padded states at 0), as in the chunked kernel.
//
// Bidirectional: the reverse direction runs first and writes out_scale * y to `out`; the forward
// direction reads it back and adds (same block, ordered by the barriers in between).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.hpp"
#include "cuda_common.hpp"
#include "scan_cuda_common.cuh"

namespace partool {
namespace {

constexpr int kRowThreads = 128;
constexpr int kBatch = 4;  // tile elements a thread loads before it uses the first
constexpr int kStates = 16;  // PARTOOL_MAX_DSTATE, zero-padded
static_assert(kStates == PARTOOL_MAX_DSTATE, "the kernel pads d_state to PARTOOL_MAX_DSTATE");

template <int S>
struct RowCfg {
  static constexpr int TPR = kStates / S;       // lanes per row
  static constexpr int RPB = kRowThreads / TPR;  // rows per block
};

// Row stride of the [RPB][.] tiles: odd, so that rows read at the same step hit distinct banks.
__host__ __device__ constexpr int row_stride(int lt) { return lt + 1 + (lt & 1); }

// Shared-memory floats of a tile of `lt` steps: u, dt, z/y rows plus the B and C tiles.
template <int S>
__host__ __device__ constexpr int row_tile_floats(int lt) {
  return 3 * RowCfg<S>::RPB * row_stride(lt) + 2 * lt * kStates;
}

template <typename T, int S>
__global__ void __launch_bounds__(kRowThreads) scan_rows_kernel(const ScanArgs args, const int lt) {
  constexpr int TPR = RowCfg<S>::TPR, RPB = RowCfg<S>::RPB;
  const int ls = row_stride(lt);
  PARTOOL_DYNAMIC_SHARED(float, smem);
  float* s_u = smem;
  float* s_dt = s_u + RPB * ls;
  float* s_zy = s_dt + RPB * ls;  // silu(z), overwritten by the row's output y
  float* s_B = s_zy + RPB * ls;   // [lt][16]
  float* s_C = s_B + lt * kStates;

  const int tid = threadIdx.x;
  const int row = tid / TPR, part = tid % TPR;
  const int L = args.length, dim = args.dim, groups = args.groups, dstate = args.dstate;
  const int tiles = args.tiles_per_group;
  const int b = blockIdx.x / (groups * tiles);
  const int g = (blockIdx.x / tiles) % groups;
  const int cpg = dim / groups;
  const int c0 = g * cpg + (blockIdx.x % tiles) * RPB;
  const int nvalid = min(RPB, cpg - (blockIdx.x % tiles) * RPB);
  const bool row_valid = row < nvalid;
  const int c = c0 + row;
  const int ntiles = (L + lt - 1) / lt;

  for (int di = 0; di < args.ndir; ++di) {
    const int d = args.ndir == 2 ? 1 - di : 0;
    const DirArgs dir = args.dir[d];  // a copy: kept in registers, not re-read from parameter space per element
    const bool reverse = args.ndir == 2 ? d == 1 : dir.reverse != 0;
    const bool add_to_out = args.ndir == 2 && di == 1;
    // This block's rows: [c0, c0 + RPB) of batch b, dim_stride apart, so a tile element is at r * ds + p
    // (32-bit: the launch checks that a block spans fewer than 2^31 elements); B and C rows bs apart.
    const int64_t block_rows = b * args.batch_stride + c0 * args.dim_stride;
    const int ds = static_cast<int>(args.dim_stride), bs = static_cast<int>(dir.bc_state_stride);
    const T* __restrict__ u = static_cast<const T*>(dir.u) + block_rows;
    const T* __restrict__ delta = static_cast<const T*>(dir.delta) + block_rows;
    const T* __restrict__ z = dir.z != nullptr ? static_cast<const T*>(dir.z) + block_rows : nullptr;
    const float* __restrict__ bias = dir.delta_bias != nullptr ? dir.delta_bias + c0 : nullptr;
    const int64_t bc = b * dir.bc_batch_stride + static_cast<int64_t>(g) * dstate * dir.bc_state_stride;
    const T* __restrict__ Bg = static_cast<const T*>(dir.B) + bc;
    const T* __restrict__ Cg = static_cast<const T*>(dir.C) + bc;
    T* __restrict__ out = static_cast<T*>(args.out) + block_rows;

    float A2[S], h[S];
#pragma unroll
    for (int j = 0; j < S; ++j) {
      const int n = part * S + j;
      A2[j] = (row_valid && n < dstate) ? dir.A[static_cast<int64_t>(c) * dstate + n] * kLog2e : 0.0f;
      h[j] = 0.0f;
    }
    const float Dc = (row_valid && dir.D != nullptr) ? dir.D[c] : 0.0f;

    for (int t = 0; t < ntiles; ++t) {
      const int hi = reverse ? L - t * lt : min(L, (t + 1) * lt);  // memory positions [lo, hi)
      const int lo = reverse ? max(0, hi - lt) : t * lt;
      const int n_steps = hi - lo;
      __syncthreads();  // the previous tile's readers are done

      // Consecutive threads take consecutive steps of a row (coalesced reads). Each pass loads kBatch
      // elements per thread before using any (predicated loads, all in flight at once), then converts
      // and stores them: the load latency is paid once a pass, not once an element.
      for (TileWalk w(tid, kRowThreads, n_steps); w.row < RPB;) {
        int at[kBatch];      // shared-memory slot r * ls + i, or -1 past the tile
        bool valid[kBatch];  // a channel of this group; rows past it are padding (dt = 0, silu(z) = 1)
        T ur[kBatch], dr[kBatch], zr[kBatch];
        float br[kBatch];
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          valid[k] = w.row < nvalid;
          const int idx = valid[k] ? w.row * ds + lo + w.col : 0;
          at[k] = w.row < RPB ? w.row * ls + w.col : -1;
          ur[k] = valid[k] ? u[idx] : T(0.0f);
          dr[k] = valid[k] ? delta[idx] : T(0.0f);
          zr[k] = valid[k] && z != nullptr ? z[idx] : T(0.0f);
          br[k] = valid[k] && bias != nullptr ? bias[w.row] : 0.0f;
          w.next();
        }
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          if (at[k] < 0) continue;
          const float x = to_float(dr[k]) + br[k];
          s_u[at[k]] = to_float(ur[k]);
          s_dt[at[k]] = valid[k] ? (dir.softplus ? softplus(x) : x) : 0.0f;
          s_zy[at[k]] = valid[k] && z != nullptr ? silu_fast(to_float(zr[k])) : 1.0f;
        }
      }
      // B and C as [step][16], states past d_state zero; kBatch (state, step) pairs a pass as above
      for (TileWalk w(tid, kRowThreads, n_steps); w.row < kStates;) {
        int at[kBatch];
        T bq[kBatch], cq[kBatch];
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          const bool valid = w.row < dstate;
          const int idx = valid ? w.row * bs + lo + w.col : 0;
          at[k] = w.row < kStates ? w.col * kStates + w.row : -1;
          bq[k] = valid ? Bg[idx] : T(0.0f);
          cq[k] = valid ? Cg[idx] : T(0.0f);
          w.next();
        }
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          if (at[k] < 0) continue;
          s_B[at[k]] = to_float(bq[k]);
          s_C[at[k]] = to_float(cq[k]);
        }
      }
      __syncthreads();

      // The recurrence, in scan order: forward i = 0 .. n_steps - 1, reverse i = n_steps - 1 .. 0.
#pragma unroll 4
      for (int k = 0; k < n_steps; ++k) {
        const int i = reverse ? n_steps - 1 - k : k;
        const float dt = s_dt[row * ls + i], uv = s_u[row * ls + i];
        const float du = dt * uv;
        const float* Bi = s_B + i * kStates + part * S;
        const float* Ci = s_C + i * kStates + part * S;
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < S; ++j) {
          h[j] = fmaf(ex2(dt * A2[j]), h[j], du * Bi[j]);
          acc = fmaf(Ci[j], h[j], acc);
        }
#pragma unroll
        for (int off = TPR / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off, TPR);
        if (part == 0) s_zy[row * ls + i] = fmaf(Dc, uv, acc) * s_zy[row * ls + i];
      }
      __syncthreads();

#pragma unroll 4
      for (TileWalk w(tid, kRowThreads, n_steps); w.row < nvalid; w.next()) {
        const int idx = w.row * ds + lo + w.col;
        float v = args.out_scale * s_zy[w.row * ls + w.col];
        if (add_to_out) v += to_float(out[idx]);
        out[idx] = from_float<T>(v);
      }
    }
    if (dir.last_state != nullptr && row_valid) {
#pragma unroll
      for (int j = 0; j < S; ++j) {
        const int n = part * S + j;
        if (n < dstate) dir.last_state[(static_cast<int64_t>(b) * dim + c) * dstate + n] = h[j];
      }
    }
  }
}

// Steps per tile: the whole sequence when it fits in `budget` bytes, else the largest multiple of 4 that does.
template <int S>
int tile_steps(int length, size_t budget) {
  int lt = length;
  while (lt > 4 && sizeof(float) * static_cast<size_t>(row_tile_floats<S>(lt)) > budget) lt = (lt - 1) / 4 * 4;
  return lt;
}

template <typename T, int S>
int launch_rows_cfg(ScanArgs args, const DeviceInfo& dev, cudaStream_t stream, const char* where) {
  constexpr int RPB = RowCfg<S>::RPB;
  const int cpg = args.dim / args.groups;
  args.tiles_per_group = (cpg + RPB - 1) / RPB;
  const int64_t blocks = static_cast<int64_t>(args.batch) * args.groups * args.tiles_per_group;
  if (blocks > 0x7fffffff) return fail(PARTOOL_ERR_UNSUPPORTED_SHAPE, "%s: batch * dim too large (%lld blocks)", where, static_cast<long long>(blocks));
  // 32-bit offsets within a block: its rows of u/delta/z/out, and d_state rows of B and C
  int64_t span = (RPB - 1) * args.dim_stride + args.length;
  for (int d = 0; d < args.ndir; ++d) {
    const int64_t bc_span = (kStates - 1) * args.dir[d].bc_state_stride + args.length;
    span = bc_span > span ? bc_span : span;
  }
  if (span > 0x7fffffff) {
    return fail(PARTOOL_ERR_UNSUPPORTED_SHAPE, "%s: length %d with row strides %lld too long for the row kernel", where,
                args.length, static_cast<long long>(args.dim_stride));
  }
  // 64 KiB a block leaves room for three resident blocks on sm_80/86/87/89/90 (100-228 KiB per SM).
  const size_t budget = dev.smem_optin < 64 * 1024 ? static_cast<size_t>(dev.smem_optin) : 64 * 1024;
  const int lt = tile_steps<S>(args.length, budget);
  const size_t smem = sizeof(float) * static_cast<size_t>(row_tile_floats<S>(lt));
  const cudaError_t err =
      launch_kernel(scan_rows_kernel<T, S>, static_cast<unsigned>(blocks), kRowThreads, smem, stream, args, lt);
  if (err != cudaSuccess) return fail(PARTOOL_ERR_CUDA, "%s: kernel launch failed: %s", where, error_string(err));
  clear_error();
  return PARTOOL_OK;
}

// States per lane: `forced` (1, 2, 4, 8 or 16) when given, else the most (fewest lanes per row, no
// shuffles at S = 16) that still gives every multiprocessor four warps.
int states_per_lane(const ScanArgs& args, const DeviceInfo& dev, int forced) {
  if (forced == 1 || forced == 2 || forced == 4 || forced == 8 || forced == 16) return forced;
  const int64_t rows = static_cast<int64_t>(args.batch) * args.dim;
  const int64_t want = static_cast<int64_t>(dev.sms) * 4 * 32;
  for (int s = 16; s > 1; s /= 2) {
    if (rows * (kStates / s) >= want) return s;
  }
  return 1;
}

template <typename T>
int launch_rows_typed(const ScanArgs& args, int states, const DeviceInfo& dev, cudaStream_t stream,
                      const char* where) {
  switch (states_per_lane(args, dev, states)) {
    case 16:
      return launch_rows_cfg<T, 16>(args, dev, stream, where);
    case 8:
      return launch_rows_cfg<T, 8>(args, dev, stream, where);
    case 4:
      return launch_rows_cfg<T, 4>(args, dev, stream, where);
    case 2:
      return launch_rows_cfg<T, 2>(args, dev, stream, where);
    default:
      return launch_rows_cfg<T, 1>(args, dev, stream, where);
  }
}

}  // namespace

int launch_scan_rows(const ScanArgs& args, partool_dtype_t dtype, int states, const DeviceInfo& dev,
                     cudaStream_t stream, const char* where) {
  switch (dtype) {
    case PARTOOL_DTYPE_F16:
      return launch_rows_typed<__half>(args, states, dev, stream, where);
    case PARTOOL_DTYPE_BF16:
      return launch_rows_typed<__nv_bfloat16>(args, states, dev, stream, where);
    default:
      return launch_rows_typed<float>(args, states, dev, stream, where);
  }
}

}  // namespace partool
