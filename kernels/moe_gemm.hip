// W8A8 mixture-of-experts grouped GEMM for gfx11: the two expert GEMMs of a MoE layer
// (gate_up = x w13[e]^T, down = act w2[e]^T) over the (token, expert) slots of every expert in
// one launch each. Entry points `w8a8_i8_moe_{f16,bf16}_gemm_<tag>` (int8, Int8Math: exact
// int32 sums) and `w8a8_f8_moe_{f16,bf16}_gemm_<tag>` (fp8 e4m3fn, Fp8Math: widened exactly to
// f16 in registers as fp8_gemm.hip's, fp32 sums) per row of gemm_configs.def and activation
// dtype (the output dtype); one kernel body, the operand policy a template parameter; the main
// loops are common/gemm.h's:
//   stream_weights rows (decode, few tokens per expert): one 16-row tile of an expert's slots,
//     that expert's weights streamed to registers, K split across waves;
//   lds_double_buffer rows (prefill): the A tile gathered row by row into LDS, B = w[e] tiles.
// The host (vllm_rdna_w8a8/moe/hip_backend.py) sorts the slots by expert with torch ops and pads
// each expert's run to a multiple of BLOCK_M, without reading anything back:
//   sorted_slots [blocks * BLOCK_M]: the slot (token * top_k + j) of each padded row, -1 for
//     padding; block_experts [blocks]: the expert of each BLOCK_M row block, -1 for the blocks
//     past the last expert's rows (the grid is an upper bound; they exit at once).
// Row r of a block reads A row sorted_slots[r] / slots_per_a_row (top_k for gate_up: every
// slot of a token shares its quantized x row; 1 for down: one act row per slot) and writes
// output row sorted_slots[r]: c has one row per slot, in slot order, for the host's top-k
// combine. The epilogue is the dense GEMMs' (16-byte row-chunk stores where c is 16-byte
// aligned and ldc % 8 == 0, element stores elsewhere): a_scale [A rows] per token (flag) or
// [1], b_scale [E, N] per channel (flag) or [E, 1], no zero point, no bias:
//   c[slot][n] = a_scale[a_row] * (b_scale[e][n] * float(sum_k a[a_row][k] * b[e][n][k])).
// (fp8: a_scale [1] is the static per-tensor scale of the GEMM stage.)
// Arguments (in order): a [A rows, lda] int8 / e4m3fn bytes; b [E, N, ldb] the same, experts
// contiguous; c [slots, ldc] fp16/bf16; a_scale; b_scale; sorted_slots; block_experts; int32 blocks,
// slots, slots_per_a_row, N, K, lda, ldb, ldc; uint32 flags (kFlagPerTokenAScale,
// kFlagPerChannelBScale). Launch: grid (blocks * ceil(N / BLOCK_N), 1, 1), block
// (32 * WAVES_M * WAVES_N * WAVES_K, 1, 1); K, lda, ldb multiples of 16, a and b 16-byte aligned.
//
// Floors on the RX 7900 XTX (gfx1100), arithmetic from paper peaks, not measurements
// (96 CUs x 512 int8 ops/clk x 2.5 GHz = 122.9 Tops; DRAM 960 GB/s). Qwen3-30B-A3B layer,
// E = 128, top_k = 8, H = 2048, I = 768 (gate_up N = 1536, K = 2048; down N = 2048, K = 768):
//   decode, one token: 8 experts' weights, 8 * (1536 * 2048 + 2048 * 768) = 37.7 MB
//     -> memory floor 39 us per layer; WMMA work with M padded to 16 per expert: 1.2 Gop -> 10 us.
//   prefill, 4096 tokens (256 slots per expert on average): 2 * 32768 * (1536 * 2048 +
//     2048 * 768) = 309 Gop -> compute floor 2.5 ms; all 128 experts' weights 604 MB
//     -> memory floor 0.63 ms. Compute binds.
#include "common/gemm.h"

namespace rdna_w8a8 {

// The routing of one grouped GEMM launch (see the top of this file).
struct MoeRouting {
  const int32_t* sorted_slots;   // [blocks * BLOCK_M]: slot of each padded row, -1 padding
  const int32_t* block_experts;  // [blocks]: expert of each row block, -1 past the last
  int32_t blocks;                // row blocks of the launch (an upper bound)
  int32_t slots;                 // rows of c
  int32_t slots_per_a_row;       // A row of a slot: slot / slots_per_a_row

  __device__ __forceinline__ int a_row(int32_t slot) const { return slot / slots_per_a_row; }
  // A row 0 for padding rows: read like any row, their outputs never stored.
  __device__ __forceinline__ int a_row_or_zero(int32_t slot) const { return slot < 0 ? 0 : a_row(slot); }
};

// The dense epilogue on gathered rows: padded row m of the tile stores to row sorted_slots[m]
// of c with the scale of its A row; padding rows store nothing. Each slot's row is contiguous
// in N, so store_fragments writes 16-byte row chunks as for the dense GEMMs: only the row
// address differs (row_output).
struct MoeEpilogue : Epilogue {  // c [slots, ldc], a_scale by A row, b_scale of the tile's expert
  MoeRouting routing;

  __device__ __forceinline__ RowTerms row(int m) const {
    const int32_t slot = routing.sorted_slots[m];
    return slot < 0 ? RowTerms{1.f, 1} : Epilogue::row(routing.a_row(slot));
  }
  __device__ __forceinline__ bool row_stored(int m) const { return routing.sorted_slots[m] >= 0; }
  // The slot's row of c, where row_stored(m).
  __device__ __forceinline__ uint16_t* row_output(int m) const {
    return Epilogue::row_output(routing.sorted_slots[m]);
  }
};

// The prefill A tile gathered through sorted_slots: TileChunks' chunks of rows m0.., each from
// its slot's A row, k past K zeros. A padding row reads A row 0 instead (a valid row, and a
// global address: a null pointer would turn the loads into flat ones); its output row is never
// stored, so the loop tests no row.
template <int Rows, int BlockK, int Threads>
struct GatheredTileLoader : TileChunks<Rows, BlockK, Threads> {
  using Chunks = TileChunks<Rows, BlockK, Threads>;
  const int8_t* chunk[Chunks::kPasses];  // this thread's chunk of each pass at k = 0

  __device__ __forceinline__ GatheredTileLoader(const int8_t* a, int lda, const MoeRouting& routing,
                                                int m0, int tid)
      : Chunks(tid) {
#pragma unroll
    for (int pass = 0; pass < Chunks::kPasses; ++pass) {
      const int32_t slot = routing.sorted_slots[m0 + this->row + pass * Chunks::kRowsPerPass];
      chunk[pass] = a + static_cast<int64_t>(routing.a_row_or_zero(slot)) * lda + this->col;
    }
  }

  __device__ __forceinline__ void load(int k0, int K) {
    const bool k_inside = k0 + this->col < K;
#pragma unroll
    for (int pass = 0; pass < Chunks::kPasses; ++pass) {
      this->staged[pass] = k_inside ? load_frag_i8(chunk[pass] + k0) : zero_frag_i8();
    }
  }
};

template <class Cfg, class Math>
__device__ __forceinline__ void moe_gemm_kernel_body(const int8_t* a, const int8_t* b,
                                                     const MoeRouting& routing,
                                                     const Epilogue& all_experts_out, int N,
                                                     int K, int lda, int ldb) {
  const int tiles_n = ceil_div(N, Cfg::kBlockN);
  const int tile = static_cast<int>(blockIdx.x);
  if (tile >= routing.blocks * tiles_n) return;  // whole workgroup: an oversized grid is harmless
  const TileIndex t = grouped_tile(tile, routing.blocks, tiles_n);
  const int32_t expert = routing.block_experts[t.m];
  if (expert < 0) return;  // past the last expert's rows: the grid's surplus
  const int m0 = t.m * Cfg::kBlockM;
  const int n0 = t.n * Cfg::kBlockN;
  const int8_t* expert_b = b + static_cast<int64_t>(expert) * N * ldb;
  // M is unused by the main loops here: the A rows come through the routing.
  const GemmOperands p{a, expert_b, 0, N, K, lda, ldb};
  Epilogue expert_out = all_experts_out;
  expert_out.b_scale += static_cast<int64_t>(expert) * ((expert_out.flags & kFlagPerChannelBScale) ? N : 1);
  const MoeEpilogue out{expert_out, routing};
  if constexpr (Cfg::kStreamsWeights) {
    const int32_t slot = routing.sorted_slots[m0 + operand_index(lane_id())];
    // A padding row (slot < 0) reads A row 0: its output is never stored (MoeEpilogue).
    const Int8Rows a_rows(a + static_cast<int64_t>(routing.a_row_or_zero(slot)) * lda, K);
    gemm_decode_tile<Cfg, Math>(p, a_rows, out, m0, n0, workgroup_lds<DecodeLds<Cfg, Math>>());
  } else {
    const GatheredTileLoader<Cfg::kBlockM, Cfg::kBlockK, Cfg::kThreads> a_loader(
        a, lda, routing, m0, static_cast<int>(threadIdx.x));
    gemm_prefill_tile<Cfg, Math>(p, a_loader, out, m0, n0);
  }
}

}  // namespace rdna_w8a8

// One grouped GEMM entry point `name` for tile configuration (BM, BN, BK, WM, WN, WK, LOOP),
// operand policy `math` and output flags `output_flags` (kFlagOutputBf16 or 0).
#define W8A8_DEFINE_MOE_GEMM_KERNEL(name, math, output_flags, BM, BN, BK, WM, WN, WK, LOOP)    \
  extern "C" __global__ void __launch_bounds__(::rdna_w8a8::kWaveSize * (WM) * (WN) * (WK))    \
      name(const int8_t* __restrict__ a, const int8_t* __restrict__ b, void* __restrict__ c,   \
           const float* __restrict__ a_scale, const float* __restrict__ b_scale,               \
           const int32_t* __restrict__ sorted_slots, const int32_t* __restrict__ block_experts, \
           int32_t blocks, int32_t slots, int32_t slots_per_a_row, int32_t N, int32_t K,       \
           int32_t lda, int32_t ldb, int32_t ldc, uint32_t flags) {                            \
    using Config = ::rdna_w8a8::GemmConfig<BM, BN, BK, WM, WN, WK, ::rdna_w8a8::MainLoop::LOOP>; \
    const ::rdna_w8a8::Epilogue out{c,  a_scale, b_scale, nullptr, nullptr, nullptr, slots, N, \
                                    ldc, (flags) | (output_flags)};                             \
    ::rdna_w8a8::moe_gemm_kernel_body<Config, math>(                                           \
        a, b, ::rdna_w8a8::MoeRouting{sorted_slots, block_experts, blocks, slots, slots_per_a_row}, \
        out, N, K, lda, ldb);                                                                  \
  }                                                                                            \
  RDNA_EXPORT_KERNEL(name)

#define W8A8_GEMM_CONFIG(tag, BM, BN, BK, WM, WN, WK, LOOP)                                     \
  W8A8_DEFINE_MOE_GEMM_KERNEL(w8a8_i8_moe_f16_gemm_##tag, ::rdna_w8a8::Int8Math, 0u, BM, BN, BK, \
                              WM, WN, WK, LOOP)                                                 \
  W8A8_DEFINE_MOE_GEMM_KERNEL(w8a8_i8_moe_bf16_gemm_##tag, ::rdna_w8a8::Int8Math,               \
                              ::rdna_w8a8::kFlagOutputBf16, BM, BN, BK, WM, WN, WK, LOOP)     \
  W8A8_DEFINE_MOE_GEMM_KERNEL(w8a8_f8_moe_f16_gemm_##tag, ::rdna_w8a8::Fp8Math, 0u, BM, BN, BK,  \
                              WM, WN, WK, LOOP)                                                 \
  W8A8_DEFINE_MOE_GEMM_KERNEL(w8a8_f8_moe_bf16_gemm_##tag, ::rdna_w8a8::Fp8Math,                \
                              ::rdna_w8a8::kFlagOutputBf16, BM, BN, BK, WM, WN, WK, LOOP)
#include "gemm_configs.def"
#undef W8A8_GEMM_CONFIG
