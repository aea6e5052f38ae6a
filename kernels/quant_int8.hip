// Per-token int8 quantization of fp16/bf16 activations for the W8A8 GEMMs:
// `w8a8_quant_i8_f16` / `w8a8_quant_i8_bf16`, one workgroup per row, grid = (M, 1, 1),
// block = (kQuantMaxThreads, 1, 1) (kernels/kernel_abi.def; any multiple of 32 up to it works).
// Arguments: docs/architecture.md.
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
// The formulas live in common/quantize.h, shared with the fused decode GEMMs.
//
// Floors on the RX 7900 XTX (gfx1100), arithmetic from paper peaks, not measurements:
// M = 4096 tokens x K = 4096 fp16: read 2 + write 1 byte per element (the second read of an
// 8 KiB row hits cache) = 50.3 MB -> memory floor 52 us at 960 GB/s; ~10 VALU ops per element
// = 168 M lane-ops / (96 CUs x 64 lanes x 2.5 GHz = 15.4 T lane-ops/s) -> compute floor 11 us.
// Memory binds.
//
// `w8a8_silu_mul_quant_i8_f16` / `_bf16` (MoE, between the two grouped GEMMs): the same
// dynamic symmetric quantization of act = silu(gate) * up, computed from a gate_up row [2I]
// on the fly (SiluMulRow) in both passes instead of read from an act tensor, so act is never
// written: one launch for what was four torch ops and this kernel. Same launch geometry.
// Floors (gfx1100, paper peaks, not measurements), Qwen3-30B-A3B at 4096 tokens x top-8 =
// 32768 rows of I = 768: read 4 + write 1 byte per act element = 126 MB -> memory floor 131 us;
// the old chain moved 41 bytes per element (docs/performance.md). Compute, estimated at ~70
// VALU ops per element (exp, an IEEE division, rounding and quantization, act computed in both
// passes): 1.76 G lane-ops -> ~115 us. About even: computing act twice rather than keeping it
// (LDS) puts the compute estimate near the memory floor.
#include "common/quantize.h"
#include "common/silu_mul.h"

namespace rdna_w8a8 {

struct QuantLds {
  Range per_wave[kQuantMaxThreads / kWaveSize];
};

// The same Range in every thread of the workgroup (max and min do not depend on the order).
__device__ __forceinline__ Range workgroup_range(Range r) {
  r = wave_range(r);
  auto& lds = workgroup_lds<QuantLds>();
  if (lane_id() == 0) lds.per_wave[wave_id()] = r;
  __syncthreads();
  Range total = lds.per_wave[0];
  const int waves = static_cast<int>(blockDim.x) / kWaveSize;
  for (int w = 1; w < waves; ++w) total.merge(lds.per_wave[w]);
  return total;
}

// One row of K values (`values`: a StoredRow, or SiluMulRow's values computed on the fly) in
// quantization mode `Mode` (chosen once per launch by quantize_row), read as vectors when
// `vectorized`: dynamic modes scan the row, then a second pass re-reads it (from cache) and
// stores 8 int8 per vector.
template <class Mode, class Row>
__device__ __forceinline__ void quantize_row_in_mode(const Row& values, bool vectorized,
                                                     int8_t* q_row, float* scale, int32_t* azp,
                                                     int row_index, int32_t K, int32_t ldq) {
  const int vector_end = vectorized ? K - K % kQuantElementsPerVector : 0;
  const int tid = static_cast<int>(threadIdx.x);
  const int threads = static_cast<int>(blockDim.x);

  Quantizer<Mode> quantize;
  if constexpr (Mode::kStatic) {
    quantize = static_quantizer<Mode>(scale[0], Mode::kAsymmetric ? azp[0] : 0);
  } else {
    const Range range =
        workgroup_range(scan_row(values, K, vectorized, Mode::kAsymmetric, tid, threads));
    float row_scale;
    quantize = dynamic_quantizer<Mode>(range, row_scale);
    if (threadIdx.x == 0) {
      scale[row_index] = row_scale;
      if (Mode::kAsymmetric) azp[row_index] = quantize.zero_point;
    }
  }

  for_each_in_row(
      values, K, vector_end, tid, threads,
      [&](int i, const float(&v)[kQuantElementsPerVector]) {
        *reinterpret_cast<v2u32*>(q_row + i) = quantize_vector(v, quantize);
      },
      [&](int i, float v) { q_row[i] = quantize(v); });
  for (int i = K + tid; i < ldq; i += threads) q_row[i] = 0;
}

// Vectors of 8 values: 16-byte loads of `row` and 8-byte stores to `q_row`.
__device__ __forceinline__ bool vectors_aligned(const uint16_t* row, const int8_t* q_row) {
  return reinterpret_cast<uintptr_t>(row) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(q_row) % kQuantElementsPerVector == 0;
}

template <class In>
__device__ __forceinline__ void quantize_row(const void* x, int8_t* q, float* scale,
                                             int32_t* azp, int32_t M, int32_t K, int32_t ldx,
                                             int32_t ldq, uint32_t flags) {
  const int row_index = static_cast<int>(blockIdx.x);
  if (row_index >= M) return;
  const uint16_t* row = static_cast<const uint16_t*>(x) + static_cast<int64_t>(row_index) * ldx;
  int8_t* q_row = q + static_cast<int64_t>(row_index) * ldq;
  with_quant_mode(flags & kFlagStaticScale, flags & kFlagAsymmetric, [&](auto mode) {
    quantize_row_in_mode<decltype(mode)>(StoredRow<In>{row}, vectors_aligned(row, q_row), q_row,
                                         scale, azp, row_index, K, ldq);
  });
}

// Row blockIdx.x of act = silu(gate) * up, quantized dynamic symmetric per row.
template <class In>
__device__ __forceinline__ void silu_mul_quantize_row(const void* gate_up, int8_t* q, float* scale,
                                                      int32_t rows, int32_t I,
                                                      int32_t ld_gate_up, int32_t ldq) {
  const int row_index = static_cast<int>(blockIdx.x);
  if (row_index >= rows) return;
  const uint16_t* gate =
      static_cast<const uint16_t*>(gate_up) + static_cast<int64_t>(row_index) * ld_gate_up;
  int8_t* q_row = q + static_cast<int64_t>(row_index) * ldq;
  // The up half starts I values after the gate half: vectors need I % 8 == 0 too.
  const bool vectorized = vectors_aligned(gate, q_row) && I % kQuantElementsPerVector == 0;
  quantize_row_in_mode<QuantMode<false, false>>(SiluMulRow<In>{gate, gate + I}, vectorized, q_row,
                                               scale, nullptr, row_index, I, ldq);
}

}  // namespace rdna_w8a8

#define W8A8_DEFINE_QUANT_KERNEL(name, input)                                                \
  extern "C" __global__ void __launch_bounds__(::rdna_w8a8::kQuantMaxThreads) name(        \
      const void* __restrict__ x, int8_t* __restrict__ q, float* __restrict__ scale,        \
      int32_t* __restrict__ azp, int32_t M, int32_t K, int32_t ldx, int32_t ldq,            \
      uint32_t flags) {                                                                      \
    ::rdna_w8a8::quantize_row<input>(x, q, scale, azp, M, K, ldx, ldq, flags);              \
  }                                                                                          \
  RDNA_EXPORT_KERNEL(name)

W8A8_DEFINE_QUANT_KERNEL(w8a8_quant_i8_f16, ::rdna_w8a8::Fp16Input)
W8A8_DEFINE_QUANT_KERNEL(w8a8_quant_i8_bf16, ::rdna_w8a8::Bf16Input)

#define W8A8_DEFINE_SILU_MUL_QUANT_KERNEL(name, input)                                       \
  extern "C" __global__ void __launch_bounds__(::rdna_w8a8::kQuantMaxThreads) name(        \
      const void* __restrict__ gate_up, int8_t* __restrict__ q, float* __restrict__ scale,  \
      int32_t rows, int32_t I, int32_t ld_gate_up, int32_t ldq) {                           \
    ::rdna_w8a8::silu_mul_quantize_row<input>(gate_up, q, scale, rows, I, ld_gate_up, ldq); \
  }                                                                                          \
  RDNA_EXPORT_KERNEL(name)

W8A8_DEFINE_SILU_MUL_QUANT_KERNEL(w8a8_silu_mul_quant_i8_f16, ::rdna_w8a8::Fp16Input)
W8A8_DEFINE_SILU_MUL_QUANT_KERNEL(w8a8_silu_mul_quant_i8_bf16, ::rdna_w8a8::Bf16Input)
