// The W8A8 GEMM template family shared by the int8 and fp8 kernels:
//   C[M, N] = epilogue(A[M, K] * B[N, K]^T), A and B 8-bit, K contiguous in both.
// One kernel body per tile configuration (rows of kernels/gemm_configs.def), two main loops,
// named by each row's MAIN_LOOP column (MainLoop below):
//   lds_double_buffer (prefill): A and B tiles double-buffered in LDS, every wave reads its
//     WMMA operands from there; accumulators stay in registers through the epilogue.
//   stream_weights (decode, BLOCK_M == 16): weights streamed once from global memory straight
//     into registers (no wave shares a weight row, LDS staging would only add traffic), K split
//     across the WAVES_K waves of the workgroup, partial sums reduced in LDS, then the same
//     fused epilogue.
// Configs change speed, never results: an int8 tile sums the same int32 products in any order.
// The element type enters through a `Math` policy (int8: identity operands, int32 sums;
// fp8: e4m3 widened to f16 in registers, fp32 sums), the output stage through `Out`
// (common/epilogue.h's Epilogue: scales, zero point, bias, fp16/bf16 store).
#pragma once

#include "common/epilogue.h"
#include "common/wmma.h"

namespace rdna_w8a8 {

// The workgroup limits, kLdsRowPadBytes and kMaxAccumulatorVgprs: kernels/kernel_abi.def.
// Tiles are visited in groups of 8 M tiles sweeping N together, so concurrently running
// workgroups share A rows and B rows in L2.
constexpr int kTileGroupM = 8;

// The main loop of a tile configuration: the MAIN_LOOP column of kernels/gemm_configs.def.
enum class MainLoop {
  lds_double_buffer,  // prefill: A and B tiles double-buffered in LDS
  stream_weights,     // decode: one 16-row tile, weights streamed to registers, split-K
};

template <int BlockM, int BlockN, int BlockK, int WavesM, int WavesN, int WavesK, MainLoop Loop>
struct GemmConfig {
  static constexpr int kBlockM = BlockM;  // output rows per workgroup
  static constexpr int kBlockN = BlockN;  // output columns per workgroup
  static constexpr int kBlockK = BlockK;  // K depth the workgroup consumes per loop iteration
  static constexpr int kWavesM = WavesM;  // waves along M, each owning BlockM / WavesM rows
  static constexpr int kWavesN = WavesN;  // waves along N, each owning BlockN / WavesN columns
  static constexpr int kWavesK = WavesK;  // waves splitting each BlockK slice (stream_weights only)
  static constexpr MainLoop kMainLoop = Loop;
  static constexpr int kWaves = WavesM * WavesN * WavesK;
  static constexpr int kThreads = kWaves * kWaveSize;
  static constexpr int kWaveTileM = BlockM / WavesM;
  static constexpr int kWaveTileN = BlockN / WavesN;
  static constexpr int kWaveTileK = BlockK / WavesK;
  static constexpr int kFragsM = kWaveTileM / kWmmaDim;  // WMMA tiles per wave along M
  static constexpr int kFragsN = kWaveTileN / kWmmaDim;  // WMMA tiles per wave along N
  static constexpr int kStepsK = kWaveTileK / kWmmaDim;  // WMMA steps per wave per iteration
  static constexpr bool kStreamsWeights = Loop == MainLoop::stream_weights;
  static constexpr int kLdsRowBytes = BlockK + kLdsRowPadBytes;
  static constexpr int kLdsBytes =
      kStreamsWeights ? WavesK * BlockM * BlockN * 4  // int32/fp32 partial sums per wave
                      : 2 * (BlockM + BlockN) * kLdsRowBytes;  // double-buffered A and B tiles

  static_assert(WavesM >= 1 && WavesN >= 1 && WavesK >= 1, "WAVES_M/N/K must be at least 1");
  static_assert(kThreads <= kMaxThreadsPerWorkgroup,
                "WAVES_M * WAVES_N * WAVES_K must be at most 32 (1024 threads of wave32)");
  static_assert(BlockM % (WavesM * kWmmaDim) == 0,
                "BLOCK_M must be a multiple of 16 * WAVES_M: each wave owns whole 16-row WMMA tiles");
  static_assert(BlockN % (WavesN * kWmmaDim) == 0,
                "BLOCK_N must be a multiple of 16 * WAVES_N: each wave owns whole 16-column WMMA tiles");
  static_assert(BlockK % (WavesK * kWmmaDim) == 0,
                "BLOCK_K must be a multiple of 16 * WAVES_K: each wave consumes whole 16-deep WMMA steps");
  static_assert(kFragsM * kFragsN * kAccValues <= kMaxAccumulatorVgprs,
                "a wave's tile (BLOCK_M/WAVES_M x BLOCK_N/WAVES_N) needs more than 128 accumulator "
                "VGPRs: at most 16 WMMA tiles (e.g. 64x64) per wave");
  static_assert(kLdsBytes <= kMaxLdsBytesPerWorkgroup,
                "LDS use exceeds the 64 KiB a gfx11 workgroup may allocate: shrink the tile or WAVES_K");
  static_assert(!kStreamsWeights || BlockM == kWmmaDim,
                "the stream_weights main loop computes one 16-row WMMA tile per workgroup: BLOCK_M must be 16");
  static_assert(kStreamsWeights || WavesK == 1,
                "split-K across waves (WAVES_K > 1) is implemented for the stream_weights main loop only");
};

struct GemmOperands {
  const int8_t* a;  // [M, K], row stride lda
  const int8_t* b;  // [N, K], row stride ldb
  int32_t M, N, K, lda, ldb;
};

__device__ __forceinline__ int ceil_div(int x, int y) { return (x + y - 1) / y; }

struct TileIndex {
  int m;
  int n;
};

// Grouped order: workgroup ids sweep N within a group of kTileGroupM M tiles.
__device__ __forceinline__ TileIndex grouped_tile(int tile, int tiles_m, int tiles_n) {
  const int tiles_per_group = kTileGroupM * tiles_n;
  const int first_m = (tile / tiles_per_group) * kTileGroupM;
  const int group_m = tiles_m - first_m < kTileGroupM ? tiles_m - first_m : kTileGroupM;
  const int in_group = tile % tiles_per_group;
  return TileIndex{first_m + in_group % group_m, in_group / group_m};
}

// The 16-byte chunks of a Rows x BlockK byte tile this thread moves from global memory to LDS
// (one 128-bit load and store each), the registers they pass through, and their LDS store.
// Where the rows come from is the loader's: TileLoader (consecutive rows) or a gathering one.
template <int Rows, int BlockK, int Threads>
struct TileChunks {
  static constexpr int kChunksPerRow = BlockK / kOperandBytesI8;
  static constexpr int kRowsPerPass = Threads / kChunksPerRow;
  static constexpr int kPasses = Rows / kRowsPerPass;
  static_assert(Threads % kChunksPerRow == 0 && Rows % kRowsPerPass == 0,
                "a prefill tile must split into whole 16-byte chunks per thread: "
                "threads % (BLOCK_K / 16) == 0 and BLOCK_M, BLOCK_N multiples of the rows one pass covers");

  int row;  // tile row of pass 0 (pass p: row + p * kRowsPerPass)
  int col;  // byte offset of this thread's chunk within the BlockK slice
  FragI8 staged[kPasses];

  __device__ __forceinline__ explicit TileChunks(int tid)
      : row(tid / kChunksPerRow), col((tid % kChunksPerRow) * kOperandBytesI8) {}

  template <int LdsRowBytes>
  __device__ __forceinline__ void store(int8_t (*lds_tile)[LdsRowBytes]) const {
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
      *reinterpret_cast<FragI8*>(&lds_tile[row + pass * kRowsPerPass][col]) = staged[pass];
    }
  }
};

// Copies a Rows x BlockK byte tile of consecutive matrix rows to LDS, zero-filling rows past
// the matrix edge and k past K.
template <int Rows, int BlockK, int Threads>
struct TileLoader : TileChunks<Rows, BlockK, Threads> {
  using Chunks = TileChunks<Rows, BlockK, Threads>;
  const int8_t* first_chunk;  // this thread's chunk of pass 0 at k = 0
  int64_t pass_stride;        // bytes between the rows of consecutive passes
  int rows_valid;             // rows of the tile inside the matrix

  __device__ __forceinline__ TileLoader(const int8_t* tile, int ld, int rows_in_matrix, int tid)
      : Chunks(tid), rows_valid(rows_in_matrix) {
    first_chunk = tile + static_cast<int64_t>(this->row) * ld + this->col;
    pass_stride = static_cast<int64_t>(Chunks::kRowsPerPass) * ld;
  }

  __device__ __forceinline__ void load(int k0, int K) {
    const bool k_inside = k0 + this->col < K;
#pragma unroll
    for (int pass = 0; pass < Chunks::kPasses; ++pass) {
      const bool inside = k_inside && this->row + pass * Chunks::kRowsPerPass < rows_valid;
      this->staged[pass] = inside ? load_frag_i8(first_chunk + pass * pass_stride + k0) : zero_frag_i8();
    }
  }
};

template <class Cfg>
struct alignas(16) PrefillLds {
  int8_t a[2][Cfg::kBlockM][Cfg::kLdsRowBytes];
  int8_t b[2][Cfg::kBlockN][Cfg::kLdsRowBytes];
};

// One BlockK slice from LDS: every wave multiplies its kFragsM x kFragsN WMMA tiles.
template <class Cfg, class Math>
__device__ __forceinline__ void mma_lds_slice(const int8_t (*lds_a)[Cfg::kLdsRowBytes],
                                              const int8_t (*lds_b)[Cfg::kLdsRowBytes],
                                              int wave_row, int wave_col, int lane,
                                              typename Math::Acc (&acc)[Cfg::kFragsM][Cfg::kFragsN]) {
  const int operand_row = operand_index(lane);
  // Not unrolled: unrolled, the compiler hoists every step's LDS loads and runs out of VGPRs.
#pragma unroll 1
  for (int step = 0; step < Cfg::kStepsK; ++step) {
    const int k = step * kWmmaDim;
    typename Math::Frag a_frag[Cfg::kFragsM];
    typename Math::Frag b_frag[Cfg::kFragsN];
#pragma unroll
    for (int i = 0; i < Cfg::kFragsM; ++i) {
      a_frag[i] = Math::to_frag(load_frag_i8(&lds_a[wave_row + i * kWmmaDim + operand_row][k]));
    }
#pragma unroll
    for (int j = 0; j < Cfg::kFragsN; ++j) {
      b_frag[j] = Math::to_frag(load_frag_i8(&lds_b[wave_col + j * kWmmaDim + operand_row][k]));
    }
#pragma unroll
    for (int i = 0; i < Cfg::kFragsM; ++i) {
#pragma unroll
      for (int j = 0; j < Cfg::kFragsN; ++j) acc[i][j] = Math::mma(a_frag[i], b_frag[j], acc[i][j]);
    }
  }
}

// One BlockM x BlockN tile through the LDS double-buffered main loop. `a_loader` moves the
// tile's A rows (a TileLoader of rows m0.., or the MoE GEMMs' gathering loader); B rows are n0...
template <class Cfg, class Math, class ALoader, class Out>
__device__ __forceinline__ void gemm_prefill_tile(const GemmOperands& p, ALoader a_loader,
                                                  const Out& out, int m0, int n0) {
  auto& lds = workgroup_lds<PrefillLds<Cfg>>();
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = lane_id();
  const int wave = wave_id();
  const int wave_row = (wave % Cfg::kWavesM) * Cfg::kWaveTileM;
  const int wave_col = (wave / Cfg::kWavesM) * Cfg::kWaveTileN;

  TileLoader<Cfg::kBlockN, Cfg::kBlockK, Cfg::kThreads> b_loader(
      p.b + static_cast<int64_t>(n0) * p.ldb, p.ldb, p.N - n0, tid);

  typename Math::Acc acc[Cfg::kFragsM][Cfg::kFragsN];
#pragma unroll
  for (int i = 0; i < Cfg::kFragsM; ++i) {
#pragma unroll
    for (int j = 0; j < Cfg::kFragsN; ++j) acc[i][j] = Math::zero();
  }

  const int k_tiles = ceil_div(p.K, Cfg::kBlockK);
  a_loader.load(0, p.K);
  b_loader.load(0, p.K);
  a_loader.store(lds.a[0]);
  b_loader.store(lds.b[0]);
  __syncthreads();
  // One barrier per iteration: it publishes buffer `next` and proves every wave is done
  // reading buffer `current` before the next iteration overwrites it.
  for (int k_tile = 0; k_tile < k_tiles; ++k_tile) {
    const int current = k_tile & 1;
    const bool has_next = k_tile + 1 < k_tiles;
    if (has_next) {  // global loads in flight while the WMMAs below run
      a_loader.load((k_tile + 1) * Cfg::kBlockK, p.K);
      b_loader.load((k_tile + 1) * Cfg::kBlockK, p.K);
    }
    mma_lds_slice<Cfg, Math>(lds.a[current], lds.b[current], wave_row, wave_col, lane, acc);
    if (has_next) {
      a_loader.store(lds.a[current ^ 1]);
      b_loader.store(lds.b[current ^ 1]);
    }
    __syncthreads();
  }

  store_fragments(out, acc, m0 + wave_row, n0 + wave_col);
}

template <class Cfg, class Math>
struct alignas(16) DecodeLds {
  typename Math::AccElem partial[Cfg::kWavesK][Cfg::kBlockM][Cfg::kBlockN];
};

// The decode main loop's A operand when the activations are int8 already (the quantization
// kernel ran first): one 128-bit load per lane and step. A lane whose row is padding (past M)
// reads some valid row instead: its output row is never stored, so the loop needs no row test.
struct Int8Rows {
  using Raw = FragI8;
  const int8_t* row;  // this lane's A row (a valid one for padding rows)
  int K;

  __device__ __forceinline__ Int8Rows(const int8_t* lane_row, int k_size) : row(lane_row), K(k_size) {}
  template <bool Ragged>
  __device__ __forceinline__ Raw load(int k) const {
    return (!Ragged || k < K) ? load_frag_i8(row + k) : zero_frag_i8();
  }
  template <bool Ragged>
  __device__ __forceinline__ FragI8 to_frag(Raw raw, int) const { return raw; }
};

// One BlockK slice of a wave's share of K in the decode main loop: all loads first
// (kStepsK * (kFragsN + 1) 128-bit loads in flight), then the WMMAs. Ragged: the slice may
// reach past K (the last one), steps past K read zeros; a whole slice tests no k at all.
// Weight rows past N (b_inside false) read zeros.
template <class Cfg, class Math, bool Ragged, class ARows>
__device__ __forceinline__ void mma_streamed_slice(const ARows& a_rows,
                                                   const int8_t* const (&b_row_ptr)[Cfg::kFragsN],
                                                   const bool (&b_inside)[Cfg::kFragsN], int k0, int K,
                                                   typename Math::Acc (&acc)[Cfg::kFragsN]) {
  typename ARows::Raw a_raw[Cfg::kStepsK];
  FragI8 b_raw[Cfg::kStepsK][Cfg::kFragsN];
#pragma unroll
  for (int step = 0; step < Cfg::kStepsK; ++step) {
    const int k = k0 + step * kWmmaDim;
    const bool k_inside = !Ragged || k < K;
    a_raw[step] = a_rows.template load<Ragged>(k);
#pragma unroll
    for (int j = 0; j < Cfg::kFragsN; ++j) {
      b_raw[step][j] = (b_inside[j] && k_inside) ? load_frag_i8(b_row_ptr[j] + k) : zero_frag_i8();
    }
  }
#pragma unroll
  for (int step = 0; step < Cfg::kStepsK; ++step) {
    const typename Math::Frag a_frag =
        Math::to_frag(a_rows.template to_frag<Ragged>(a_raw[step], k0 + step * kWmmaDim));
#pragma unroll
    for (int j = 0; j < Cfg::kFragsN; ++j) {
      acc[j] = Math::mma(a_frag, Math::to_frag(b_raw[step][j]), acc[j]);
    }
  }
}

template <class Cfg, class Math, class ARows, class Out>
__device__ __forceinline__ void gemm_decode_tile(const GemmOperands& p, const ARows& a_rows,
                                                 const Out& out, int m0, int n0,
                                                 DecodeLds<Cfg, Math>& lds) {
  const int lane = lane_id();
  const int wave = wave_id();
  const int wave_col = (wave % Cfg::kWavesN) * Cfg::kWaveTileN;
  const int wave_k = wave / Cfg::kWavesN;  // stream_weights: BLOCK_M == 16 leaves WAVES_M == 1

  // Columns past N read as zeros. (Loading a valid row instead would drop the test, but the
  // compiler then hoists the loads of later steps and doubles the VGPRs: ~200 instead of ~100.)
  bool b_inside[Cfg::kFragsN];
  const int8_t* b_row_ptr[Cfg::kFragsN];
#pragma unroll
  for (int j = 0; j < Cfg::kFragsN; ++j) {
    const int b_row = n0 + wave_col + j * kWmmaDim + operand_index(lane);
    b_inside[j] = b_row < p.N;
    b_row_ptr[j] = p.b + static_cast<int64_t>(b_row) * p.ldb;
  }

  typename Math::Acc acc[Cfg::kFragsN];
#pragma unroll
  for (int j = 0; j < Cfg::kFragsN; ++j) acc[j] = Math::zero();

  // Whole slices in the loop, the one that reaches past K (if any) after it.
  int k0 = wave_k * Cfg::kWaveTileK;
  for (; k0 + Cfg::kWaveTileK <= p.K; k0 += Cfg::kBlockK) {
    mma_streamed_slice<Cfg, Math, false>(a_rows, b_row_ptr, b_inside, k0, p.K, acc);
  }
  if (k0 < p.K) mma_streamed_slice<Cfg, Math, true>(a_rows, b_row_ptr, b_inside, k0, p.K, acc);

  // The waves of wave_k > 0 hand their partial sums to the wave of wave_k 0 with the same
  // columns, which adds them in wave order (fp32 sums round the same way every time) and
  // stores the tile.
  if (wave_k > 0) {
#pragma unroll
    for (int j = 0; j < Cfg::kFragsN; ++j) {
#pragma unroll
      for (int v = 0; v < kAccValues; ++v) {
        lds.partial[wave_k][acc_row(v, lane)][wave_col + j * kWmmaDim + acc_col(lane)] = acc[j][v];
      }
    }
  }
  __syncthreads();
  if (wave_k == 0) {
    // One wave's partials at a time: unrolled, every LDS load would be hoisted into registers.
#pragma unroll 1
    for (int w = 1; w < Cfg::kWavesK; ++w) {
#pragma unroll
      for (int j = 0; j < Cfg::kFragsN; ++j) {
#pragma unroll
        for (int v = 0; v < kAccValues; ++v) {
          acc[j][v] = Math::add(acc[j][v], lds.partial[w][acc_row(v, lane)][wave_col + j * kWmmaDim + acc_col(lane)]);
        }
      }
    }
    typename Math::Acc tile[1][Cfg::kFragsN];
#pragma unroll
    for (int j = 0; j < Cfg::kFragsN; ++j) tile[0][j] = acc[j];
    store_fragments(out, tile, m0, n0 + wave_col);
  }
}

template <class Cfg, class Math, class Out>
__device__ __forceinline__ void gemm_kernel_body(const GemmOperands& p, const Out& out) {
  const int tiles_m = ceil_div(p.M, Cfg::kBlockM);
  const int tiles_n = ceil_div(p.N, Cfg::kBlockN);
  const int tile = static_cast<int>(blockIdx.x);
  if (tile >= tiles_m * tiles_n) return;  // whole workgroup: an oversized grid is harmless
  const TileIndex t = grouped_tile(tile, tiles_m, tiles_n);
  if constexpr (Cfg::kStreamsWeights) {
    const int m0 = t.m * Cfg::kBlockM;
    const int a_row = m0 + operand_index(lane_id());
    const Int8Rows a_rows(p.a + static_cast<int64_t>(a_row < p.M ? a_row : m0) * p.lda, p.K);
    gemm_decode_tile<Cfg, Math>(p, a_rows, out, m0, t.n * Cfg::kBlockN,
                                workgroup_lds<DecodeLds<Cfg, Math>>());
  } else {
    const int m0 = t.m * Cfg::kBlockM;
    TileLoader<Cfg::kBlockM, Cfg::kBlockK, Cfg::kThreads> a_loader(
        p.a + static_cast<int64_t>(m0) * p.lda, p.lda, p.M - m0, static_cast<int>(threadIdx.x));
    gemm_prefill_tile<Cfg, Math>(p, a_loader, out, m0, t.n * Cfg::kBlockN);
  }
}

}  // namespace rdna_w8a8

// Defines one exported entry point `name` with the GEMM argument list of docs/architecture.md
// for tile configuration (BM, BN, BK, WM, WN, WK, LOOP), LOOP a MainLoop enumerator, and
// operand policy `math`.
#define W8A8_DEFINE_GEMM_KERNEL(name, math, BM, BN, BK, WM, WN, WK, LOOP)                     \
  extern "C" __global__ void __launch_bounds__(::rdna_w8a8::kWaveSize * (WM) * (WN) * (WK))    \
      name(                                                                                   \
      const int8_t* __restrict__ a, const int8_t* __restrict__ b, void* __restrict__ c,       \
      const float* __restrict__ a_scale, const float* __restrict__ b_scale,                   \
      const int32_t* __restrict__ azp, const int32_t* __restrict__ azp_adj,                   \
      const void* __restrict__ bias, int32_t M, int32_t N, int32_t K, int32_t lda,            \
      int32_t ldb, int32_t ldc, uint32_t flags) {                                             \
    using Config = ::rdna_w8a8::GemmConfig<BM, BN, BK, WM, WN, WK, ::rdna_w8a8::MainLoop::LOOP>; \
    const ::rdna_w8a8::Epilogue out{c, a_scale, b_scale, azp, azp_adj, bias, M, N, ldc, flags}; \
    ::rdna_w8a8::gemm_kernel_body<Config, math>(                                              \
        ::rdna_w8a8::GemmOperands{a, b, M, N, K, lda, ldb}, out);                             \
  }                                                                                           \
  RDNA_EXPORT_KERNEL(name)
