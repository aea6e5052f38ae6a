// Test-only entry point: the float32 silu of kernels/common/silu_mul.h (silu_f32), one thread
// per element, so tests compare its bits with torch's vectorised CPU silu for every fp16 and
// bf16 input. `w8a8_probe_silu_f32(x, y, n)`: y[i] = silu_f32(x[i]) for i < n; any grid and
// block covering n.
#include "common/silu_mul.h"

extern "C" __global__ void w8a8_probe_silu_f32(const float* x, float* y, int32_t n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) y[i] = ::rdna_w8a8::silu_f32(x[i]);
}
RDNA_EXPORT_KERNEL(w8a8_probe_silu_f32)
