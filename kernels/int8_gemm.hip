// int8 W8A8 GEMM for gfx11: C = epilogue(A[M,K] int8 * B[N,K]^T int8) with int32 WMMA sums,
// one entry point `w8a8_i8_gemm_<tag>` per row of gemm_configs.def (arguments, launch geometry:
// docs/architecture.md). The main loops live in common/gemm.h, shared with the fp8 kernels.
//
// Floors on the RX 7900 XTX (gfx1100), arithmetic from paper peaks, not measurements:
// 96 CUs x 512 int8 ops/clk x 2.5 GHz = 122.9 Tops; DRAM 960 GB/s.
//   Prefill M = N = K = 4096: 2*M*N*K = 137.4 Gop -> compute floor 1.12 ms;
//     bytes M*K + N*K + 2*M*N = 67.1 MB -> memory floor 0.070 ms. Compute binds.
//   Decode M = 1, N = K = 4096: weight bytes N*K = 16.8 MB -> memory floor 17.5 us;
//     WMMA work with M padded to 16: 2*16*N*K = 0.54 Gop -> compute floor 4.4 us. Memory binds.
#include "common/gemm.h"

namespace rdna_w8a8 {

// int8 operands go to the WMMA as loaded; int32 partial sums add with wrap-around.
struct Int8Math {
  using Frag = FragI8;
  using Acc = AccI32;
  using AccElem = int32_t;
  static __device__ __forceinline__ Frag to_frag(FragI8 raw) { return raw; }
  static __device__ __forceinline__ Acc zero() { return zero_acc_i32(); }
  static __device__ __forceinline__ Acc mma(Frag a, Frag b, Acc acc) { return rdna_w8a8::mma(a, b, acc); }
  static __device__ __forceinline__ AccElem add(AccElem x, AccElem y) {
    return static_cast<int32_t>(static_cast<uint32_t>(x) + static_cast<uint32_t>(y));
  }
};

}  // namespace rdna_w8a8

#define W8A8_GEMM_CONFIG(tag, BM, BN, BK, WM, WN, WK) \
  W8A8_DEFINE_GEMM_KERNEL(w8a8_i8_gemm_##tag, ::rdna_w8a8::Int8Math, BM, BN, BK, WM, WN, WK)
#include "gemm_configs.def"
#undef W8A8_GEMM_CONFIG
