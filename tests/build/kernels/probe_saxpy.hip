// Small kernel for the build tests: a pointer, a by-value int and float, shared header.
#include <hip/hip_runtime.h>
#include "common/probe_math.h"

extern "C" __global__ __launch_bounds__(128) void probe_saxpy(float* out, const float* in,
                                                               int n, float alpha) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = alpha * in[i] + static_cast<float>(probe_scale(i));
}
