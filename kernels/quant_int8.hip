// Per-token int8 quantization of fp16/bf16 activations for the W8A8 GEMMs:
// `w8a8_quant_i8_f16` / `w8a8_quant_i8_bf16`, one workgroup per row, grid = (M, 1, 1),
// block = (256, 1, 1) (any multiple of 32 up to 256 works). Arguments: docs/architecture.md.
//
// Bit-compatible with vLLM's scaled_int8_quant (csrc/quantization/w8a8/int8/scaled_quant.cu,
// ROCm path), per row:
//   static symmetric:   q = sat8(rint(x / scale))
//   static asymmetric:  q = sat8(sat32(rint(x * (1 / scale))) + azp)
//   dynamic symmetric:  absmax = max |x|; scale = absmax / 127;
//                       q = sat8(rint(x * (absmax == 0 ? 0 : 127 / absmax)))
//   dynamic asymmetric: scale = (max - min) / 255; azp = sat32(rint(-128 - min / scale));
//                       q = sat8(sat32(rint(x * (1 / scale))) + azp)
// in fp32, rint = round half to even, sat8/sat32 saturate, the int32 + azp wraps (as on the
// GPU). A row of zeros gives q = 0 and scale 0 (and azp 0 when asymmetric).
// NaN and inf inputs (vLLM leaves these to the hardware; we pin the hardware's answer):
//   - float -> int conversions give 0 for NaN (v_cvt_i32_f32; CUDA's cvt.rni.sat too), so a
//     NaN element quantizes to 0 (symmetric) or to sat8(azp) (asymmetric);
//   - the absmax / min / max scans skip NaN elements (like fmaxf / fminf); a row that is all
//     NaN scans as empty: symmetric scale 0, asymmetric scale -inf and azp -128;
//   - an inf element makes the dynamic scale inf: finite elements quantize to 0 and the inf
//     element itself (inf * 0 = NaN) to 0 as well (asymmetric: to sat8(azp)).
// Columns K..ldq-1 of q are written as 0 (the GEMM reads K padded to a multiple of 16).
//
// Floors on the RX 7900 XTX (gfx1100), arithmetic from paper peaks, not measurements:
// M = 4096 tokens x K = 4096 fp16: read 2 + write 1 byte per element (the second read of an
// 8 KiB row hits cache) = 50.3 MB -> memory floor 52 us at 960 GB/s; ~10 VALU ops per element
// = 168 M lane-ops / (96 CUs x 64 lanes x 2.5 GHz = 15.4 T lane-ops/s) -> compute floor 11 us.
// Memory binds.
#include "common/hip_compat.h"

namespace rdna_w8a8 {

// `flags` bits of the quantization kernels (docs/architecture.md).
constexpr uint32_t kFlagStaticScale = 1;  // scale (and azp) are inputs [1], else outputs [M]
constexpr uint32_t kFlagAsymmetric = 2;   // zero point in azp, else azp is null

constexpr int kQuantMaxThreads = 256;
constexpr int kQuantElementsPerVector = 8;  // 16 bytes of fp16/bf16 in, 8 bytes of int8 out
constexpr float kFloatMax = 3.40282347e+38f;

typedef uint32_t v4u32 __attribute__((ext_vector_type(4)));
typedef uint32_t v2u32 __attribute__((ext_vector_type(2)));

// fp32 -> int32 like v_cvt_i32_f32: truncates, saturates, NaN -> 0.
__device__ __forceinline__ int32_t saturate_to_int32(float x) {
  if (!(x == x)) return 0;
  if (x >= 2147483648.f) return 2147483647;
  if (x <= -2147483648.f) return -2147483647 - 1;
  return static_cast<int32_t>(x);
}

__device__ __forceinline__ int32_t float_to_int32_rn(float x) {
  return saturate_to_int32(__builtin_rintf(x));
}

__device__ __forceinline__ int8_t float_to_int8_rn(float x) {
  float r = __builtin_rintf(x);
  r = r < -128.f ? -128.f : (r > 127.f ? 127.f : r);  // NaN passes, then converts to 0
  return static_cast<int8_t>(saturate_to_int32(r));
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

struct QuantLds {
  Range per_wave[kQuantMaxThreads / kWaveSize];
};

// The same Range in every thread of the workgroup (max and min do not depend on the order).
__device__ __forceinline__ Range workgroup_range(Range r) {
  for (int mask = kWaveSize / 2; mask > 0; mask /= 2) {
    r.merge(Range{__shfl_xor(r.lo, mask), __shfl_xor(r.hi, mask)});
  }
  auto& lds = workgroup_lds<QuantLds>();
  if (lane_id() == 0) lds.per_wave[wave_id()] = r;
  __syncthreads();
  Range total = lds.per_wave[0];
  const int waves = static_cast<int>(blockDim.x) / kWaveSize;
  for (int w = 1; w < waves; ++w) total.merge(lds.per_wave[w]);
  return total;
}

// Maps one fp32 value to int8 with the row's parameters.
struct Quantizer {
  float factor;        // scale to divide by (static symmetric), else inverse scale to multiply by
  int32_t zero_point;  // asymmetric only
  bool divide;
  bool asymmetric;
  __device__ __forceinline__ int8_t operator()(float v) const {
    if (asymmetric) return int32_to_int8(wrapping_add(float_to_int32_rn(v * factor), zero_point));
    return float_to_int8_rn(divide ? v / factor : v * factor);
  }
};

// Walks a row: visit_vector(i, v[8]) for elements i..i+7 read with one 16-byte load (up to
// vector_end, 0 when the row is not 16-byte aligned), visit_element(i, v) for the rest.
template <class In, class VisitVector, class VisitElement>
__device__ __forceinline__ void for_each_in_row(const uint16_t* row, int K, int vector_end,
                                                VisitVector&& visit_vector,
                                                VisitElement&& visit_element) {
  const int tid = static_cast<int>(threadIdx.x);
  const int threads = static_cast<int>(blockDim.x);
  for (int i = tid * kQuantElementsPerVector; i < vector_end;
       i += threads * kQuantElementsPerVector) {
    const v4u32 raw = *reinterpret_cast<const v4u32*>(row + i);
    float v[kQuantElementsPerVector];
#pragma unroll
    for (int e = 0; e < kQuantElementsPerVector; ++e) {
      v[e] = In::to_float(static_cast<uint16_t>(raw[e / 2] >> (16 * (e % 2))));
    }
    visit_vector(i, v);
  }
  for (int i = vector_end + tid; i < K; i += threads) visit_element(i, In::to_float(row[i]));
}

template <class In>
__device__ __forceinline__ void quantize_row(const void* x, int8_t* q, float* scale,
                                             int32_t* azp, int32_t M, int32_t K, int32_t ldx,
                                             int32_t ldq, uint32_t flags) {
  const int row_index = static_cast<int>(blockIdx.x);
  if (row_index >= M) return;
  const uint16_t* row = static_cast<const uint16_t*>(x) + static_cast<int64_t>(row_index) * ldx;
  int8_t* q_row = q + static_cast<int64_t>(row_index) * ldq;
  const bool is_static = flags & kFlagStaticScale;
  const bool asymmetric = flags & kFlagAsymmetric;
  const bool vectorized = (reinterpret_cast<uintptr_t>(row) % 16 == 0) &&
                          (reinterpret_cast<uintptr_t>(q_row) % kQuantElementsPerVector == 0);
  const int vector_end = vectorized ? K - K % kQuantElementsPerVector : 0;

  Quantizer quantize{0.f, 0, false, asymmetric};
  if (is_static) {
    quantize.divide = !asymmetric;
    quantize.factor = asymmetric ? 1.f / scale[0] : scale[0];
    if (asymmetric) quantize.zero_point = azp[0];
  } else {
    Range range = asymmetric ? Range{kFloatMax, -kFloatMax} : Range{0.f, 0.f};
    const auto observe = [&](int, float v) { range.add(asymmetric ? v : __builtin_fabsf(v)); };
    for_each_in_row<In>(
        row, K, vector_end,
        [&](int i, const float(&v)[kQuantElementsPerVector]) {
#pragma unroll
          for (int e = 0; e < kQuantElementsPerVector; ++e) observe(i + e, v[e]);
        },
        observe);
    range = workgroup_range(range);
    float row_scale;
    if (asymmetric) {
      row_scale = (range.hi - range.lo) / 255.f;
      quantize.zero_point = saturate_to_int32(__builtin_rintf(-128.f - range.lo / row_scale));
      quantize.factor = 1.f / row_scale;
    } else {
      row_scale = range.hi / 127.f;
      quantize.factor = range.hi == 0.f ? 0.f : 127.f / range.hi;
    }
    if (threadIdx.x == 0) {
      scale[row_index] = row_scale;
      if (asymmetric) azp[row_index] = quantize.zero_point;
    }
  }

  // Pass 2 re-reads the row (from cache) and stores 8 int8 per 16-byte load.
  for_each_in_row<In>(
      row, K, vector_end,
      [&](int i, const float(&v)[kQuantElementsPerVector]) {
        uint32_t packed[2] = {0, 0};
#pragma unroll
        for (int e = 0; e < kQuantElementsPerVector; ++e) {
          packed[e / 4] |= static_cast<uint32_t>(static_cast<uint8_t>(quantize(v[e]))) << (8 * (e % 4));
        }
        *reinterpret_cast<v2u32*>(q_row + i) = v2u32{packed[0], packed[1]};
      },
      [&](int i, float v) { q_row[i] = quantize(v); });
  for (int i = K + static_cast<int>(threadIdx.x); i < ldq; i += static_cast<int>(blockDim.x)) {
    q_row[i] = 0;
  }
}

}  // namespace rdna_w8a8

#define W8A8_DEFINE_QUANT_KERNEL(name, input)                                                \
  extern "C" __global__ void __launch_bounds__(256) name(                                   \
      const void* __restrict__ x, int8_t* __restrict__ q, float* __restrict__ scale,        \
      int32_t* __restrict__ azp, int32_t M, int32_t K, int32_t ldx, int32_t ldq,            \
      uint32_t flags) {                                                                      \
    ::rdna_w8a8::quantize_row<input>(x, q, scale, azp, M, K, ldx, ldq, flags);              \
  }                                                                                          \
  RDNA_EXPORT_KERNEL(name)

W8A8_DEFINE_QUANT_KERNEL(w8a8_quant_i8_f16, ::rdna_w8a8::Fp16Input)
W8A8_DEFINE_QUANT_KERNEL(w8a8_quant_i8_bf16, ::rdna_w8a8::Bf16Input)
