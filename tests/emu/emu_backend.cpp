/* punctum — the CUDA backend (kernels/cuda_backend.cu and the kernels it includes) compiled
 * as host C++ against the emulation layer (cuda_emu.h). The build defines PT_CUDA_EMU. */
#ifndef PT_CUDA_EMU
#error "build with -DPT_CUDA_EMU (cmake/cuda.cmake does)"
#endif
#include "cuda_backend.cu"
