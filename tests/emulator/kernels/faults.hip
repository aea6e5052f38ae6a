// Kernels that break a hardware rule on purpose; the emulator must report
// each one (abort with a message, AddressSanitizer, or a visible poison).
#include "test_compat.h"

namespace {
constexpr bool kSigned = true;
constexpr bool kWrap = false;
}  // namespace

// Lane 21 of wave 1 in workgroup 2 loads the next row of A instead of
// replicating lane 5: on RDNA3 lanes 16-31 must carry lanes 0-15's data.
extern "C" __global__ void __launch_bounds__(64)
    emu_fault_wmma_unreplicated(const int8_t* a, int32_t* d) {
  const unsigned lane = threadIdx.x % kWave;
  const bool faulty = blockIdx.x == 2 && threadIdx.x / kWave == 1 && lane == 21;
  const unsigned row = (lane + (faulty ? 1 : 0)) % kTile;
  const v4i32 frag = *reinterpret_cast<const v4i32*>(a + row * kTile);
  const v8i32 acc = __builtin_amdgcn_wmma_i32_16x16x16_iu8_w32(kSigned, frag, kSigned, frag,
                                                                v8i32{}, kWrap);
  d[blockIdx.x * blockDim.x + threadIdx.x] = acc[0];
}
RDNA_EXPORT_KERNEL(emu_fault_wmma_unreplicated)

// Threads 0-63 and 64-127 wait at two different barriers.
extern "C" __global__ void __launch_bounds__(128) emu_fault_divergent_barrier(int* out) {
  if (threadIdx.x < 64) {
    __syncthreads();
    out[threadIdx.x] = 1;
  } else {
    __syncthreads();
    out[threadIdx.x] = 2;
  }
}
RDNA_EXPORT_KERNEL(emu_fault_divergent_barrier)

// Threads 96-127 return before the barrier that the others wait at.
extern "C" __global__ void __launch_bounds__(128) emu_fault_exit_before_barrier(int* out) {
  if (threadIdx.x >= 96) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}
RDNA_EXPORT_KERNEL(emu_fault_exit_before_barrier)

// A WMMA in a workgroup of 48 threads: wave 1 has only 16 lanes.
extern "C" __global__ void __launch_bounds__(64) emu_fault_partial_wave_wmma(int32_t* d) {
  const v4i32 ones = {0x01010101, 0x01010101, 0x01010101, 0x01010101};
  const v8i32 acc = __builtin_amdgcn_wmma_i32_16x16x16_iu8_w32(kSigned, ones, kSigned, ones,
                                                                v8i32{}, kWrap);
  d[threadIdx.x] = acc[0];
}
RDNA_EXPORT_KERNEL(emu_fault_partial_wave_wmma)

// Only lanes 0-15 reach the shuffle; lanes 16-31 exit.
extern "C" __global__ void __launch_bounds__(32) emu_fault_partial_shuffle(int* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor(static_cast<int>(threadIdx.x), 1);
}
RDNA_EXPORT_KERNEL(emu_fault_partial_shuffle)

// Every thread writes out[threadIdx.x]: launched with one thread more than
// `out` has elements, the last write is out of bounds.
extern "C" __global__ void __launch_bounds__(1024) emu_fault_global_overflow(int* out) {
  out[threadIdx.x] = static_cast<int>(threadIdx.x);
}
RDNA_EXPORT_KERNEL(emu_fault_global_overflow)

constexpr unsigned kLdsInts = 64;
struct SmallLds {
  int values[kLdsInts];
};

// Workgroup 0 writes the even slots only, later workgroups write nothing;
// out[b][t] = slot t of workgroup b, so the other entries show the content of
// never-written LDS (also when a workgroup's LDS reuses freed memory).
extern "C" __global__ void __launch_bounds__(kLdsInts) emu_fault_lds_unwritten(int* out) {
  SmallLds& lds = workgroup_lds<SmallLds>();
  if (blockIdx.x == 0 && threadIdx.x % 2 == 0)
    lds.values[threadIdx.x] = static_cast<int>(threadIdx.x) * 10;
  __syncthreads();
  out[blockIdx.x * kLdsInts + threadIdx.x] = lds.values[threadIdx.x];
}
RDNA_EXPORT_KERNEL(emu_fault_lds_unwritten)

// Reads one int past the end of the LDS object.
extern "C" __global__ void __launch_bounds__(kLdsInts) emu_fault_lds_overrun(int* out) {
  SmallLds& lds = workgroup_lds<SmallLds>();
  lds.values[threadIdx.x] = 1;
  __syncthreads();
  out[threadIdx.x] = lds.values[threadIdx.x + 1];
}
RDNA_EXPORT_KERNEL(emu_fault_lds_overrun)

// Lanes 0-15 shuffle at one call, lanes 16-31 at another.
extern "C" __global__ void __launch_bounds__(32) emu_fault_divergent_shuffles(int* out) {
  const int value = static_cast<int>(threadIdx.x);
  if (threadIdx.x < 16) {
    out[threadIdx.x] = __shfl_xor(value, 1);
  } else {
    out[threadIdx.x] = __shfl_xor(value, 2);
  }
}
RDNA_EXPORT_KERNEL(emu_fault_divergent_shuffles)

// A 16-byte vector load from an address that is not 16-byte aligned
// (undefined behaviour in C++; UBSan reports it).
extern "C" __global__ void __launch_bounds__(32)
    emu_fault_misaligned_load(const int8_t* bytes, int* out) {
  const v4i32 value = *reinterpret_cast<const v4i32*>(bytes + 4 * threadIdx.x + 1);
  out[threadIdx.x] = value[0];
}
RDNA_EXPORT_KERNEL(emu_fault_misaligned_load)

constexpr unsigned kRaceThreads = 128;
struct RaceLds {
  int slots[kRaceThreads];
};

// Thread t publishes t + 1 in slot t and reads slot 127 - t with no barrier in
// between: a data race between waves, visible in one schedule order or the other.
extern "C" __global__ void __launch_bounds__(kRaceThreads) emu_fault_missing_barrier(int* out) {
  RaceLds& lds = workgroup_lds<RaceLds>();
  lds.slots[threadIdx.x] = static_cast<int>(threadIdx.x) + 1;
  out[threadIdx.x] = lds.slots[kRaceThreads - 1 - threadIdx.x];
}
RDNA_EXPORT_KERNEL(emu_fault_missing_barrier)
