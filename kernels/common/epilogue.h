// The fused GEMM epilogue: zero-point correction, scales, bias, fp32 -> fp16/bf16 and the
// masked store of one output element. Formula and order follow vLLM's CUTLASS scaled-mm
// epilogues (ScaledEpilogueBias / ...BiasAzp / ...BiasAzpToken):
//   out[m][n] = a_scale[m] * (b_scale[n] * float(acc - azp[m] * azp_adj[n])) + bias[n]
// with the last step one fused multiply-add. The zero-point term is formed exactly in 64 bits
// (upstream wraps it in int32): the same result wherever upstream's int32 does not wrap, and
// the right one where it would (a dynamic zero point reaches +-2^31 on rows of narrow range).
// The row and column factors are loaded once per row / column, not per element.
#pragma once

#include "common/hip_compat.h"

namespace rdna_w8a8 {

// Round to nearest even, like torch's float -> Half conversion (v_cvt_f16_f32 on the GPU).
__device__ __forceinline__ uint16_t fp32_to_fp16_bits(float v) {
  return __builtin_bit_cast(uint16_t, static_cast<_Float16>(v));
}

// Round to nearest even, NaN -> 0x7fc0: torch's c10::BFloat16 conversion bit for bit.
__device__ __forceinline__ uint16_t fp32_to_bf16_bits(float v) {
  const uint32_t bits = __builtin_bit_cast(uint32_t, v);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float bf16_bits_to_fp32(uint16_t bits) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(bits) << 16);
}

// The per-column and per-row factors of the epilogue, loaded once per column / row.
// Absent terms take neutral values so every element runs the same arithmetic:
// azp_adj 0 (nothing to subtract), azp 1 (per-tensor zero point folded into azp_adj),
// bias -0.0 (x + -0.0 == x for every x, including +0.0 and -0.0).
struct ColumnTerms {
  float b_scale;
  float bias;
  int32_t azp_adj;
};

struct RowTerms {
  float a_scale;
  int32_t azp;
};

// int8 GEMM: a_scale * (b_scale * float(acc - azp * azp_adj)) + bias, the difference exact
// in int64 (|azp * azp_adj| <= 2^62) and rounded once to fp32.
__device__ __forceinline__ float finish(int32_t acc, RowTerms row, ColumnTerms col) {
  const int64_t corrected =
      static_cast<int64_t>(acc) - static_cast<int64_t>(row.azp) * static_cast<int64_t>(col.azp_adj);
  return __builtin_fmaf(row.a_scale, col.b_scale * static_cast<float>(corrected), col.bias);
}

// fp8 GEMM: a_scale * (b_scale * acc) + bias (fp8 has no zero point).
__device__ __forceinline__ float finish(float acc, RowTerms row, ColumnTerms col) {
  return __builtin_fmaf(row.a_scale, col.b_scale * acc, col.bias);
}

// The GEMM's output stage (the `Out` of gemm.h): per-column and per-row terms, loaded once
// each, then one converted, masked store per element.
struct Epilogue {
  using Column = ColumnTerms;
  using Row = RowTerms;

  void* c;                 // [M, N] fp16 or bf16, row stride ldc
  const float* a_scale;    // [M] or [1]
  const float* b_scale;    // [N] or [1]
  const int32_t* azp;      // [M] or null
  const int32_t* azp_adj;  // [N] or null
  const void* bias;        // [N] in the output dtype, or null
  int32_t M, N, ldc;
  uint32_t flags;

  __device__ __forceinline__ ColumnTerms column(int n) const {
    ColumnTerms t{1.f, -0.f, 0};
    if (n >= N) return t;  // a padding column: never stored
    t.b_scale = b_scale[(flags & kFlagPerChannelBScale) ? n : 0];
    if (azp_adj != nullptr) t.azp_adj = azp_adj[n];
    if (bias != nullptr) {
      const uint16_t bits = static_cast<const uint16_t*>(bias)[n];
      t.bias = (flags & kFlagOutputBf16) ? bf16_bits_to_fp32(bits)
                                         : static_cast<float>(__builtin_bit_cast(_Float16, bits));
    }
    return t;
  }

  __device__ __forceinline__ RowTerms row(int m) const {
    RowTerms t{1.f, 1};
    if (m >= M) return t;  // a padding row: never stored
    t.a_scale = a_scale[(flags & kFlagPerTokenAScale) ? m : 0];
    if (azp != nullptr) t.azp = azp[m];
    return t;
  }

  // Finishes, converts and stores one element; elements outside [M, N) are dropped.
  template <class AccElem>
  __device__ __forceinline__ void store(int m, int n, AccElem acc, RowTerms r,
                                        ColumnTerms col) const {
    if (m >= M || n >= N) return;
    const float value = finish(acc, r, col);
    const uint16_t bits =
        (flags & kFlagOutputBf16) ? fp32_to_bf16_bits(value) : fp32_to_fp16_bits(value);
    static_cast<uint16_t*>(c)[static_cast<int64_t>(m) * ldc + n] = bits;
  }
};

}  // namespace rdna_w8a8
