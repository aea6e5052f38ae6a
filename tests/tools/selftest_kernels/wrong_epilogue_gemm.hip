// A deliberately broken int8 GEMM, only for tests/tools/test_selftest.py: one entry point
// `w8a8_i8_gemm_<tag>` per row of kernels/gemm_configs.def with the production arguments, exact
// int32 sums (plain loops, no WMMA), and a wrong epilogue: it drops the per-channel weight-scale
// flag, so every column is scaled by b_scale[0]. Per-tensor weight scales come out right; the
// selftest must catch the rest and name the first differing element.
#include "common/epilogue.h"  // the test copies kernels/common and the tile table beside this file

template <int BLOCK_M, int BLOCK_N>
__device__ void wrong_epilogue_gemm(const int8_t* a, const int8_t* b, void* c, const float* a_scale,
                                    const float* b_scale, const int32_t* azp, const int32_t* azp_adj,
                                    const void* bias, int32_t M, int32_t N, int32_t K, int32_t lda,
                                    int32_t ldb, int32_t ldc, uint32_t flags) {
  const rdna_w8a8::Epilogue out{c,    a_scale, b_scale, azp, azp_adj, bias, M, N, ldc,
                                flags & ~rdna_w8a8::kFlagPerChannelBScale};  // the bug
  const int tiles_n = (N + BLOCK_N - 1) / BLOCK_N;
  const int m0 = static_cast<int>(blockIdx.x) / tiles_n * BLOCK_M;
  const int n0 = static_cast<int>(blockIdx.x) % tiles_n * BLOCK_N;
  for (int i = static_cast<int>(threadIdx.x); i < BLOCK_M * BLOCK_N; i += static_cast<int>(blockDim.x)) {
    const int m = m0 + i / BLOCK_N;
    const int n = n0 + i % BLOCK_N;
    if (m >= M || n >= N) continue;
    int32_t acc = 0;
    for (int k = 0; k < K; ++k)
      acc += static_cast<int32_t>(a[static_cast<int64_t>(m) * lda + k]) *
             static_cast<int32_t>(b[static_cast<int64_t>(n) * ldb + k]);
    out.row_output(m)[n] = out.convert(acc, out.row(m), out.column(n));
  }
}

#define W8A8_GEMM_CONFIG(tag, BM, BN, BK, WM, WN, WK, LOOP)                                     \
  extern "C" __global__ void __launch_bounds__(32 * (WM) * (WN) * (WK)) w8a8_i8_gemm_##tag(    \
      const int8_t* __restrict__ a, const int8_t* __restrict__ b, void* __restrict__ c,         \
      const float* __restrict__ a_scale, const float* __restrict__ b_scale,                     \
      const int32_t* __restrict__ azp, const int32_t* __restrict__ azp_adj,                     \
      const void* __restrict__ bias, int32_t M, int32_t N, int32_t K, int32_t lda, int32_t ldb, \
      int32_t ldc, uint32_t flags) {                                                            \
    wrong_epilogue_gemm<BM, BN>(a, b, c, a_scale, b_scale, azp, azp_adj, bias, M, N, K, lda,   \
                                ldb, ldc, flags);                                               \
  }                                                                                             \
  RDNA_EXPORT_KERNEL(w8a8_i8_gemm_##tag)
#include "gemm_configs.def"
#undef W8A8_GEMM_CONFIG
