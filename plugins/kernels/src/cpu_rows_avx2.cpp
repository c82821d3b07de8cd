// Row kernels for x86-64 CPUs with AVX2 and FMA (x86-64-v3), compiled with -mavx2 -mfma and chosen at
// run time only when the CPU reports both.
#define PARTOOL_ROWS_SUFFIX avx2
#include "cpu_rows_impl.hpp"
#include "cpu_bwd_rows_impl.hpp"
