// Probe kernels for the runtime tests: every argument kind the launcher packs, with gaps
// (pointer after an int32 forces 4 bytes of padding) and hidden arguments (blockDim).
#include <hip/hip_runtime.h>

extern "C" __global__ __launch_bounds__(256) void probe_args(const int* in, int* out, int count,
                                                              const float* scale, unsigned flags,
                                                              float alpha) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) out[i] = static_cast<int>(in[i] * alpha * scale[0]) + static_cast<int>(flags);
}

extern "C" __global__ __launch_bounds__(64) void probe_fill(int* out, int value) {
  out[threadIdx.x] = value;
}
