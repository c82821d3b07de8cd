// Row kernels for any CPU of the target architecture (x86-64 baseline or the build's -march, NEON on aarch64).
#define PARTOOL_ROWS_SUFFIX base
#include "cpu_rows_impl.hpp"
#include "cpu_bwd_rows_impl.hpp"
