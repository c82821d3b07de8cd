// CUDA selective scan (single and fused bidirectional), parallel along the sequence.
//
// Work split. A block (128 threads) owns one batch index and a tile of CB consecutive channels of
// one group, and walks the sequence in segments of LSEG = (128 / CB) * 4 steps. Thread
// (ch = tid % CB, chunk = tid / CB) scans 4 consecutive steps of channel ch for all 16 states
// (d_state is zero-padded to 16: padded states have A = B = C = 0 and stay 0):
//   pass 1  from a zero state it computes the local states, y_local = C.h_local + D.u, and keeps
//           W[k][n] = prod_{j<=k} exp(dt_j A_n) in registers; the chunk's summary
//           (P = prod of decays, E = local end state) goes to shared memory;
//   scan    the (P, E) pairs of all chunks of a (channel, state) are composed in order
//           (h -> P h + E is associative) by 128 threads, with the carry from the previous
//           segment, giving every chunk its incoming state h_in;
//   fixup   y_k += sum_n C_k[n] W[k][n] h_in[n] (no second exponential), then * silu(z).
// So each exponential is taken once (one MUFU.EX2 per step and state), the state is float32, and
// loads/stores go through shared-memory tiles so global accesses are coalesced whatever CB is.
// Config CB = 32 (4 chunks, 16-step segments) suits large batches, CB = 8 / 4 (16 / 32 chunks,
// 64 / 128-step segments) smaller ones; the host picks by the number of blocks it would launch.
// Registers: W alone is 64 floats per thread, so the kernel takes up to 255 registers with two
// 4-warp blocks per multiprocessor (a 128-register cap spilled ~200 bytes per thread).
//
// Bidirectional: the block first scans the backward direction (reverse), keeping
// out_scale * result in a CB x length float32 shared-memory row, then the forward direction adds it
// and writes the output once. `reverse` itself only changes which memory position a logical step
// reads (p = length - 1 - t): nothing is flipped or copied.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.hpp"
#include "cuda_common.hpp"
#include "scan_cuda_common.cuh"

namespace partool {
namespace {

constexpr int kThreads = 128;
constexpr int kT = 4;   // steps per thread chunk (one float4 of a tile row)
constexpr int kN = 16;  // states per thread (PARTOOL_MAX_DSTATE)
static_assert(kN == PARTOOL_MAX_DSTATE, "the kernel holds PARTOOL_MAX_DSTATE states per thread");

__device__ __forceinline__ float quad_get(const float4& q, int k) {  // k is a compile-time constant
  return k == 0 ? q.x : (k == 1 ? q.y : (k == 2 ? q.z : q.w));
}

template <int CB>
struct Cfg {
  static constexpr int NC = kThreads / CB;                    // chunks per segment
  static constexpr int LSEG = NC * kT;                        // steps per segment
  static constexpr int TSTRIDE = LSEG + (CB == 4 ? 8 : 4);    // tile row stride (bank-conflict free float4 reads)
  static constexpr int SROW = CB == 32 ? kN : kN + 1;         // summary rows per chunk (+1 pad row)
  static constexpr int Q = CB * kN;                           // (channel, state) pairs
  static constexpr int R = Q >= kThreads ? 1 : kThreads / Q;  // scan threads per pair
  static constexpr int PP = Q >= kThreads ? Q / kThreads : 1; // pairs per scan thread
  static constexpr int NCR = NC / R;                          // chunks per scan thread
  static constexpr int SUMSZ = NC * SROW * CB + 32;
  static constexpr int TILE = CB * TSTRIDE;
  static constexpr int A_STRIDE = kN + 4;  // [CB][20]: float4 reads of different rows hit distinct banks
  static constexpr int FIXED_FLOATS = 3 * TILE + 2 * LSEG * kN + 2 * SUMSZ + CB * A_STRIDE;
  static_assert(kThreads % CB == 0 && (Q % kThreads == 0 || kThreads % Q == 0), "config");
  static_assert(R <= 32 && NC % R == 0, "scan threads of a pair must sit in one warp");

  // Summary slot of (chunk j, state n, channel ch). Chunk ranges of different scan threads are
  // offset by 32 / R words so that the scan's reads hit distinct banks.
  __device__ static __forceinline__ int sidx(int j, int n, int ch) {
    return (j * SROW + n) * CB + ch + (R > 1 ? (j / NCR) * (32 / R) : 0);
  }
};

template <typename T, int CB>
__global__ void __launch_bounds__(kThreads, 2) scan_kernel(const ScanArgs args) {
  using K = Cfg<CB>;
  constexpr int LSEG = K::LSEG, TSTRIDE = K::TSTRIDE, R = K::R, PP = K::PP, NCR = K::NCR;

  PARTOOL_DYNAMIC_SHARED(float4, smem4);
  float* s_u = reinterpret_cast<float*>(smem4);  // u, then this segment's outputs
  float* s_dt = s_u + K::TILE;                   // softplus(delta + bias), 0 past the ends
  float* s_z = s_dt + K::TILE;                   // silu(z) (1 without z)
  float* s_B = s_z + K::TILE;                    // [LSEG][16], float4 quads swizzled by row
  float* s_C = s_B + LSEG * kN;
  float* s_P = s_C + LSEG * kN;  // chunk decay products
  float* s_E = s_P + K::SUMSZ;   // chunk local end states, then incoming states
  float* s_A2 = s_E + K::SUMSZ;  // A * log2(e) of the tile's channels (read once per segment)
  float* s_acc = s_A2 + CB * K::A_STRIDE; // bidirectional: [CB][length] first direction's output

  const int tid = threadIdx.x;
  const int ch = tid % CB, chunk = tid / CB;
  const int L = args.length, dim = args.dim, groups = args.groups, dstate = args.dstate;
  const int tiles = args.tiles_per_group;
  const int b = blockIdx.x / (groups * tiles);
  const int g = (blockIdx.x / tiles) % groups;
  const int tile = blockIdx.x % tiles;
  const int cpg = dim / groups;
  const int c0 = g * cpg + tile * CB;
  const int nvalid = min(CB, cpg - tile * CB);
  const bool ch_valid = ch < nvalid;
  const int c = c0 + ch;
  const int nseg = (L + LSEG - 1) / LSEG;

  for (int di = 0; di < args.ndir; ++di) {
    const int d = args.ndir == 2 ? 1 - di : 0;
    const DirArgs& dir = args.dir[d];
    const bool reverse = args.ndir == 2 ? d == 1 : dir.reverse != 0;
    const bool to_acc = args.ndir == 2 && di == 0;   // first of two directions: keep in shared memory
    const bool from_acc = args.ndir == 2 && di == 1; // second: add the first
    const T* __restrict__ u = static_cast<const T*>(dir.u);
    const T* __restrict__ delta = static_cast<const T*>(dir.delta);
    const T* __restrict__ z = static_cast<const T*>(dir.z);
    const int64_t bc = b * dir.bc_batch_stride + static_cast<int64_t>(g) * dstate * dir.bc_state_stride;
    const T* __restrict__ Bg = static_cast<const T*>(dir.B) + bc;
    const T* __restrict__ Cg = static_cast<const T*>(dir.C) + bc;

    // Safe to overwrite: the previous direction's last reads of s_A2 are several barriers back.
    for (int e = tid; e < CB * kN; e += kThreads) {
      const int r = e / kN, n = e % kN;
      s_A2[r * K::A_STRIDE + n] = (r < nvalid && n < dstate) ? dir.A[static_cast<int64_t>(c0 + r) * dstate + n] * kLog2e : 0.0f;
    }
    const float Dc = (ch_valid && dir.D != nullptr) ? dir.D[c] : 0.0f;
    float carry[PP];
#pragma unroll
    for (int pp = 0; pp < PP; ++pp) carry[pp] = 0.0f;

    for (int seg = 0; seg < nseg; ++seg) {
      const int mem_lo = reverse ? L - (seg + 1) * LSEG : seg * LSEG;  // lowest memory position of the tile
      __syncthreads();  // the previous segment's readers of the tiles are done

      // ---- stage u, dt, silu(z) as [CB][TSTRIDE] and B, C as [LSEG][16]: coalesced global reads
      for (int e = tid; e < CB * LSEG; e += kThreads) {
        const int r = e / LSEG, i = e % LSEG, p = mem_lo + i;
        float uv = 0.0f, dv = 0.0f, zv = 1.0f;
        if (r < nvalid && p >= 0 && p < L) {
          const int64_t idx = b * args.batch_stride + (c0 + r) * args.dim_stride + p;
          uv = to_float(u[idx]);
          const float x = to_float(delta[idx]) + (dir.delta_bias != nullptr ? dir.delta_bias[c0 + r] : 0.0f);
          dv = dir.softplus ? softplus(x) : x;
          if (z != nullptr) zv = silu(to_float(z[idx]));
        }
        s_u[r * TSTRIDE + i] = uv;
        s_dt[r * TSTRIDE + i] = dv;  // 0 past the ends: exp(0) = 1 and dt*u = 0 leave the state as is
        s_z[r * TSTRIDE + i] = zv;
      }
      for (int e = tid; e < LSEG * (kN / 4); e += kThreads) {
        const int i = e % LSEG, q = e / LSEG, p = mem_lo + i;
        float bv[4] = {0.0f, 0.0f, 0.0f, 0.0f}, cv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (p >= 0 && p < L) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int n = 4 * q + j;
            if (n < dstate) {
              bv[j] = to_float(Bg[n * dir.bc_state_stride + p]);
              cv[j] = to_float(Cg[n * dir.bc_state_stride + p]);
            }
          }
        }
        const int slot = i * 4 + (q ^ ((i >> 1) & 3));
        reinterpret_cast<float4*>(s_B)[slot] = make_float4(bv[0], bv[1], bv[2], bv[3]);
        reinterpret_cast<float4*>(s_C)[slot] = make_float4(cv[0], cv[1], cv[2], cv[3]);
      }
      __syncthreads();

      // ---- pass 1: local scan of this thread's 4 steps from a zero state
      const int quad = reverse ? LSEG / 4 - 1 - chunk : chunk;  // tile float4 holding my steps
      const float4 uq = reinterpret_cast<const float4*>(s_u + ch * TSTRIDE)[quad];
      const float4 dq = reinterpret_cast<const float4*>(s_dt + ch * TSTRIDE)[quad];
      // W[k][n]: decay from the chunk start through step k (the running product; C is applied at fixup).
      float h[kN], W[kT][kN], y[kT], A2[kN];
#pragma unroll
      for (int q = 0; q < kN / 4; ++q) {
        const float4 a = reinterpret_cast<const float4*>(s_A2 + ch * K::A_STRIDE)[q];
        A2[4 * q] = a.x;
        A2[4 * q + 1] = a.y;
        A2[4 * q + 2] = a.z;
        A2[4 * q + 3] = a.w;
      }
#pragma unroll
      for (int n = 0; n < kN; ++n) h[n] = 0.0f;
#pragma unroll
      for (int k = 0; k < kT; ++k) {
        const int kk = reverse ? kT - 1 - k : k;  // element of the quad for logical step k
        const float dtk = reverse ? quad_get(dq, kT - 1 - k) : quad_get(dq, k);
        const float uk = reverse ? quad_get(uq, kT - 1 - k) : quad_get(uq, k);
        const int i = quad * 4 + kk;
        const float du = dtk * uk;
        float yk = Dc * uk;
        const float4* Brow = reinterpret_cast<const float4*>(s_B) + i * 4;
        const float4* Crow = reinterpret_cast<const float4*>(s_C) + i * 4;
        const int swz = (i >> 1) & 3;
#pragma unroll
        for (int q = 0; q < kN / 4; ++q) {
          const float4 bq = Brow[q ^ swz], cq = Crow[q ^ swz];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int n = 4 * q + j;
            const float dA = ex2(dtk * A2[n]);
            const float cn = quad_get(cq, j);
            h[n] = fmaf(dA, h[n], du * quad_get(bq, j));
            W[k][n] = k == 0 ? dA : W[k > 0 ? k - 1 : 0][n] * dA;
            yk = fmaf(cn, h[n], yk);
          }
        }
        y[k] = yk;
      }
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        s_P[K::sidx(chunk, n, ch)] = W[kT - 1][n];
        s_E[K::sidx(chunk, n, ch)] = h[n];
      }
      __syncthreads();

      // ---- scan the chunk summaries of every (channel, state) pair, carrying across segments
#pragma unroll
      for (int pp = 0; pp < PP; ++pp) {
        const int q = R == 1 ? tid + pp * kThreads : tid / R;
        const int r = R == 1 ? 0 : tid % R;
        const int sch = q % CB, sn = q / CB;
        float hh;
        if constexpr (R > 1) {
          float aP = 1.0f, aE = 0.0f;
          for (int j = 0; j < NCR; ++j) {
            const int s = K::sidx(r * NCR + j, sn, sch);
            const float P = s_P[s];
            aE = fmaf(P, aE, s_E[s]);
            aP *= P;
          }
#pragma unroll
          for (int off = 1; off < R; off *= 2) {  // inclusive scan over the R lanes of this pair
            const float pP = __shfl_up_sync(0xffffffffu, aP, off, R);
            const float pE = __shfl_up_sync(0xffffffffu, aE, off, R);
            if (r >= off) {
              aE = fmaf(aP, pE, aE);
              aP *= pP;
            }
          }
          float eP = __shfl_up_sync(0xffffffffu, aP, 1, R);
          float eE = __shfl_up_sync(0xffffffffu, aE, 1, R);
          if (r == 0) {
            eP = 1.0f;
            eE = 0.0f;
          }
          hh = fmaf(eP, carry[pp], eE);
          const float seg_end = __shfl_sync(0xffffffffu, fmaf(aP, carry[pp], aE), R - 1, R);
          carry[pp] = seg_end;
        } else {
          hh = carry[pp];
        }
        for (int j = 0; j < NCR; ++j) {
          const int s = K::sidx(r * NCR + j, sn, sch);
          const float P = s_P[s], E = s_E[s];
          s_E[s] = hh;  // incoming state of chunk r*NCR + j
          hh = fmaf(P, hh, E);
        }
        if constexpr (R == 1) carry[pp] = hh;
        if (seg == nseg - 1 && dir.last_state != nullptr && r == 0 && sch < nvalid && sn < dstate) {
          dir.last_state[(static_cast<int64_t>(b) * dim + c0 + sch) * dstate + sn] = carry[pp];
        }
      }
      __syncthreads();

      // ---- fixup with the incoming state, gate, and park the outputs in my slots of s_u
      float hin[kN];
#pragma unroll
      for (int n = 0; n < kN; ++n) hin[n] = s_E[K::sidx(chunk, n, ch)];
      const float4 zq = reinterpret_cast<const float4*>(s_z + ch * TSTRIDE)[quad];
      float o[kT];
#pragma unroll
      for (int k = 0; k < kT; ++k) {
        const int i = quad * 4 + (reverse ? kT - 1 - k : k);
        const float4* Crow = reinterpret_cast<const float4*>(s_C) + i * 4;
        const int swz = (i >> 1) & 3;
        float yk = y[k];
#pragma unroll
        for (int q = 0; q < kN / 4; ++q) {
          const float4 cq = Crow[q ^ swz];
#pragma unroll
          for (int j = 0; j < 4; ++j) yk = fmaf(quad_get(cq, j) * W[k][4 * q + j], hin[4 * q + j], yk);
        }
        o[k] = yk * (reverse ? quad_get(zq, kT - 1 - k) : quad_get(zq, k));
      }
      reinterpret_cast<float4*>(s_u + ch * TSTRIDE)[quad] =
          reverse ? make_float4(o[3], o[2], o[1], o[0]) : make_float4(o[0], o[1], o[2], o[3]);
      __syncthreads();

      // ---- coalesced output
      for (int e = tid; e < CB * LSEG; e += kThreads) {
        const int r = e / LSEG, i = e % LSEG, p = mem_lo + i;
        if (r < nvalid && p >= 0 && p < L) {
          const float v = args.out_scale * s_u[r * TSTRIDE + i];
          if (to_acc) {
            s_acc[r * L + p] = v;
          } else {
            const int64_t idx = b * args.batch_stride + (c0 + r) * args.dim_stride + p;
            static_cast<T*>(args.out)[idx] = from_float<T>(from_acc ? v + s_acc[r * L + p] : v);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side

int check_dir_ptrs(const partool_scan_params_t& p, const char* where) {
  const struct {
    const void* ptr;
    const char* name;
  } ptrs[] = {{p.u, "u"}, {p.delta, "delta"}, {p.A, "A"}, {p.B, "B"}, {p.C, "C"}, {p.D, "D"},
              {p.z, "z"}, {p.delta_bias, "delta_bias"}, {p.last_state, "last_state"}};
  for (const auto& x : ptrs) {
    if (int s = check_device_ptr(x.ptr, x.name, where)) return s;
  }
  return PARTOOL_OK;
}

// The kernel arguments of one direction; p's strides filled in (with_strides).
DirArgs dir_args(const partool_scan_params_t& p) {
  return DirArgs{p.u,          p.delta,          p.A,       p.B,
                 p.C,          p.D,              p.z,       p.delta_bias,
                 p.last_state, p.delta_softplus, p.reverse, p.bc_batch_stride,
                 p.bc_state_stride};
}

template <int CB>
size_t smem_bytes(int ndir, int length) {
  return sizeof(float) * (static_cast<size_t>(Cfg<CB>::FIXED_FLOATS) + (ndir == 2 ? static_cast<size_t>(CB) * length : 0));
}

template <typename T, int CB>
int launch_cfg(ScanArgs args, size_t smem, cudaStream_t stream, const char* where) {
  const int cpg = args.dim / args.groups;
  args.tiles_per_group = (cpg + CB - 1) / CB;
  const int64_t blocks = static_cast<int64_t>(args.batch) * args.groups * args.tiles_per_group;
  if (blocks > 0x7fffffff) return fail(PARTOOL_ERR_UNSUPPORTED_SHAPE, "%s: batch * dim too large (%lld blocks)", where, static_cast<long long>(blocks));
  const cudaError_t err = launch_kernel(scan_kernel<T, CB>, static_cast<unsigned>(blocks), kThreads, smem, stream, args);
  if (err != cudaSuccess) return fail(PARTOOL_ERR_CUDA, "%s: kernel launch failed: %s", where, error_string(err));
  clear_error();
  return PARTOOL_OK;
}

// `tile` 4, 8 or 32 forces the channel tile where shared memory allows it; 0 (or a tile that does not fit)
// takes the heuristic: the widest tile that still gives every multiprocessor two blocks.
template <typename T>
int launch_typed(const ScanArgs& args, const DeviceInfo& dev, int tile, cudaStream_t stream, const char* where) {
  const int cpg = args.dim / args.groups;
  auto blocks = [&](int cb) { return static_cast<int64_t>(args.batch) * args.groups * ((cpg + cb - 1) / cb); };
  const size_t s32 = smem_bytes<32>(args.ndir, args.length), s8 = smem_bytes<8>(args.ndir, args.length),
               s4 = smem_bytes<4>(args.ndir, args.length);
  const size_t limit = static_cast<size_t>(dev.smem_optin);
  const int64_t enough = 2 * static_cast<int64_t>(dev.sms);  // two resident blocks per multiprocessor
  if (tile == 32 && s32 <= limit) return launch_cfg<T, 32>(args, s32, stream, where);
  if (tile == 8 && s8 <= limit) return launch_cfg<T, 8>(args, s8, stream, where);
  if (tile == 4 && s4 <= limit) return launch_cfg<T, 4>(args, s4, stream, where);
  if (cpg >= 32 && blocks(32) >= enough && s32 <= limit) return launch_cfg<T, 32>(args, s32, stream, where);
  if (cpg >= 8 && blocks(8) >= enough && s8 <= limit) return launch_cfg<T, 8>(args, s8, stream, where);
  if (s4 <= limit) return launch_cfg<T, 4>(args, s4, stream, where);
  if (s8 <= limit) return launch_cfg<T, 8>(args, s8, stream, where);
  if (s32 <= limit) return launch_cfg<T, 32>(args, s32, stream, where);
  return fail(PARTOOL_ERR_UNSUPPORTED_SHAPE,
              "%s: length %d needs %zu bytes of shared memory per block, the device allows %d; "
              "for the bidirectional scan, run two single scans instead",
              where, args.length, s32 < s4 ? s32 : s4, dev.smem_optin);
}

// Runs `variant` (partool_scan_cuda_variant_t, validated). AUTO is the chunked kernel with its heuristic
// tile: the one design measured on a GPU so far (benchmarks/gpu_check.py times every variant).
int launch(const ScanArgs& args, partool_dtype_t dtype, int variant, const DeviceInfo& dev, void* stream,
           const char* where) {
  auto st = static_cast<cudaStream_t>(stream);
  if (variant >= PARTOOL_SCAN_CUDA_ROWS) {
    static constexpr int kStatesPerLane[] = {0, 1, 2, 4, 8, 16};  // ROWS, ROWS_STATES1 .. ROWS_STATES16
    return launch_scan_rows(args, dtype, kStatesPerLane[variant - PARTOOL_SCAN_CUDA_ROWS], dev, st, where);
  }
  static constexpr int kTile[] = {0, 0, 4, 8, 32};  // AUTO, CHUNKED, CHUNKED_TILE4 .. CHUNKED_TILE32
  const int tile = kTile[variant];
  switch (dtype) {
    case PARTOOL_DTYPE_F16:
      return launch_typed<__half>(args, dev, tile, st, where);
    case PARTOOL_DTYPE_BF16:
      return launch_typed<__nv_bfloat16>(args, dev, tile, st, where);
    default:
      return launch_typed<float>(args, dev, tile, st, where);
  }
}

int scan_fwd(const partool_scan_params_t* p, int variant, void* cuda_stream, const char* where) {
  if (int s = validate_scan(p, where)) return s;
  if (int s = validate_scan_variant(variant, where)) return s;
  DeviceInfo dev;
  if (int s = device_info(&dev, where)) return s;
  if (int s = check_dir_ptrs(*p, where)) return s;
  if (int s = check_device_ptr(p->out, "out", where)) return s;
  const partool_scan_params_t q = with_strides(*p);
  ScanArgs args{};
  args.dir[0] = dir_args(q);
  args.dir[1] = args.dir[0];
  args.out = p->out;
  args.batch_stride = q.batch_stride;
  args.dim_stride = q.dim_stride;
  args.batch = p->batch;
  args.dim = p->dim;
  args.dstate = p->dstate;
  args.length = p->length;
  args.groups = p->groups;
  args.ndir = 1;
  args.out_scale = 1.0f;
  return launch(args, p->io_dtype, variant, dev, cuda_stream, where);
}

int bidir_fwd(const partool_bidir_scan_params_t* p, int variant, void* cuda_stream, const char* where) {
  if (int s = validate_bidir(p, where)) return s;
  if (int s = validate_scan_variant(variant, where)) return s;
  DeviceInfo dev;
  if (int s = device_info(&dev, where)) return s;
  if (int s = check_dir_ptrs(p->fwd, where)) return s;
  if (int s = check_dir_ptrs(p->bwd, where)) return s;
  if (int s = check_device_ptr(p->out, "out", where)) return s;
  const partool_scan_params_t fwd = with_strides(p->fwd), bwd = with_strides(p->bwd);
  ScanArgs args{};
  args.dir[0] = dir_args(fwd);
  args.dir[1] = dir_args(bwd);
  args.out = p->out;
  args.batch_stride = fwd.batch_stride;  // validate_bidir: the same in both directions
  args.dim_stride = fwd.dim_stride;
  args.batch = p->fwd.batch;
  args.dim = p->fwd.dim;
  args.dstate = p->fwd.dstate;
  args.length = p->fwd.length;
  args.groups = p->fwd.groups;
  args.ndir = 2;
  args.out_scale = p->out_scale;
  return launch(args, p->fwd.io_dtype, variant, dev, cuda_stream, where);
}

}  // namespace
}  // namespace partool

extern "C" {

int partool_kernels_has_cuda(void) { return 1; }

size_t partool_selective_scan_workspace_size(const partool_scan_params_t*) { return 0; }

int partool_selective_scan_fwd_cuda(const partool_scan_params_t* p, void* cuda_stream) {
  return partool::scan_fwd(p, PARTOOL_SCAN_CUDA_AUTO, cuda_stream, "partool_selective_scan_fwd_cuda");
}

int partool_selective_scan_fwd_cuda_variant(const partool_scan_params_t* p, int variant, void* cuda_stream) {
  return partool::scan_fwd(p, variant, cuda_stream, "partool_selective_scan_fwd_cuda_variant");
}

int partool_selective_scan_bidir_fwd_cuda(const partool_bidir_scan_params_t* p, void* cuda_stream) {
  return partool::bidir_fwd(p, PARTOOL_SCAN_CUDA_AUTO, cuda_stream, "partool_selective_scan_bidir_fwd_cuda");
}

int partool_selective_scan_bidir_fwd_cuda_variant(const partool_bidir_scan_params_t* p, int variant,
                                                  void* cuda_stream) {
  return partool::bidir_fwd(p, variant, cuda_stream, "partool_selective_scan_bidir_fwd_cuda_variant");
}

}  // extern "C"
