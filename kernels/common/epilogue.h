// The fused GEMM epilogue: zero-point correction, scales, bias, fp32 -> fp16/bf16, and the
// output loop of the main loops (store_fragments: 16-byte row-chunk stores where the rows
// allow, one masked store per element elsewhere). Formula and order follow vLLM's CUTLASS scaled-mm
// epilogues (ScaledEpilogueBias / ...BiasAzp / ...BiasAzpToken):
//   out[m][n] = a_scale[m] * (b_scale[n] * float(acc - azp[m] * azp_adj[n])) + bias[n]
// with the last step one fused multiply-add. The zero-point term is formed exactly in 64 bits
// (upstream wraps it in int32): the same result wherever upstream's int32 does not wrap, and
// the right one where it would (a dynamic zero point reaches +-2^31 on rows of narrow range).
// The row and column factors are loaded once per row / column, not per element.
#pragma once

#include "common/hip_compat.h"
#include "common/wmma.h"

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

  // The fp16/bf16 bits of one finished element.
  template <class AccElem>
  __device__ __forceinline__ uint16_t convert(AccElem acc, RowTerms r, ColumnTerms col) const {
    const float value = finish(acc, r, col);
    return (flags & kFlagOutputBf16) ? fp32_to_bf16_bits(value) : fp32_to_fp16_bits(value);
  }

  // Whether tile row m has an output row (padding rows m >= M have none).
  __device__ __forceinline__ bool row_stored(int m) const { return m < M; }

  // Output row m, where row_stored(m). Not null elsewhere: a pointer that may be null is a
  // generic one, and the stores through it become flat stores.
  __device__ __forceinline__ uint16_t* row_output(int m) const {
    return static_cast<uint16_t*>(c) + static_cast<int64_t>(m) * ldc;
  }

  // Every 8-column chunk of every row starts 16-byte aligned (c aligned, ldc % 8 == 0).
  __device__ __forceinline__ bool chunks_aligned() const {
    return reinterpret_cast<uintptr_t>(c) % 16 == 0 && ldc % kChunkValues == 0;
  }
};

// Stores one row chunk (wmma.h: 8 consecutive columns of a row, 16-bit values packed two per
// word) at row m, columns n..: one 16-byte store when the chunk is aligned and wholly inside
// the N columns, else one store per column inside; nothing for a padding row.
template <class Out>
__device__ __forceinline__ void store_row_chunk(const Out& out, const uint32_t (&words)[4], int m,
                                                int n, bool aligned) {
  typedef uint32_t v4u32_chunk __attribute__((ext_vector_type(4)));
  if (!out.row_stored(m)) return;
  uint16_t* row = out.row_output(m);
  if (aligned && n + kChunkValues <= out.N) {
    *reinterpret_cast<v4u32_chunk*>(row + n) = v4u32_chunk{words[0], words[1], words[2], words[3]};
    return;
  }
  for (int e = 0; e < kChunkValues && n + e < out.N; ++e) {
    row[n + e] = static_cast<uint16_t>(words[e / 2] >> (16 * (e % 2)));
  }
}

// The output loop of every main loop: finishes and stores a wave's WMMA accumulator tiles,
// tile (i, j) at rows row0 + 16 i .., columns col0 + 16 j .. (wmma.h's positions). Column
// terms are loaded once per tile column, row terms once per tile row. An output with 16-bit
// rows in memory (row_stored / row_output / convert / chunks_aligned: Epilogue and what derives from it)
// is regrouped into row chunks and written 16 bytes per lane; row_output(m) maps a tile row
// to its row in memory (Epilogue: row m of c; MoE: the row of the slot the tile row holds),
// so rows need not be adjacent, only each row contiguous in N. Any other output (the raw
// int32 test probe) gets one store(m, n, ...) per element.
template <class Out, class Acc, int FragsM, int FragsN>
__device__ __forceinline__ void store_fragments(const Out& out, const Acc (&acc)[FragsM][FragsN],
                                                int row0, int col0) {
  constexpr bool kRowChunks = requires(const Out& o) { o.row_stored(0); o.row_output(0); o.chunks_aligned(); };
  const int lane = lane_id();
  typename Out::Column columns[FragsN];
#pragma unroll
  for (int j = 0; j < FragsN; ++j) columns[j] = out.column(col0 + j * kWmmaDim + acc_col(lane));
  bool aligned = false;
  if constexpr (kRowChunks) aligned = out.chunks_aligned();
#pragma unroll
  for (int i = 0; i < FragsM; ++i) {
    const int tile_row = row0 + i * kWmmaDim;
    typename Out::Row rows[kAccValues];
#pragma unroll
    for (int v = 0; v < kAccValues; ++v) rows[v] = out.row(tile_row + acc_row(v, lane));
#pragma unroll
    for (int j = 0; j < FragsN; ++j) {
      const int tile_col = col0 + j * kWmmaDim;
      if constexpr (kRowChunks) {
        uint32_t words[4];
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          words[w] = out.convert(acc[i][j][2 * w], rows[2 * w], columns[j]) |
                     static_cast<uint32_t>(out.convert(acc[i][j][2 * w + 1], rows[2 * w + 1], columns[j])) << 16;
        }
        acc_to_row_chunks(words, lane);
        store_row_chunk(out, words, tile_row + chunk_row(lane), tile_col + chunk_col(lane), aligned);
      } else {
#pragma unroll
        for (int v = 0; v < kAccValues; ++v) {
          out.store(tile_row + acc_row(v, lane), tile_col + acc_col(lane), acc[i][j][v], rows[v], columns[j]);
        }
      }
    }
  }
}

}  // namespace rdna_w8a8
