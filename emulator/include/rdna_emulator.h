// Host-side stand-in for the HIP device subset our kernels use, so that the
// sources in kernels/ compile unchanged as host C++:
//
//   clang++-19 -std=c++20 -DRDNA_W8A8_EMULATOR -I emulator/include -x c++ kernel.hip
//
// and run on the CPU under the emulator's scheduler (emulator/src/). Every HIP
// thread of a workgroup is a fiber; wave-level operations (WMMA, shuffles) are
// rendezvous of the 32 lanes of a wave; __syncthreads() is a rendezvous of the
// whole workgroup. Each operation below names the hardware fact it encodes.
//
// Provided (and nothing else: anything missing fails to compile, loudly):
//   __global__ __device__ __host__ __forceinline__ __launch_bounds__(...)
//   __constant__, threadIdx blockIdx blockDim gridDim (.x .y .z), warpSize,
//   __lane_id(), __syncthreads(), __shfl_xor(v, mask[, width]),
//   workgroup_lds<T>(), RDNA_EXPORT_KERNEL(fn),
//   __builtin_amdgcn_wmma_i32_16x16x16_iu8_w32, __builtin_amdgcn_wmma_f32_16x16x16_f16_w32,
//   __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32.
//
// WMMA builtins: host clang does not know the amdgcn builtins, so the names are
// object-like macros that expand to emulator functions with the same
// parameter lists (plus defaulted call-site arguments used in diagnostics).
// The real builtins require constant bool flags; here they are ordinary
// arguments, checked to agree across the 32 lanes.
#pragma once

#ifndef RDNA_W8A8_EMULATOR
#error "rdna_emulator.h is the host emulation of HIP: compile with -DRDNA_W8A8_EMULATOR"
#endif

#include "rdna_emulator_interface.h"

#define __builtin_amdgcn_wmma_i32_16x16x16_iu8_w32 ::rdna_emu::wmma_i32_16x16x16_iu8_w32
#define __builtin_amdgcn_wmma_f32_16x16x16_f16_w32 ::rdna_emu::wmma_f32_16x16x16_f16_w32
#define __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32 ::rdna_emu::wmma_f32_16x16x16_bf16_w32

// --- Function and variable qualifiers: on the host every function is plain C++.
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// LDS goes through workgroup_lds<T>() only (docs/architecture.md), so that the
// emulator can give each workgroup its own poisoned, exactly sized buffer.
#define __shared__ _Pragma("GCC error \"use workgroup_lds<T>() instead of __shared__ (rdna_emulator.h)\"")

// --- Work-item coordinates of the running fiber.
#define threadIdx (::rdna_emu::detail::current_lane->thread_idx)
#define blockIdx (::rdna_emu::detail::current_lane->block_idx)
#define blockDim (::rdna_emu::detail::current_lane->block_dim)
#define gridDim (::rdna_emu::detail::current_lane->grid_dim)

inline constexpr int warpSize = static_cast<int>(::rdna_emu::kWaveSize);

inline int __lane_id() { return static_cast<int>(::rdna_emu::detail::current_lane->lane_id); }

// s_barrier: every thread of the workgroup waits here until all have arrived.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::rdna_emu::detail::barrier({file, line});
}

// HIP's __shfl_xor (amd_warp_functions.h): index = lane ^ mask, kept inside
// the caller's width-aligned segment (else the lane reads its own value), then
// ds_bpermute, which in wave32 takes the source lane modulo 32.
template <class T>
inline T __shfl_xor(T var, int lane_mask, int width = warpSize,
                    const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16,
                "__shfl_xor moves plain values of at most 16 bytes");
  const int self = __lane_id();
  int index = self ^ lane_mask;
  index = index >= ((self + width) & ~(width - 1)) ? self : index;
  T result;
  ::rdna_emu::detail::WaveOpRequest request{::rdna_emu::detail::WaveOpKind::Permute,
                                            {file, line},
                                            &var,
                                            &result,
                                            static_cast<std::uint32_t>(sizeof(T)),
                                            static_cast<std::uint32_t>(index) % ::rdna_emu::kWaveSize};
  ::rdna_emu::detail::wave_op(request);
  return result;
}

// The workgroup's LDS object of type T: a fresh heap buffer of exactly
// sizeof(T) bytes per workgroup, filled with kLdsPoisonByte (LDS has no
// initial value on the GPU), so AddressSanitizer catches overruns.
template <class T>
inline T& workgroup_lds() {
  static_assert(std::is_trivially_default_constructible_v<T> &&
                    std::is_trivially_destructible_v<T>,
                "LDS holds plain data: no constructor or destructor runs on the GPU");
  static_assert(sizeof(T) <= ::rdna_emu::kMaxLdsBytesPerWorkgroup,
                "gfx11 allows at most 64 KiB of LDS per workgroup");
  return *static_cast<T*>(::rdna_emu::detail::workgroup_lds_storage(
      &::rdna_emu::detail::lds_type_tag<T>, sizeof(T), alignof(T), __PRETTY_FUNCTION__));
}

// Registers the extern "C" entry point `fn` under its own name, with an
// invoker that unpacks the kernarg buffer by fn's parameter types.
#define RDNA_EXPORT_KERNEL(fn)                       \
  [[maybe_unused]] static const bool rdna_emu_exported_##fn = \
      ::rdna_emu::detail::ExportedKernel<&fn>::register_as(#fn);
