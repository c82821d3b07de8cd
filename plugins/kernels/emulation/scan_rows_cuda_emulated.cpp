// src/scan_rows_cuda.cu compiled as host C++ for the CUDA emulator (cuda_emulator.hpp).
#include "scan_rows_cuda.cu"
