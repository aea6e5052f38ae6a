// The one include every kernel source starts with: the HIP device environment on the GPU,
// the CPU emulator of the same subset under RDNA_W8A8_EMULATOR (docs/architecture.md,
// "Device code conventions"), and the gfx11 family check.
#pragma once

#include <stdint.h>

#ifdef RDNA_W8A8_EMULATOR

// Provides __global__/__device__, threadIdx..., __syncthreads, __shfl_xor, the gfx11 WMMA
// builtins, workgroup_lds<T>() and RDNA_EXPORT_KERNEL(fn) for host execution.
#include "rdna_emulator.h"

#else  // !RDNA_W8A8_EMULATOR

#include <hip/hip_runtime.h>

// The kernels encode the RDNA3 wave32 WMMA operand layout (kernels/common/wmma.h). RDNA4
// (gfx12) and CDNA use different builtins and layouts: refuse them at compile time rather
// than produce a code object that computes garbage.
#ifdef __HIP_DEVICE_COMPILE__
#if !defined(__GFX11__)
#error "vllm-rdna-w8a8 kernels target gfx11 (RDNA3: gfx1100-gfx1103, gfx1150, gfx1151) only; compile with --offload-arch=gfx11xx"
#endif  // !__GFX11__
#if __AMDGCN_WAVEFRONT_SIZE__ != 32
#error "vllm-rdna-w8a8 kernels need wave32 (the WMMA lane layout is wave32); drop -mwavefrontsize64"
#endif  // __AMDGCN_WAVEFRONT_SIZE__ != 32
#endif  // __HIP_DEVICE_COMPILE__

// Each kernel keeps all of its LDS in one struct T; one static allocation per T.
template <typename T>
__device__ __forceinline__ T& workgroup_lds() {
  __shared__ T storage;
  return storage;
}

// Registers an entry point with the emulator; nothing to do on the GPU.
#define RDNA_EXPORT_KERNEL(fn)

#endif  // RDNA_W8A8_EMULATOR

namespace rdna_w8a8 {

// The kernel ABI flags and the gfx11 limits, shared with the host code (kernels/kernel_abi.def).
#define W8A8_ABI_CONSTANT(cpp_name, python_name, value, why) constexpr int cpp_name = value;
#include "kernel_abi.def"
#undef W8A8_ABI_CONSTANT

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x) % kWaveSize; }
// The same in every lane of a wave; read from lane 0 on the GPU so the compiler knows it and
// keeps loops and branches on it scalar (else a loop bound from wave_id() is treated as
// divergent: exec-mask loop control).
__device__ __forceinline__ int wave_id() {
#ifdef RDNA_W8A8_EMULATOR
  return static_cast<int>(threadIdx.x) / kWaveSize;
#else
  return __builtin_amdgcn_readfirstlane(static_cast<int>(threadIdx.x) / kWaveSize);
#endif
}

}  // namespace rdna_w8a8
