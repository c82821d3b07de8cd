// src/scan_bwd_cuda.cu compiled as host C++ for the CUDA emulator (cuda_emulator.hpp).
#include "scan_bwd_cuda.cu"
