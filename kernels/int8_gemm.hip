// int8 W8A8 GEMM for gfx11: C = epilogue(A[M,K] int8 * B[N,K]^T int8) with int32 WMMA sums,
// one entry point `w8a8_i8_gemm_<tag>` per row of gemm_configs.def (arguments, launch geometry:
// docs/architecture.md). The main loops live in common/gemm.h, shared with the fp8 kernels;
// the int8 operand policy (Int8Math) in common/wmma.h.
//
// Floors on the RX 7900 XTX (gfx1100), arithmetic from paper peaks, not measurements:
// 96 CUs x 512 int8 ops/clk x 2.5 GHz = 122.9 Tops; DRAM 960 GB/s.
//   Prefill M = N = K = 4096: 2*M*N*K = 137.4 Gop -> compute floor 1.12 ms;
//     bytes M*K + N*K + 2*M*N = 67.1 MB -> memory floor 0.070 ms. Compute binds.
//   Decode M = 1, N = K = 4096: weight bytes N*K = 16.8 MB -> memory floor 17.5 us;
//     WMMA work with M padded to 16: 2*16*N*K = 0.54 Gop -> compute floor 4.4 us. Memory binds.
#include "common/gemm.h"

#define W8A8_GEMM_CONFIG(tag, BM, BN, BK, WM, WN, WK) \
  W8A8_DEFINE_GEMM_KERNEL(w8a8_i8_gemm_##tag, ::rdna_w8a8::Int8Math, BM, BN, BK, WM, WN, WK)
#include "gemm_configs.def"
#undef W8A8_GEMM_CONFIG
