// The CPU kernels' internal interface: a job description shared by the entry points
// (cpu_entry.cpp) and the row kernels, which are compiled once per instruction set
// (cpu_rows_base.cpp, and cpu_rows_avx2.cpp / cpu_rows_avx512.cpp on x86-64) and picked at run time.
#pragma once

#include <cstdint>
#include <cstring>

#include "partool_kernels.h"

namespace partool {

// One scan direction with its B and C already transposed to (batch, groups, scratch_stride(length), ns)
// float32 in scan-step order (step s is time length-1-s when reverse), zero for states >= dstate (and
// for the unused steps >= length), so the inner loop reads one contiguous state vector per step.
struct CpuDir {
  const partool_scan_params_t* p;  // strides filled in (with_strides)
  const float* BT;
  const float* CT;
  int reverse;
};

struct CpuScanJob {
  CpuDir dir[2];
  int ndir;         // 1: single scan, 2: bidirectional (results summed)
  float out_scale;  // applied to the sum before the output cast
  void* out;
  int ns;           // padded state count: 4, 8 or 16 (a multiple of the row kernel's vector width)
};

// The (batch, channel) of row r when the rows are walked in memory order: the axis with the smaller stride
// varies fastest, so consecutive rows are neighbours in memory (contiguous tensors: channels; a (dim,
// batch * length) matrix: batches) and the hardware prefetchers keep streaming across rows.
struct RowOrder {
  int64_t batch, dim;
  bool batch_inner;
  RowOrder(int64_t batch_, int64_t dim_, int64_t batch_stride, int64_t dim_stride)
      : batch(batch_), dim(dim_), batch_inner(batch_ > 1 && dim_ > 1 && batch_stride < dim_stride) {}
  int64_t batch_of(int64_t r) const { return batch_inner ? r % batch : r / dim; }
  int channel_of(int64_t r) const { return static_cast<int>(batch_inner ? r / batch : r % dim); }
};

// Floats per row buffer: length rounded up to 16, so vector loops (up to 16 lanes) may run past the end.
inline int64_t scratch_stride(int length) { return (static_cast<int64_t>(length) + 15) / 16 * 16; }

// Row buffers per worker thread, each scratch_stride(length) floats.
constexpr int kScratchRows = 5;

// Floats of a conv worker's buffers: one input row with its zero padding (width - 1 <= 15 more), one output row.
inline int64_t conv_scratch_floats(int length) { return 2 * scratch_stride(length) + 16; }

// Rows r in [r0, r1) of the (batch * dim) grid; `scratch` holds kScratchRows * scratch_stride(length) floats
// (scan) or conv_scratch_floats(length) (conv), this worker's own, allocated before the parallel region.
using ScanRowsFn = void (*)(const CpuScanJob& job, int64_t r0, int64_t r1, float* scratch);
using ConvRowsFn = void (*)(const partool_conv1d_params_t& p, int64_t r0, int64_t r1, float* scratch);

void scan_rows_base(const CpuScanJob& job, int64_t r0, int64_t r1, float* scratch);
void conv_rows_base(const partool_conv1d_params_t& p, int64_t r0, int64_t r1, float* scratch);
// The AVX2 and AVX-512 units exist on x86-64 with GCC or Clang (plugins/CMakeLists.txt builds them then).
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define PARTOOL_X86_ROW_KERNELS 1
#else
#define PARTOOL_X86_ROW_KERNELS 0
#endif
#if PARTOOL_X86_ROW_KERNELS
void scan_rows_avx2(const CpuScanJob& job, int64_t r0, int64_t r1, float* scratch);
void conv_rows_avx2(const partool_conv1d_params_t& p, int64_t r0, int64_t r1, float* scratch);
void scan_rows_avx512(const CpuScanJob& job, int64_t r0, int64_t r1, float* scratch);  // ns == 16 only
void conv_rows_avx512(const partool_conv1d_params_t& p, int64_t r0, int64_t r1, float* scratch);
#endif

// ---- backward (cpu_bwd_rows_impl.hpp) ----

// A scan backward: its B and C transposed as CpuDir's (step order of the forward's direction).
struct CpuScanBwdJob {
  const partool_scan_bwd_params_t* p;  // p->fwd has its strides filled in (with_strides)
  const float* BT;
  const float* CT;
  int ns;  // padded state count, as CpuScanJob's
};

// Row buffers of a scan backward worker (scan-step order), before its per-step states and decays.
constexpr int kScanBwdRows = 10;

// Floats of a scan backward worker's buffers: the rows, then a zero state row and the states and decays
// of every step (ns floats each).
inline int64_t scan_bwd_scratch_floats(int length, int ns) {
  return kScanBwdRows * scratch_stride(length) + (2 * scratch_stride(length) + 1) * ns;
}

// Floats of a conv backward worker's buffers: x and dpre zero-padded (15 more each), dout, dpre, dx.
inline int64_t conv_bwd_scratch_floats(int length) { return 5 * scratch_stride(length) + 32; }

// Channels c in [c0, c1), every batch row of each. The scan's `scratch` holds scan_bwd_scratch_floats, and
// dBT / dCT are this worker's own sums of dB and dC, laid out as job.BT (zeroed by the caller); the conv's
// `scratch` holds conv_bwd_scratch_floats. Both allocated before the parallel region.
using ScanBwdChannelsFn = void (*)(const CpuScanBwdJob& job, int64_t c0, int64_t c1, float* scratch, float* dBT,
                                   float* dCT);
using ConvBwdChannelsFn = void (*)(const partool_conv1d_bwd_params_t& p, int64_t c0, int64_t c1, float* scratch);

void scan_bwd_channels_base(const CpuScanBwdJob& job, int64_t c0, int64_t c1, float* scratch, float* dBT, float* dCT);
void conv_bwd_channels_base(const partool_conv1d_bwd_params_t& p, int64_t c0, int64_t c1, float* scratch);
#if PARTOOL_X86_ROW_KERNELS
void scan_bwd_channels_avx2(const CpuScanBwdJob& job, int64_t c0, int64_t c1, float* scratch, float* dBT, float* dCT);
void conv_bwd_channels_avx2(const partool_conv1d_bwd_params_t& p, int64_t c0, int64_t c1, float* scratch);
void scan_bwd_channels_avx512(const CpuScanBwdJob& job, int64_t c0, int64_t c1, float* scratch, float* dBT,
                              float* dCT);  // ns == 16 only
void conv_bwd_channels_avx512(const partool_conv1d_bwd_params_t& p, int64_t c0, int64_t c1, float* scratch);
#endif

// ---- scalar conversions between the io dtypes and float32 (portable, no compiler extensions) ----

inline float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: man * 2^-24
    const float mag = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
  }
  if (exp == 31) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

inline uint16_t float_to_half(float f) {  // round to nearest even, overflow to inf
  const uint32_t x = float_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (ax < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    const float mag = bits_to_float(ax) * 16777216.0f;  // in units of 2^-24
    // Float-to-int conversion after adding 2^23 rounds to nearest even.
    const uint32_t m = float_to_bits(mag + 8388608.0f) - 0x4b000000u;
    return static_cast<uint16_t>(sign | m);
  }
  const uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16(float f) {  // round to nearest even, nan stays nan
  const uint32_t x = float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Element i of an io-dtype array as float.
inline float load_io(const void* base, int dtype, int64_t i) {
  switch (dtype) {
    case PARTOOL_DTYPE_F16:
      return half_to_float(static_cast<const uint16_t*>(base)[i]);
    case PARTOOL_DTYPE_BF16:
      return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    default:
      return static_cast<const float*>(base)[i];
  }
}

inline void store_io(void* base, int dtype, int64_t i, float v) {
  switch (dtype) {
    case PARTOOL_DTYPE_F16:
      static_cast<uint16_t*>(base)[i] = float_to_half(v);
      break;
    case PARTOOL_DTYPE_BF16:
      static_cast<uint16_t*>(base)[i] = float_to_bf16(v);
      break;
    default:
      static_cast<float*>(base)[i] = v;
  }
}

}  // namespace partool
