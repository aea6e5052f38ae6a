// The fused decode GEMMs `w8a8_i8q_{f16,bf16}_gemm_<tag>`: a stream_weights (decode) tile
// quantizes its own fp16/bf16 activation rows to int8 and feeds them to the decode main loop
// (common/gemm.h), so an int8 linear layer at M <= 16 is one launch instead of
// w8a8_quant_i8_* then w8a8_i8_gemm_*. Same int8 values (common/quantize.h's formulas, per
// element), same int32 sums, same epilogue: the same output bits as the two launches.
//   prologue (dynamic scales): every thread scans its share of each of the tile's rows,
//     waves reduce with shuffles, the per-wave ranges meet in LDS; each lane then holds the
//     quantizer of its A row, and the epilogue's per-row scale and zero point sit in LDS;
//   main loop: lanes 0-15 quantize k 0-7 of their row, lanes 16-31 k 8-15 (one 16-byte load
//     each), and the halves are swapped across the two half-waves, which builds the
//     replicated int8 operand (wmma.h) without quantizing any element twice in a wave.
// Requirements (checked in Python, else the op makes the two launches): x 16-byte aligned,
// ldx % 8 == 0 and K % 8 == 0, so every activation load is 128 bits wide; b as the GEMMs'.
// Prefill keeps the separate quantization kernel: its int8 A tile is reused by many N tiles.
#pragma once

#include "common/gemm.h"
#include "common/quantize.h"

namespace rdna_w8a8 {

struct FusedQuantArgs {
  const void* x;          // [M, K] fp16/bf16, row stride ldx
  const float* x_scale;   // static: [1]; dynamic: unused
  const int32_t* x_azp;   // static asymmetric: [1]; else unused
  int32_t ldx;
  uint32_t flags;
};

template <class Cfg>
struct alignas(16) FusedDecodeLds {
  DecodeLds<Cfg, Int8Math> reduction;
  Range per_wave[Cfg::kWaves][kWmmaDim];  // each wave's range of each tile row
  RowTerms rows[kWmmaDim];                // the epilogue's scale and zero point per tile row
};

// The A operand quantized on the fly from this lane's fp16/bf16 row, in mode `Mode`. Rows
// past M re-read row m0 (always inside): their output rows are never stored, so the loop
// needs no row test.
template <class In, class Mode>
struct QuantizingRows {
  using Raw = v4u32;  // 8 fp16/bf16 values
  const uint16_t* row;
  Quantizer<Mode> quantize;
  int K;
  int half_offset;  // this lane quantizes k + half_offset .. + 7 of each 16-deep step

  // One 16-byte load: rows are 16-byte aligned and K % 8 == 0 (checked before launch), so a
  // lane's 8 values lie wholly inside the row or wholly past K.
  template <bool Ragged>
  __device__ __forceinline__ Raw load(int k) const {
    const int first = k + half_offset;
    return (!Ragged || first < K) ? *reinterpret_cast<const Raw*>(row + first) : Raw{0, 0, 0, 0};
  }

  // Columns >= K are 0, as the quantization kernel's padding is (a zero point would not map
  // the zeros loaded there to 0: only the ragged last slice tests k).
  template <bool Ragged>
  __device__ __forceinline__ FragI8 to_frag(Raw raw, int k) const {
    float v[kQuantElementsPerVector];
    unpack_vector<In>(raw, v);
    v2u32 mine = quantize_vector(v, quantize);
    if constexpr (Ragged) {
      if (k + half_offset >= K) mine = v2u32{0, 0};
    }
    const uint32_t other0 = __shfl_xor(mine[0], kWmmaDim);
    const uint32_t other1 = __shfl_xor(mine[1], kWmmaDim);
    const bool low_half = half_offset == 0;
    return FragI8{static_cast<int>(low_half ? mine[0] : other0),
                  static_cast<int>(low_half ? mine[1] : other1),
                  static_cast<int>(low_half ? other0 : mine[0]),
                  static_cast<int>(low_half ? other1 : mine[1])};
  }
};

// The GEMM epilogue with the row terms of the tile's own quantization (LDS) instead of a_scale
// and azp from global memory.
struct TileRowsEpilogue : Epilogue {
  const RowTerms* tile_rows;
  int first_row;
  __device__ __forceinline__ RowTerms row(int m) const { return tile_rows[m - first_row]; }
};

// Quantization parameters of the tile's rows m0.. in mode `Mode` (every thread takes part:
// barriers inside). Returns this lane's A operand source; fills lds.rows for the epilogue.
template <class Cfg, class In, class Mode>
__device__ __forceinline__ QuantizingRows<In, Mode> quantize_tile_rows(const FusedQuantArgs& args,
                                                                       int M, int K, int m0,
                                                                       FusedDecodeLds<Cfg>& lds) {
  const int lane = lane_id();
  const int wave = wave_id();
  const int rows_valid = M - m0 < kWmmaDim ? M - m0 : kWmmaDim;
  const uint16_t* x = static_cast<const uint16_t*>(args.x);
  const auto row_ptr = [&](int r) { return x + static_cast<int64_t>(m0 + r) * args.ldx; };

  const int row = operand_index(lane);
  const bool inside = row < rows_valid;
  QuantizingRows<In, Mode> rows{row_ptr(inside ? row : 0), Quantizer<Mode>{0.f, 0}, K,
                                (lane / kWmmaDim) * kQuantElementsPerVector};
  RowTerms terms{1.f, 1};
  if constexpr (Mode::kStatic) {
    rows.quantize = static_quantizer<Mode>(args.x_scale[0], Mode::kAsymmetric ? args.x_azp[0] : 0);
    terms.a_scale = args.x_scale[0];  // a static zero point is folded into azp_adj
  } else {
    for (int r = 0; r < rows_valid; ++r) {  // uniform: every lane reaches the shuffles
      const Range part = scan_row(StoredRow<In>{row_ptr(r)}, K, true, Mode::kAsymmetric,
                                  static_cast<int>(threadIdx.x), Cfg::kThreads);
      const Range range = wave_range(part);
      if (lane == 0) lds.per_wave[wave][r] = range;
    }
    __syncthreads();
    if (inside) {
      Range total = lds.per_wave[0][row];
#pragma unroll
      for (int w = 1; w < Cfg::kWaves; ++w) total.merge(lds.per_wave[w][row]);
      rows.quantize = dynamic_quantizer<Mode>(total, terms.a_scale);
      if (Mode::kAsymmetric) terms.azp = rows.quantize.zero_point;
    }
  }
  // Read by the epilogue, after the decode tile's barrier.
  if (wave == 0 && lane < kWmmaDim) lds.rows[row] = terms;
  return rows;
}

// The fused decode tile, its quantization mode chosen once from `flags` (a uniform branch
// into one compiled body per mode).
template <class Cfg, class In>
__device__ __forceinline__ void fused_decode_kernel_body(const FusedQuantArgs& args,
                                                         const GemmOperands& p,
                                                         const Epilogue& epilogue) {
  static_assert(Cfg::kStreamsWeights, "fused activation quantization exists for decode tiles only");
  static_assert(sizeof(FusedDecodeLds<Cfg>) <= kMaxLdsBytesPerWorkgroup,
                "LDS use of the fused decode tile exceeds the 64 KiB a gfx11 workgroup may allocate");
  const int tiles_m = ceil_div(p.M, Cfg::kBlockM);
  const int tiles_n = ceil_div(p.N, Cfg::kBlockN);
  const int tile = static_cast<int>(blockIdx.x);
  if (tile >= tiles_m * tiles_n) return;  // whole workgroup: an oversized grid is harmless
  const TileIndex t = grouped_tile(tile, tiles_m, tiles_n);
  const int m0 = t.m * Cfg::kBlockM;
  auto& lds = workgroup_lds<FusedDecodeLds<Cfg>>();
  const TileRowsEpilogue out{epilogue, lds.rows, m0};
  with_quant_mode(args.flags & kFlagFusedStaticScale, args.flags & kFlagFusedAsymmetric,
                  [&](auto mode) {
                    using Mode = decltype(mode);
                    const QuantizingRows<In, Mode> a_rows =
                        quantize_tile_rows<Cfg, In, Mode>(args, p.M, p.K, m0, lds);
                    gemm_decode_tile<Cfg, Int8Math>(p, a_rows, out, m0, t.n * Cfg::kBlockN,
                                                    lds.reduction);
                  });
}

}  // namespace rdna_w8a8

// Defines one fused decode entry point `name` (arguments: docs/architecture.md, "Fused decode
// GEMM") for a stream_weights tile configuration (BM == 16, BN, BK, WM, WN, WK) and input
// type `input`.
#define W8A8_DEFINE_FUSED_DECODE_KERNEL(name, input, BM, BN, BK, WM, WN, WK)                 \
  extern "C" __global__ void __launch_bounds__(::rdna_w8a8::kWaveSize * (WM) * (WN) * (WK))    \
      name(                                                                                   \
      const void* __restrict__ x, const int8_t* __restrict__ b, void* __restrict__ c,         \
      const float* __restrict__ x_scale, const int32_t* __restrict__ x_azp,                   \
      const float* __restrict__ b_scale, const int32_t* __restrict__ azp_adj,                 \
      const void* __restrict__ bias, int32_t M, int32_t N, int32_t K, int32_t ldx,            \
      int32_t ldb, int32_t ldc, uint32_t flags) {                                             \
    using Config =                                                                            \
        ::rdna_w8a8::GemmConfig<BM, BN, BK, WM, WN, WK, ::rdna_w8a8::MainLoop::stream_weights>; \
    const ::rdna_w8a8::Epilogue out{c, x_scale, b_scale, nullptr, azp_adj, bias, M, N, ldc, flags}; \
    ::rdna_w8a8::fused_decode_kernel_body<Config, input>(                                     \
        ::rdna_w8a8::FusedQuantArgs{x, x_scale, x_azp, ldx, flags},                            \
        ::rdna_w8a8::GemmOperands{nullptr, b, M, N, K, 0, ldb}, out);                         \
  }                                                                                           \
  RDNA_EXPORT_KERNEL(name)
