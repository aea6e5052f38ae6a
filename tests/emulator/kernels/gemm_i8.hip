// A small LDS-tiled int8 GEMM (C[M][N] int32 = A[M][K] x B[N][K]^T) with 128
// threads per workgroup, used to measure the emulator's speed on a GEMM-like
// kernel. Requires M, N multiples of 64 and K a multiple of 32.
#include "test_compat.h"

namespace {
constexpr int kBlockM = 64, kBlockN = 64, kBlockK = 32;
constexpr int kThreads = 128;      // 4 waves in a 2x2 grid, each 32x32 of C
constexpr int kWaveTiles = 2;      // 16x16 WMMA tiles per wave and dimension
constexpr bool kSigned = true;
constexpr bool kWrap = false;

struct GemmLds {
  int8_t a[kBlockM][kBlockK];
  int8_t b[kBlockN][kBlockK];
};
}  // namespace

extern "C" __global__ void __launch_bounds__(kThreads)
    emu_test_gemm_i8(const int8_t* a, const int8_t* b, int32_t* c, int M, int N, int K) {
  GemmLds& lds = workgroup_lds<GemmLds>();
  const int tid = threadIdx.x, wave = tid / kWave, lane = tid % kWave;
  const int tiles_n = N / kBlockN;
  const int m0 = blockIdx.x / tiles_n * kBlockM, n0 = blockIdx.x % tiles_n * kBlockN;
  const int wave_m = wave / 2 * (kWaveTiles * kTile), wave_n = wave % 2 * (kWaveTiles * kTile);
  (void)M;

  v8i32 acc[kWaveTiles][kWaveTiles] = {};
  for (int k0 = 0; k0 < K; k0 += kBlockK) {
    // 64 rows x 32 bytes per operand: one 16-byte load per thread each.
    const int row = tid / 2, half = tid % 2 * 16;
    *reinterpret_cast<v4i32*>(&lds.a[row][half]) =
        *reinterpret_cast<const v4i32*>(a + size_t(m0 + row) * K + k0 + half);
    *reinterpret_cast<v4i32*>(&lds.b[row][half]) =
        *reinterpret_cast<const v4i32*>(b + size_t(n0 + row) * K + k0 + half);
    __syncthreads();
    for (int kk = 0; kk < kBlockK; kk += kTile) {
      v4i32 a_frag[kWaveTiles], b_frag[kWaveTiles];
      for (int i = 0; i < kWaveTiles; ++i) {
        a_frag[i] = *reinterpret_cast<const v4i32*>(&lds.a[wave_m + i * kTile + lane % kTile][kk]);
        b_frag[i] = *reinterpret_cast<const v4i32*>(&lds.b[wave_n + i * kTile + lane % kTile][kk]);
      }
      for (int i = 0; i < kWaveTiles; ++i)
        for (int j = 0; j < kWaveTiles; ++j)
          acc[i][j] = __builtin_amdgcn_wmma_i32_16x16x16_iu8_w32(kSigned, a_frag[i], kSigned,
                                                                 b_frag[j], acc[i][j], kWrap);
    }
    __syncthreads();  // the next k block overwrites the tiles
  }
  for (int i = 0; i < kWaveTiles; ++i)
    for (int j = 0; j < kWaveTiles; ++j)
      for (int v = 0; v < 8; ++v) {
        const int m = m0 + wave_m + i * kTile + 2 * v + lane / kTile;
        const int n = n0 + wave_n + j * kTile + lane % kTile;
        c[size_t(m) * N + n] = acc[i][j][v];
      }
}
RDNA_EXPORT_KERNEL(emu_test_gemm_i8)
