// src/norm_cuda.cu compiled as host C++ for the CUDA emulator (cuda_emulator.hpp).
#include "norm_cuda.cu"
