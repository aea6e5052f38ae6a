// The one place that knows the RDNA3 (gfx11) wave32 WMMA operand layout.
//
// One WMMA computes D(16x16) = A(16x16) * B(16x16) + C for a whole wave of 32 lanes.
//   A (16 rows m x 16 k):    lane l supplies row m = l % 16, its 16 k-values in k order
//                            (int8: VGPR j byte b holds k = 4j + b; f16: VGPR j holds k = 2j, 2j+1).
//   B (16 k x 16 columns n): lane l supplies column n = l % 16 the same way. With weights
//                            stored [N][K] (K contiguous) that is 16 contiguous k of row n.
//   Lanes 16-31 must hold exactly the same A and B data as lanes 0-15 (an RDNA3 rule; RDNA4
//   changed it). Every lane must be active: pad partial tiles with zeros, never branch lanes off.
//   C and D (8 values per lane): element v of lane l is D[row 2v + l / 16][column l % 16], so
//                            lanes 0-15 hold the even rows and lanes 16-31 the odd rows.
// So an operand is one 16-byte row segment per lane (one 128-bit load for int8), and a lane's
// accumulator is an 8-row strip of one output column.
#pragma once

#include "common/hip_compat.h"

namespace rdna_w8a8 {

constexpr int kWmmaDim = 16;        // M, N and K of one WMMA
constexpr int kOperandBytesI8 = 16; // int8 A/B bytes per lane: 16 k-values

typedef int v4i32 __attribute__((ext_vector_type(4)));
typedef int v8i32 __attribute__((ext_vector_type(8)));
typedef float v8f32 __attribute__((ext_vector_type(8)));
typedef _Float16 v16f16 __attribute__((ext_vector_type(16)));

using FragI8 = v4i32;   // 16 int8 k-values of one A row or B column
using FragF16 = v16f16; // 16 f16 k-values of one A row or B column
using AccI32 = v8i32;   // 8 int32 accumulators: one column, every other row
using AccF32 = v8f32;   // 8 fp32 accumulators, same positions

constexpr int kAccValues = 8;

// Row of A, or column of B, whose 16 k-values this lane supplies.
__device__ __forceinline__ int operand_index(int lane) { return lane % kWmmaDim; }

// Position in D of accumulator element v of this lane.
__device__ __forceinline__ int acc_row(int v, int lane) { return 2 * v + lane / kWmmaDim; }
__device__ __forceinline__ int acc_col(int lane) { return lane % kWmmaDim; }

// One 128-bit load of an int8 operand (global or LDS); 16-byte aligned.
__device__ __forceinline__ FragI8 load_frag_i8(const int8_t* p) {
  return *reinterpret_cast<const FragI8*>(p);
}

__device__ __forceinline__ FragI8 zero_frag_i8() { return FragI8{0, 0, 0, 0}; }
__device__ __forceinline__ AccI32 zero_acc_i32() { return AccI32{0, 0, 0, 0, 0, 0, 0, 0}; }
__device__ __forceinline__ AccF32 zero_acc_f32() {
  return AccF32{0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
}

// Flags of the int8 WMMA (compile-time constants in the instruction encoding, neg_lo:[a,b,0]).
constexpr bool kSignedA = true;  // activations are signed int8
constexpr bool kSignedB = true;  // weights are signed int8
// Wrap like a plain int32 sum. Saturation would hide overflow; int8 extremes
// (-128 * -128 = 2^14 per product) cannot overflow int32 below K = 2^17.
constexpr bool kClamp = false;

// acc += a * b over 16 k (int8 x int8 -> int32).
__device__ __forceinline__ AccI32 mma(FragI8 a, FragI8 b, AccI32 acc) {
  return __builtin_amdgcn_wmma_i32_16x16x16_iu8_w32(kSignedA, a, kSignedB, b, acc, kClamp);
}

// acc += a * b over 16 k (f16 x f16 -> fp32).
__device__ __forceinline__ AccF32 mma(FragF16 a, FragF16 b, AccF32 acc) {
  return __builtin_amdgcn_wmma_f32_16x16x16_f16_w32(a, b, acc);
}

// Operand policies of the GEMM template (common/gemm.h): raw 16-byte operands in, WMMA
// fragments and accumulators out.

// int8 operands go to the WMMA as loaded; int32 partial sums add with wrap-around.
struct Int8Math {
  using Frag = FragI8;
  using Acc = AccI32;
  using AccElem = int32_t;
  static __device__ __forceinline__ Frag to_frag(FragI8 raw) { return raw; }
  static __device__ __forceinline__ Acc zero() { return zero_acc_i32(); }
  static __device__ __forceinline__ Acc mma(Frag a, Frag b, Acc acc) { return rdna_w8a8::mma(a, b, acc); }
  static __device__ __forceinline__ AccElem add(AccElem x, AccElem y) {
    return static_cast<int32_t>(static_cast<uint32_t>(x) + static_cast<uint32_t>(y));
  }
};

}  // namespace rdna_w8a8
