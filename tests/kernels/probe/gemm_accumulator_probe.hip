// Test-only entry points: the production GEMM main loops of every tile configuration
// (kernels/common/gemm.h, rows of kernels/gemm_configs.def) with the int32 accumulators
// stored raw instead of the scaled fp16/bf16 epilogue, so tests can compare them bit for bit
// with an int64 reference. `w8a8_probe_i32_gemm_<tag>(a, b, c, M, N, K, lda, ldb, ldc)`,
// launch geometry as the production kernels.
#include "common/gemm.h"

namespace rdna_w8a8 {

struct RawInt32Output {
  struct Column {};
  struct Row {};
  int32_t* c;
  int32_t M, N, ldc;
  __device__ __forceinline__ Column column(int) const { return {}; }
  __device__ __forceinline__ Row row(int) const { return {}; }
  __device__ __forceinline__ void store(int m, int n, int32_t acc, Row, Column) const {
    if (m < M && n < N) c[static_cast<int64_t>(m) * ldc + n] = acc;
  }
};

}  // namespace rdna_w8a8

#define W8A8_GEMM_CONFIG(tag, BM, BN, BK, WM, WN, WK, LOOP)                                  \
  extern "C" __global__ void __launch_bounds__(32 * (WM) * (WN) * (WK))                      \
      w8a8_probe_i32_gemm_##tag(const int8_t* a, const int8_t* b, int32_t* c, int32_t M,      \
                                int32_t N, int32_t K, int32_t lda, int32_t ldb, int32_t ldc) {\
    ::rdna_w8a8::gemm_kernel_body<                                                            \
        ::rdna_w8a8::GemmConfig<BM, BN, BK, WM, WN, WK, ::rdna_w8a8::MainLoop::LOOP>,         \
        ::rdna_w8a8::Int8Math>(                                                               \
        ::rdna_w8a8::GemmOperands{a, b, M, N, K, lda, ldb},                                   \
        ::rdna_w8a8::RawInt32Output{c, M, N, ldc});                                           \
  }                                                                                           \
  RDNA_EXPORT_KERNEL(w8a8_probe_i32_gemm_##tag)
#include "gemm_configs.def"
#undef W8A8_GEMM_CONFIG
