// fp8 (e4m3fn) W8A8 GEMM for gfx11: RDNA3 has no fp8 WMMA, so A and B bytes are widened
// exactly to f16 in registers (Fp8Math in common/wmma.h) and multiplied with
// v_wmma_f32_16x16x16_f16 into fp32 sums. One entry point `w8a8_f8_gemm_<tag>` per row of
// gemm_configs.def, same arguments and launch geometry as the int8 kernels
// (docs/architecture.md); azp and azp_adj must be null (fp8 has no zero point; the fp32
// epilogue does not read them): out = a_scale * (b_scale * acc) + bias. Every e4m3fn value
// (±448, subnormals, ±0) is exact in f16; the NaN bytes 0x7f / 0xff become f16 NaN and make
// every output of their row (A) or column (B) NaN. fp32 sums round like any fp32 sum.
//
// Floors on the RX 7900 XTX (gfx1100), arithmetic from paper peaks, not measurements:
// 96 CUs x 512 f16 ops/clk x 2.5 GHz = 122.9 Tops (no fp8 rate on RDNA3); DRAM 960 GB/s.
//   Prefill M = N = K = 4096: 137.4 Gop -> compute floor 1.12 ms, plus the VALU widening
//     (about 5 ops per e4m3 pair, not co-issued with WMMA); bytes 67.1 MB -> memory floor
//     0.070 ms. Compute binds.
//   Decode M = 1, N = K = 4096: weight bytes 16.8 MB -> memory floor 17.5 us; WMMA work with
//     M padded to 16: 0.54 Gop -> compute floor 4.4 us. Memory binds.
#include "common/gemm.h"

#define W8A8_GEMM_CONFIG(tag, BM, BN, BK, WM, WN, WK, LOOP) \
  W8A8_DEFINE_GEMM_KERNEL(w8a8_f8_gemm_##tag, ::rdna_w8a8::Fp8Math, BM, BN, BK, WM, WN, WK, LOOP)
#include "gemm_configs.def"
#undef W8A8_GEMM_CONFIG
