/* punctum — what the engine sees of the cuda backend in a build without it (no nvcc). */
#ifndef PT_HAVE_CUDA
#include "punctum/backend.h"

int pt_backend_cuda_available(const char **why) {
    if (why) *why = "this punctum was built without the CUDA backend";
    return 0;
}

pt_backend *pt_backend_cuda_create(int device, pt_compute_dtype dtype, pt_error *e) {
    (void)device, (void)dtype;
    pt_fail(e, "--backend cuda: this punctum was built without the CUDA backend (no nvcc found "
               "at configure time); use --backend cpu");
    return NULL;
}
#endif
