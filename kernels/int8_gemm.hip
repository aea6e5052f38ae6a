// int8 W8A8 GEMM for gfx11: C = epilogue(A[M,K] int8 * B[N,K]^T int8) with int32 WMMA sums,
// one entry point `w8a8_i8_gemm_<tag>` per row of gemm_configs.def (arguments, launch geometry:
// docs/architecture.md). The main loops live in common/gemm.h, shared with the fp8 kernels;
// the int8 operand policy (Int8Math) in common/wmma.h.
// Each stream_weights (decode) row also gets the fused entry points
// `w8a8_i8q_{f16,bf16}_gemm_<tag>`, which quantize their fp16/bf16 activation rows themselves
// (common/decode_quant.h): one launch per int8 layer at M <= 16.
//
// Floors on the RX 7900 XTX (gfx1100), arithmetic from paper peaks, not measurements:
// 96 CUs x 512 int8 ops/clk x 2.5 GHz = 122.9 Tops; DRAM 960 GB/s.
//   Prefill M = N = K = 4096: 2*M*N*K = 137.4 Gop -> compute floor 1.12 ms;
//     bytes M*K + N*K + 2*M*N = 67.1 MB -> memory floor 0.070 ms. Compute binds.
//   Decode M = 1, N = K = 4096: weight bytes N*K = 16.8 MB -> memory floor 17.5 us;
//     WMMA work with M padded to 16: 2*16*N*K = 0.54 Gop -> compute floor 4.4 us. Memory binds.
//   Fused decode, same shape: N*K + 2*M*K (fp16 rows) + 2*M*N + 4*N bytes -> memory floor
//     17.5 us, the same compute floor; it moves 2*M*K + 8*M bytes less than the two launches
//     (+ 8*M asymmetric): no int8 rows and no scales (zero points) written and read back.
#include "common/decode_quant.h"

#define W8A8_GEMM_CONFIG(tag, BM, BN, BK, WM, WN, WK, LOOP) \
  W8A8_DEFINE_GEMM_KERNEL(w8a8_i8_gemm_##tag, ::rdna_w8a8::Int8Math, BM, BN, BK, WM, WN, WK, LOOP)
#include "gemm_configs.def"
#undef W8A8_GEMM_CONFIG

// The fused entry points exist for stream_weights rows only: the expansion is chosen by
// pasting the row's MAIN_LOOP.
#define W8A8_FUSED_DECODE_KERNELS_stream_weights(tag, BM, BN, BK, WM, WN, WK)                  \
  W8A8_DEFINE_FUSED_DECODE_KERNEL(w8a8_i8q_f16_gemm_##tag, ::rdna_w8a8::Fp16Input, BM, BN, BK, \
                                  WM, WN, WK)                                                  \
  W8A8_DEFINE_FUSED_DECODE_KERNEL(w8a8_i8q_bf16_gemm_##tag, ::rdna_w8a8::Bf16Input, BM, BN, BK, \
                                  WM, WN, WK)
#define W8A8_FUSED_DECODE_KERNELS_lds_double_buffer(tag, BM, BN, BK, WM, WN, WK)
#define W8A8_GEMM_CONFIG(tag, BM, BN, BK, WM, WN, WK, LOOP) \
  W8A8_FUSED_DECODE_KERNELS_##LOOP(tag, BM, BN, BK, WM, WN, WK)
#include "gemm_configs.def"
#undef W8A8_GEMM_CONFIG
