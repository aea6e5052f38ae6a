// Wave shuffles and an LDS exchange between waves, with barriers.
#include "test_compat.h"

// Butterfly reduction over the 32 lanes: afterwards every lane holds the sum
// of its wave's values. out[i] = sum of in over i's wave.
extern "C" __global__ void __launch_bounds__(256) emu_test_shfl_xor_sum(const int* in, int* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  int value = in[i];
  for (int mask = kWave / 2; mask > 0; mask /= 2) value += __shfl_xor(value, mask);
  out[i] = value;
}
RDNA_EXPORT_KERNEL(emu_test_shfl_xor_sum)

// One __shfl_xor(value, mask, width) per thread, for checking HIP's rule for
// sources outside the width segment (the lane keeps its own value).
extern "C" __global__ void __launch_bounds__(256)
    emu_test_shfl_xor_width(const float* in, float* out, int mask, int width) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = __shfl_xor(in[i], mask, width);
}
RDNA_EXPORT_KERNEL(emu_test_shfl_xor_width)

constexpr unsigned kExchangeThreads = 128;  // 4 waves
struct ExchangeLds {
  int slots[kExchangeThreads];
};

// Phase 1: thread t publishes in[t] in slot t; after the barrier it reads the
// slot of thread (t + 37) % 128, which belongs to another wave.
// Phase 2 reuses the same LDS: thread t writes 2*first[t] into slot 127 - t,
// and after a second barrier reads slot t.
extern "C" __global__ void __launch_bounds__(kExchangeThreads)
    emu_test_lds_exchange(const int* in, int* first, int* second) {
  ExchangeLds& lds = workgroup_lds<ExchangeLds>();
  const unsigned t = threadIdx.x;
  const unsigned base = blockIdx.x * kExchangeThreads;
  lds.slots[t] = in[base + t];
  __syncthreads();
  const int received = lds.slots[(t + 37) % kExchangeThreads];
  first[base + t] = received;
  __syncthreads();  // every read of phase 1 happens before phase 2 overwrites
  lds.slots[kExchangeThreads - 1 - t] = 2 * received;
  __syncthreads();
  second[base + t] = lds.slots[t];
}
RDNA_EXPORT_KERNEL(emu_test_lds_exchange)
