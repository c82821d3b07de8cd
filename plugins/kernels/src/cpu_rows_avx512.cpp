// Row kernels for x86-64 CPUs with AVX-512 F/DQ/BW/VL (x86-64-v4), compiled with those flags and chosen
// at run time only when the CPU reports them: the 16 states of a channel fill one zmm register.
#define PARTOOL_ROWS_SUFFIX avx512
#include "cpu_rows_impl.hpp"
#include "cpu_bwd_rows_impl.hpp"
