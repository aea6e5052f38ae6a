// act = silu(gate) * up of a SwiGLU MoE layer in float32, rounded once to the activation dtype,
// as moe/reference.silu_and_mul computes it: the values the fused SiLU-and-mul quantization
// kernel (quant_int8.hip) quantizes without writing them.
#pragma once

#include "common/epilogue.h"
#include "common/quantize.h"

namespace rdna_w8a8 {

// exp(x) in float32 as torch's vectorised CPU kernels compute it (Vectorized<float>::exp is
// SLEEF's expf_u10: reduction by ln 2 in two parts, a degree-5 polynomial, FMAs, the scaling by
// 2^q in two steps), so silu_f32 has the bits of torch.nn.functional.silu's vectorised CPU
// loop, which moe/reference.silu_and_mul runs, for every fp16 and bf16 input (all 2^16 of each
// checked through tests/kernels/probe/silu_probe.hip). The float32 silu of a plain expf, or of
// torch's scalar loop (std::exp), differs from it in the last bit on a few percent of the
// inputs (sometimes moving the rounding of act to fp16/bf16).
__device__ __forceinline__ float vectorised_cpu_expf(float x) {
#pragma clang fp contract(off)
  constexpr float kLog2E = 1.442695040888963407359924681001892137426645954152985934135449406931f;
  constexpr float kLn2High = 0.693145751953125f;
  constexpr float kLn2Low = 1.428606765330187045e-06f;
  constexpr float kPolynomial[] = {0.000198527617612853646278381f, 0.00139304355252534151077271f,
                                   0.00833336077630519866943359f,  0.0416664853692054748535156f,
                                   0.166666671633720397949219f,    0.5f};
  // NaN -> q = 0 and stays NaN through s; out-of-range q only where the result is replaced.
  const int32_t q = saturate_to_int32(__builtin_rintf(x * kLog2E));
  float s = __builtin_fmaf(static_cast<float>(q), -kLn2High, x);
  s = __builtin_fmaf(static_cast<float>(q), -kLn2Low, s);
  float u = kPolynomial[0];
#pragma unroll
  for (int c = 1; c < 6; ++c) u = __builtin_fmaf(u, s, kPolynomial[c]);
  u = 1.f + __builtin_fmaf(s * s, u, s);
  const auto power_of_two = [](int32_t e) {  // 2^e for e in [-126, 127]
    return __builtin_bit_cast(float, static_cast<uint32_t>(e + 127) << 23);
  };
  const int32_t half = q >> 1;
  u = u * power_of_two(half) * power_of_two(q - half);
  if (x < -104.f) u = 0.f;
  if (x > 100.f) u = __builtin_inff();
  return u;
}

// The float32 value of v rounded to the activation dtype (round to nearest even).
__device__ __forceinline__ float round_to(Fp16Input, float v) { return Fp16Input::to_float(fp32_to_fp16_bits(v)); }
__device__ __forceinline__ float round_to(Bf16Input, float v) { return Bf16Input::to_float(fp32_to_bf16_bits(v)); }

// silu(g) = g / (1 + exp(-g)) in float32, as torch's vectorised CPU loop (an IEEE division).
__device__ __forceinline__ float silu_f32(float g) {
#pragma clang fp contract(off)
  return g / (1.f + vectorised_cpu_expf(-g));
}

// A row of act = silu(gate) * up computed from a gate_up row (gate: columns 0..I-1, up: I..2I-1)
// as moe/reference.silu_and_mul does: float32, one rounding to the activation dtype. The
// quantization reads it like a stored row (for_each_in_row).
template <class In>
struct SiluMulRow {
  const uint16_t* gate;
  const uint16_t* up;

  static __device__ __forceinline__ float act(float g, float u) {
#pragma clang fp contract(off)
    return round_to(In{}, silu_f32(g) * u);
  }
  __device__ __forceinline__ void vector(int i, float (&v)[kQuantElementsPerVector]) const {
    float g[kQuantElementsPerVector];
    float u[kQuantElementsPerVector];
    load_vector<In>(gate + i, g);
    load_vector<In>(up + i, u);
#pragma unroll
    for (int e = 0; e < kQuantElementsPerVector; ++e) v[e] = act(g[e], u[e]);
  }
  __device__ __forceinline__ float element(int i) const {
    return act(In::to_float(gate[i]), In::to_float(up[i]));
  }
};

}  // namespace rdna_w8a8
