// Single WMMA operations on 16x16 tiles, written from the RDNA3 operand
// layout (rdna3-wmma.md): lane l supplies row l%16 of A and column l%16 of B
// (16 contiguous k values), lanes 16-31 replicate lanes 0-15, and element v
// of lane l's accumulator is D[2v + l/16][l%16].
// Tiles in memory: A [16][k_len] row-major (k contiguous), B as [16 n][k_len]
// (k contiguous, like a torch Linear weight), C and D [16][16] row-major.
#include "test_compat.h"

namespace {

constexpr bool kSigned = true;
constexpr bool kUnsigned = false;
constexpr bool kClamp = true;
constexpr bool kWrap = false;

// C/D element v of `lane` is tile[2v + lane/16][lane%16].
template <class Accumulator, class T>
__device__ Accumulator load_accumulator(const T* tile, unsigned lane) {
  Accumulator acc;
  for (unsigned v = 0; v < 8; ++v) acc[v] = tile[(2 * v + lane / kTile) * kTile + lane % kTile];
  return acc;
}

template <class Accumulator, class T>
__device__ void store_accumulator(T* tile, unsigned lane, Accumulator acc) {
  for (unsigned v = 0; v < 8; ++v) tile[(2 * v + lane / kTile) * kTile + lane % kTile] = acc[v];
}

// D = A[16][k_len] x B[16][k_len]^T + C, one WMMA per 16 k, accumulators chained
// through C. Each wave of the grid computes its own tile (tile index = global wave).
template <bool kSignedA, bool kSignedB, bool kClampResult>
__device__ void wmma_iu8_tiles(const int8_t* a, const int8_t* b, const int32_t* c, int32_t* d,
                               int k_len) {
  const unsigned wave = (blockIdx.x * blockDim.x + threadIdx.x) / kWave;
  const unsigned lane = threadIdx.x % kWave;
  const size_t tile_elements = size_t(kTile) * k_len;
  const int8_t* a_row = a + wave * tile_elements + (lane % kTile) * k_len;
  const int8_t* b_col = b + wave * tile_elements + (lane % kTile) * k_len;
  v8i32 acc = load_accumulator<v8i32>(c + wave * kTile * kTile, lane);
  for (int k0 = 0; k0 < k_len; k0 += kTile) {
    const v4i32 a_frag = *reinterpret_cast<const v4i32*>(a_row + k0);
    const v4i32 b_frag = *reinterpret_cast<const v4i32*>(b_col + k0);
    acc = __builtin_amdgcn_wmma_i32_16x16x16_iu8_w32(kSignedA, a_frag, kSignedB, b_frag, acc,
                                                      kClampResult);
  }
  store_accumulator(d + wave * kTile * kTile, lane, acc);
}

}  // namespace

#define WMMA_IU8_KERNEL(name, signed_a, signed_b, clamp)                                      \
  extern "C" __global__ void __launch_bounds__(256)                                          \
      name(const int8_t* a, const int8_t* b, const int32_t* c, int32_t* d, int k_len) {       \
    wmma_iu8_tiles<signed_a, signed_b, clamp>(a, b, c, d, k_len);                            \
  }                                                                                          \
  RDNA_EXPORT_KERNEL(name)

WMMA_IU8_KERNEL(emu_test_wmma_i8_ss, kSigned, kSigned, kWrap)
WMMA_IU8_KERNEL(emu_test_wmma_i8_su, kSigned, kUnsigned, kWrap)
WMMA_IU8_KERNEL(emu_test_wmma_i8_us, kUnsigned, kSigned, kWrap)
WMMA_IU8_KERNEL(emu_test_wmma_i8_uu, kUnsigned, kUnsigned, kWrap)
WMMA_IU8_KERNEL(emu_test_wmma_i8_ss_clamp, kSigned, kSigned, kClamp)

// One f16 WMMA per wave on 16x16 tiles: A [16][16], B as [16 n][16 k] (f16), C, D f32.
extern "C" __global__ void __launch_bounds__(256)
    emu_test_wmma_f16(const _Float16* a, const _Float16* b, const float* c, float* d) {
  const unsigned wave = (blockIdx.x * blockDim.x + threadIdx.x) / kWave;
  const unsigned lane = threadIdx.x % kWave;
  const size_t tile = wave * kTile * kTile;
  const v16f16 a_frag = *reinterpret_cast<const v16f16*>(a + tile + (lane % kTile) * kTile);
  const v16f16 b_frag = *reinterpret_cast<const v16f16*>(b + tile + (lane % kTile) * kTile);
  v8f32 acc = load_accumulator<v8f32>(c + tile, lane);
  acc = __builtin_amdgcn_wmma_f32_16x16x16_f16_w32(a_frag, b_frag, acc);
  store_accumulator(d + tile, lane, acc);
}
RDNA_EXPORT_KERNEL(emu_test_wmma_f16)

// Same for bf16 operands (passed as their 16-bit patterns).
extern "C" __global__ void __launch_bounds__(256)
    emu_test_wmma_bf16(const short* a, const short* b, const float* c, float* d) {
  const unsigned wave = (blockIdx.x * blockDim.x + threadIdx.x) / kWave;
  const unsigned lane = threadIdx.x % kWave;
  const size_t tile = wave * kTile * kTile;
  const v16i16 a_frag = *reinterpret_cast<const v16i16*>(a + tile + (lane % kTile) * kTile);
  const v16i16 b_frag = *reinterpret_cast<const v16i16*>(b + tile + (lane % kTile) * kTile);
  v8f32 acc = load_accumulator<v8f32>(c + tile, lane);
  acc = __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32(a_frag, b_frag, acc);
  store_accumulator(d + tile, lane, acc);
}
RDNA_EXPORT_KERNEL(emu_test_wmma_bf16)
