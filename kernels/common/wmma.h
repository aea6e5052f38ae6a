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

typedef int v4i32 __attribute__((ext_vector_type(4)));
typedef int v8i32 __attribute__((ext_vector_type(8)));
typedef float v8f32 __attribute__((ext_vector_type(8)));
typedef _Float16 v16f16 __attribute__((ext_vector_type(16)));

using FragI8 = v4i32;   // 16 int8 k-values of one A row or B column
using FragF16 = v16f16; // 16 f16 k-values of one A row or B column
using AccI32 = v8i32;   // 8 int32 accumulators: one column, every other row
using AccF32 = v8f32;   // 8 fp32 accumulators, same positions

// Row of A, or column of B, whose 16 k-values this lane supplies.
__device__ __forceinline__ int operand_index(int lane) { return lane % kWmmaDim; }

// Position in D of accumulator element v of this lane.
__device__ __forceinline__ int acc_row(int v, int lane) { return 2 * v + lane / kWmmaDim; }
__device__ __forceinline__ int acc_col(int lane) { return lane % kWmmaDim; }

// Row chunks: the same 16x16 tile regrouped so that each lane holds 8 consecutive columns of
// one row (one 16-byte store of 16-bit outputs). Lane l holds row chunk_row(l), columns
// chunk_col(l) .. + 7.
constexpr int kChunkValues = 8;
__device__ __forceinline__ int chunk_row(int lane) {
  return 2 * (lane % kChunkValues) + lane / kWmmaDim;
}
__device__ __forceinline__ int chunk_col(int lane) {
  return kChunkValues * (lane % kWmmaDim / kChunkValues);
}

// Regroups a tile of 16-bit values from the accumulator layout to row chunks. In: this lane's
// 8 values in accumulator order, value v in bits 16 * (v % 2) of words[v / 2]. Out: its row
// chunk, column chunk_col + j in bits 16 * (j % 2) of words[j / 2]. Among each 8 lanes
// (the columns of one chunk, in the accumulator layout) this is an 8x8 transpose: a butterfly
// over lane bits 4, 2, 1, each stage swapping the half of the values whose index bit differs
// from the lane's (two 32-bit shuffles per stage, every lane taking part).
__device__ __forceinline__ void acc_to_row_chunks(uint32_t (&words)[4], int lane) {
  const int k = lane % kChunkValues;
  // Selects only: an index that depends on the lane would put `words` in scratch memory.
  {  // values v <-> v ^ 4: words w <-> w ^ 2
    const bool high = k & 4;
    const uint32_t got0 = __shfl_xor(high ? words[0] : words[2], 4);
    const uint32_t got1 = __shfl_xor(high ? words[1] : words[3], 4);
    words[0] = high ? got0 : words[0];
    words[1] = high ? got1 : words[1];
    words[2] = high ? words[2] : got0;
    words[3] = high ? words[3] : got1;
  }
  {  // values v <-> v ^ 2: words w <-> w ^ 1
    const bool high = k & 2;
    const uint32_t got0 = __shfl_xor(high ? words[0] : words[1], 2);
    const uint32_t got1 = __shfl_xor(high ? words[2] : words[3], 2);
    words[0] = high ? got0 : words[0];
    words[1] = high ? words[1] : got0;
    words[2] = high ? got1 : words[2];
    words[3] = high ? words[3] : got1;
  }
  {  // values v <-> v ^ 1: the two halves of each word; each shuffle carries two halves
    const bool high = k & 1;
    const auto halves = [&](uint32_t a, uint32_t b) {
      return high ? (a & 0xffffu) | (b << 16) : (a >> 16) | (b & 0xffff0000u);
    };
    const uint32_t got01 = __shfl_xor(halves(words[0], words[1]), 1);
    const uint32_t got23 = __shfl_xor(halves(words[2], words[3]), 1);
    const auto merge = [&](uint32_t mine, uint32_t got_half) {  // got_half in bits 0-15
      return high ? (got_half & 0xffffu) | (mine & 0xffff0000u) : (mine & 0xffffu) | (got_half << 16);
    };
    words[0] = merge(words[0], got01);
    words[1] = merge(words[1], got01 >> 16);
    words[2] = merge(words[2], got23);
    words[3] = merge(words[3], got23 >> 16);
  }
}

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

// fp8 e4m3fn -> f16, exact (every e4m3fn value is an f16 value), two values per 32-bit word.
// `pair` holds one e4m3fn byte in bits 0-7 and one in bits 16-23. Exponent and mantissa
// (7 bits) moved to the f16 field positions give 2^-8 times the value, normal or subnormal;
// a packed f16 multiply by 2^8 fixes it exactly. The e4m3fn NaN encoding (S.1111.111, bytes
// 0x7f / 0xff) would become 480, which no e4m3fn value reaches (the largest is 448): it is
// replaced by the f16 NaN 0x7e00 (sign kept), so NaN inputs propagate to the outputs they touch.
__device__ __forceinline__ uint32_t e4m3fn_pair_to_f16_pair(uint32_t pair) {
  typedef _Float16 v2f16 __attribute__((ext_vector_type(2)));
  constexpr uint16_t kF16Of480 = 0x5f80;
  constexpr uint16_t kF16Nan = 0x7e00;
  const uint32_t shifted = (pair & 0x007f007fu) << 7;
  const v2f16 rescaled = __builtin_bit_cast(v2f16, shifted) * v2f16{256.f16, 256.f16};
  uint32_t bits = __builtin_bit_cast(uint32_t, rescaled);
  if ((bits & 0xffffu) == kF16Of480) bits = (bits & 0xffff0000u) | kF16Nan;
  if ((bits >> 16) == kF16Of480) bits = (bits & 0x0000ffffu) | (static_cast<uint32_t>(kF16Nan) << 16);
  return bits | ((pair & 0x00800080u) << 8);
}

// 16 e4m3fn k-values (one 128-bit load) -> the f16 operand of the same k order.
__device__ __forceinline__ FragF16 e4m3fn_frag_to_f16(FragI8 raw) {
  typedef uint32_t v8u32 __attribute__((ext_vector_type(8)));
  v8u32 words;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t w = static_cast<uint32_t>(raw[j]);  // k = 4j .. 4j+3
    words[2 * j] = e4m3fn_pair_to_f16_pair((w & 0xffu) | ((w & 0xff00u) << 8));
    words[2 * j + 1] = e4m3fn_pair_to_f16_pair(((w >> 16) & 0xffu) | ((w >> 8) & 0xff0000u));
  }
  return __builtin_bit_cast(FragF16, words);
}

// fp8 e4m3fn operands widened to f16 in registers; fp32 sums (every f16 x f16 product of
// e4m3 values is exact in fp32; the sums round like fp32).
struct Fp8Math {
  using Frag = FragF16;
  using Acc = AccF32;
  using AccElem = float;
  static __device__ __forceinline__ Frag to_frag(FragI8 raw) { return e4m3fn_frag_to_f16(raw); }
  static __device__ __forceinline__ Acc zero() { return zero_acc_f32(); }
  static __device__ __forceinline__ Acc mma(Frag a, Frag b, Acc acc) { return rdna_w8a8::mma(a, b, acc); }
  static __device__ __forceinline__ AccElem add(AccElem x, AccElem y) { return x + y; }
};

}  // namespace rdna_w8a8
