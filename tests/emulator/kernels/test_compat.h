// What the emulator test kernels need from HIP, for both builds: the real
// gfx11 device compile (hip_runtime.h) and the emulator's host compile.
// Production kernels get the same from kernels/common/hip_compat.h; the
// tests keep their own copy so that they do not depend on it.
#pragma once

#ifdef RDNA_W8A8_EMULATOR
#include "rdna_emulator.h"
#else
#include <hip/hip_runtime.h>
template <class T>
__device__ T& workgroup_lds() {
  __shared__ T storage;
  return storage;
}
#define RDNA_EXPORT_KERNEL(fn)
#endif  // RDNA_W8A8_EMULATOR

#include <stdint.h>

typedef int v4i32 __attribute__((ext_vector_type(4)));
typedef int v8i32 __attribute__((ext_vector_type(8)));
typedef float v8f32 __attribute__((ext_vector_type(8)));
typedef _Float16 v16f16 __attribute__((ext_vector_type(16)));
typedef short v16i16 __attribute__((ext_vector_type(16)));

constexpr unsigned kWave = 32;
constexpr unsigned kTile = 16;
