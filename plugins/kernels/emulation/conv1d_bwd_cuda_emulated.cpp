// src/conv1d_bwd_cuda.cu compiled as host C++ for the CUDA emulator (cuda_emulator.hpp).
#include "conv1d_bwd_cuda.cu"
