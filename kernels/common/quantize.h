// Per-token int8 quantization of fp16/bf16 activations with vLLM's scaled_int8_quant formulas
// (the rules and NaN/inf behaviour are documented at the top of quant_int8.hip). Shared by the
// quantization kernels and the fused decode GEMMs (common/gemm.h), which quantize their own
// activation rows: both apply these functions element by element, so their int8 values,
// scales and zero points are the same bits.
#pragma once

#include "common/hip_compat.h"

namespace rdna_w8a8 {

constexpr float kFloatMax = 3.40282347e+38f;

typedef uint32_t v4u32 __attribute__((ext_vector_type(4)));
typedef uint32_t v2u32 __attribute__((ext_vector_type(2)));

// The conversions below clamp in float (fmaxf / fminf drop a NaN), convert a value that is
// always in range and pick the NaN answer last: straight-line code, where early returns made
// the compiler branch (an exec-mask dance per element in the fused decode loop).

// fp32 -> int32 like v_cvt_i32_f32: truncates, saturates, NaN -> 0.
__device__ __forceinline__ int32_t saturate_to_int32(float x) {
  constexpr float kTwoTo31 = 2147483648.f;
  constexpr float kBelowTwoTo31 = 2147483520.f;  // the largest float < 2^31
  const int32_t converted =
      static_cast<int32_t>(__builtin_fminf(__builtin_fmaxf(x, -kTwoTo31), kBelowTwoTo31));
  const int32_t saturated = x >= kTwoTo31 ? 2147483647 : converted;
  return x == x ? saturated : 0;
}

__device__ __forceinline__ int32_t float_to_int32_rn(float x) {
  return saturate_to_int32(__builtin_rintf(x));
}

// rint, saturate to [-128, 127], NaN -> 0.
__device__ __forceinline__ int8_t float_to_int8_rn(float x) {
  const float r = __builtin_rintf(x);
  const int32_t clamped = static_cast<int32_t>(__builtin_fminf(__builtin_fmaxf(r, -128.f), 127.f));
  return static_cast<int8_t>(r == r ? clamped : 0);
}

__device__ __forceinline__ int8_t int32_to_int8(int32_t x) {
  return static_cast<int8_t>(x < -128 ? -128 : (x > 127 ? 127 : x));
}

__device__ __forceinline__ int32_t wrapping_add(int32_t x, int32_t y) {
  return static_cast<int32_t>(static_cast<uint32_t>(x) + static_cast<uint32_t>(y));
}

struct Fp16Input {
  static __device__ __forceinline__ float to_float(uint16_t bits) {
    return static_cast<float>(__builtin_bit_cast(_Float16, bits));
  }
};

struct Bf16Input {
  static __device__ __forceinline__ float to_float(uint16_t bits) {
    return __builtin_bit_cast(float, static_cast<uint32_t>(bits) << 16);
  }
};

// Running min and max of a row; comparisons skip NaN like fminf / fmaxf.
struct Range {
  float lo;
  float hi;
  __device__ __forceinline__ void add(float v) {
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  // Not add(other.lo), add(other.hi): an empty range {FLT_MAX, -FLT_MAX} holds no values.
  __device__ __forceinline__ void merge(Range other) {
    lo = other.lo < lo ? other.lo : lo;
    hi = other.hi > hi ? other.hi : hi;
  }
};

// The range a scan starts from: |x| from 0 (symmetric), min / max from +-FLT_MAX (vLLM's MinMax).
__device__ __forceinline__ Range empty_range(bool asymmetric) {
  return asymmetric ? Range{kFloatMax, -kFloatMax} : Range{0.f, 0.f};
}

// What a scan observes of one element: |x| (symmetric) or x (asymmetric).
__device__ __forceinline__ void observe(Range& range, float v, bool asymmetric) {
  range.add(asymmetric ? v : __builtin_fabsf(v));
}

// The same Range in every lane of the wave (max and min do not depend on the order).
__device__ __forceinline__ Range wave_range(Range r) {
  for (int mask = kWaveSize / 2; mask > 0; mask /= 2) {
    r.merge(Range{__shfl_xor(r.lo, mask), __shfl_xor(r.hi, mask)});
  }
  return r;
}

// A quantization mode: static (scale, zero point given) or dynamic (per row), symmetric or
// asymmetric. The per-element formula depends on it, so kernels choose it once
// (with_quant_mode) and compile one body per mode: no mode test per element.
template <bool Static, bool Asymmetric>
struct QuantMode {
  static constexpr bool kStatic = Static;
  static constexpr bool kAsymmetric = Asymmetric;
};

// Calls body(QuantMode<...>{}) for the runtime mode: one uniform branch, four bodies.
template <class Body>
__device__ __forceinline__ void with_quant_mode(bool is_static, bool asymmetric, Body&& body) {
  if (is_static) {
    if (asymmetric) {
      body(QuantMode<true, true>{});
    } else {
      body(QuantMode<true, false>{});
    }
  } else if (asymmetric) {
    body(QuantMode<false, true>{});
  } else {
    body(QuantMode<false, false>{});
  }
}

// Maps one fp32 value to int8 with the row's parameters.
template <class Mode>
struct Quantizer {
  float factor;        // scale to divide by (static symmetric), else inverse scale to multiply by
  int32_t zero_point;  // asymmetric only
  __device__ __forceinline__ int8_t operator()(float v) const {
    if constexpr (Mode::kAsymmetric) {
      return int32_to_int8(wrapping_add(float_to_int32_rn(v * factor), zero_point));
    } else if constexpr (Mode::kStatic) {
      return float_to_int8_rn(v / factor);
    } else {
      return float_to_int8_rn(v * factor);
    }
  }
};

// The quantizer of static parameters: scale [1] (and zero point [1], asymmetric).
template <class Mode>
__device__ __forceinline__ Quantizer<Mode> static_quantizer(float scale, int32_t zero_point) {
  static_assert(Mode::kStatic);
  if constexpr (Mode::kAsymmetric) return Quantizer<Mode>{1.f / scale, zero_point};
  return Quantizer<Mode>{scale, 0};
}

// The quantizer of a row whose scan gave `range`; its scale goes to `row_scale`.
// Any scan order gives the same bits: min and max are order-free except for the sign of a
// zero, and an all-zero row's lo and hi come from one thread's first element (merges keep
// their own value on ties), so hi - lo is +0 either way.
template <class Mode>
__device__ __forceinline__ Quantizer<Mode> dynamic_quantizer(Range range, float& row_scale) {
  static_assert(!Mode::kStatic);
  if constexpr (Mode::kAsymmetric) {
    row_scale = (range.hi - range.lo) / 255.f;
    const int32_t zero_point = saturate_to_int32(__builtin_rintf(-128.f - range.lo / row_scale));
    return Quantizer<Mode>{1.f / row_scale, zero_point};
  }
  row_scale = range.hi / 127.f;
  return Quantizer<Mode>{range.hi == 0.f ? 0.f : 127.f / range.hi, 0};
}

// kQuantElementsPerVector fp16/bf16 values per 16-byte load (kernel_abi.def); their int8
// values fill 8 bytes.
static_assert(kQuantElementsPerVector * sizeof(uint16_t) == kVectorLoadBytes,
              "an activation load is one 128-bit load");

// Eight values of a row -> their int8 values packed little-endian in two dwords.
template <class Mode>
__device__ __forceinline__ v2u32 quantize_vector(const float (&v)[kQuantElementsPerVector],
                                                 const Quantizer<Mode>& quantize) {
  uint32_t packed[2] = {0, 0};
#pragma unroll
  for (int e = 0; e < kQuantElementsPerVector; ++e) {
    packed[e / 4] |= static_cast<uint32_t>(static_cast<uint8_t>(quantize(v[e]))) << (8 * (e % 4));
  }
  return v2u32{packed[0], packed[1]};
}

// Eight fp16/bf16 values (16 bytes, in memory order) -> fp32.
template <class In>
__device__ __forceinline__ void unpack_vector(v4u32 raw, float (&v)[kQuantElementsPerVector]) {
#pragma unroll
  for (int e = 0; e < kQuantElementsPerVector; ++e) {
    v[e] = In::to_float(static_cast<uint16_t>(raw[e / 2] >> (16 * (e % 2))));
  }
}

// One 16-byte load of eight fp16/bf16 values -> fp32.
template <class In>
__device__ __forceinline__ void load_vector(const uint16_t* p, float (&v)[kQuantElementsPerVector]) {
  unpack_vector<In>(*reinterpret_cast<const v4u32*>(p), v);
}

// A row of fp16/bf16 values in memory: eight per 16-byte load, or one at a time.
template <class In>
struct StoredRow {
  const uint16_t* values;
  __device__ __forceinline__ void vector(int i, float (&v)[kQuantElementsPerVector]) const {
    load_vector<In>(values + i, v);
  }
  __device__ __forceinline__ float element(int i) const { return In::to_float(values[i]); }
};

// Walks the K values of a row (StoredRow, or values computed on the fly: the same vector(i, v)
// and element(i)) with `threads` threads from `thread`: visit_vector(i, v[8]) for elements
// i..i+7 taken as one vector (up to vector_end, 0 when the row cannot be read in vectors),
// visit_element(i, v) for the rest.
template <class Row, class VisitVector, class VisitElement>
__device__ __forceinline__ void for_each_in_row(const Row& row, int K, int vector_end, int thread,
                                                int threads, VisitVector&& visit_vector,
                                                VisitElement&& visit_element) {
  for (int i = thread * kQuantElementsPerVector; i < vector_end;
       i += threads * kQuantElementsPerVector) {
    float v[kQuantElementsPerVector];
    row.vector(i, v);
    visit_vector(i, v);
  }
  for (int i = vector_end + thread; i < K; i += threads) visit_element(i, row.element(i));
}

// The range of a row scanned by `threads` threads (this one is `thread`): this thread's part.
template <class Row>
__device__ __forceinline__ Range scan_row(const Row& row, int K, bool vectorized, bool asymmetric,
                                         int thread, int threads) {
  Range range = empty_range(asymmetric);
  const int vector_end = vectorized ? K - K % kQuantElementsPerVector : 0;
  for_each_in_row(
      row, K, vector_end, thread, threads,
      [&](int, const float(&v)[kQuantElementsPerVector]) {
#pragma unroll
        for (int e = 0; e < kQuantElementsPerVector; ++e) observe(range, v[e], asymmetric);
      },
      [&](int, float v) { observe(range, v, asymmetric); });
  return range;
}

}  // namespace rdna_w8a8
