// Probe kernels for the ISA-report tests, named like GEMM instantiations so that the
// compile policy applies to them. Each breaks one rule, except the first.
#include <hip/hip_runtime.h>

typedef int v4i32 __attribute__((ext_vector_type(4)));
typedef int v8i32 __attribute__((ext_vector_type(8)));
constexpr bool kSigned = true;
constexpr bool kClamp = false;

// Follows the policy: 128-bit global loads and an LDS exchange inside a WMMA k-loop.
extern "C" __global__ __launch_bounds__(64) void w8a8_i8_gemm_probe_good(
    const v4i32* __restrict__ a, const v4i32* __restrict__ b, v8i32* __restrict__ c, int k_steps) {
  __shared__ v4i32 tile[64];
  v8i32 acc = {};
  const int lane = threadIdx.x;
  for (int k = 0; k < k_steps; ++k) {
    const v4i32 a_frag = a[k * 64 + lane];
    tile[lane] = b[k * 64 + lane];
    __syncthreads();
    const v4i32 b_frag = tile[lane ^ 1];
    acc = __builtin_amdgcn_wmma_i32_16x16x16_iu8_w32(kSigned, a_frag, kSigned, b_frag, acc, kClamp);
    __syncthreads();
  }
  c[blockIdx.x * 64 + lane] = acc;
}

// Breaks the load-width rule: builds each operand from four 32-bit loads of strided data.
extern "C" __global__ __launch_bounds__(64) void w8a8_i8_gemm_probe_narrow(
    const int* __restrict__ a, const int* __restrict__ b, v8i32* __restrict__ c, int k_steps) {
  v8i32 acc = {};
  const int lane = threadIdx.x;
  for (int k = 0; k < k_steps; ++k) {
    v4i32 a_frag, b_frag;
    for (int j = 0; j < 4; ++j) {
      a_frag[j] = a[(k * 4 + j) * 67 + lane];
      b_frag[j] = b[(k * 4 + j) * 67 + lane];
    }
    acc = __builtin_amdgcn_wmma_i32_16x16x16_iu8_w32(kSigned, a_frag, kSigned, b_frag, acc, kClamp);
  }
  c[lane] = acc;
}

// Breaks the scratch rule (a dynamically indexed private array lives in scratch) and has
// no WMMA at all.
extern "C" __global__ __launch_bounds__(64) void w8a8_f8_gemm_probe_scratch(
    const int* __restrict__ in, int* __restrict__ out, int n) {
  int table[64];
  for (int i = 0; i < 64; ++i) table[i] = in[i * n + threadIdx.x];
  out[threadIdx.x] = table[in[threadIdx.x] & 63];
}
