/* punctum — tests/emu/test_wrappers.cu against the emulation (test_wrappers_emu, label
 * cuda-emu): the same expectations as on a GPU (test_wrappers_cuda, label gpu). */
#ifndef PT_CUDA_EMU
#error "build with -DPT_CUDA_EMU (cmake/cuda.cmake does)"
#endif
#include "test_wrappers.cu"
