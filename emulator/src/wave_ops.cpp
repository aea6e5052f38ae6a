// The arithmetic of wave operations, one wave at a time: lane l's operands
// are requests[l]->operands, its result goes to requests[l]->result.
#include <cmath>
#include <cstring>
#include <limits>

#include "engine.h"

namespace rdna_emu::detail {

const char* wave_op_name(WaveOpKind kind) {
  switch (kind) {
    case WaveOpKind::Permute:
      return "__shfl_xor()";
    case WaveOpKind::WmmaIu8:
      return "__builtin_amdgcn_wmma_i32_16x16x16_iu8_w32()";
    case WaveOpKind::WmmaF16:
      return "__builtin_amdgcn_wmma_f32_16x16x16_f16_w32()";
    case WaveOpKind::WmmaBf16:
      return "__builtin_amdgcn_wmma_f32_16x16x16_bf16_w32()";
  }
  return "unknown wave operation";
}

namespace {

constexpr int kTile = 16;  // every gfx11 WMMA is 16x16x16

// ds_bpermute: each lane receives the value of the lane it names; every lane
// reads before any lane's result is written.
void execute_permute(WaveOpRequest* const* requests) {
  for (unsigned l = 0; l < kWaveSize; ++l)
    std::memcpy(requests[l]->result, requests[requests[l]->source_lane]->operands,
                requests[l]->size);
}

// RDNA3: lanes 16-31 must carry exactly the A and B data of lanes 0-15.
template <class Operands, class Vector>
void check_replication(const WaveLocation& where, WaveOpRequest* const* requests,
                       Vector Operands::*member, const char* operand_name) {
  for (unsigned l = kTile; l < kWaveSize; ++l) {
    const auto& upper = static_cast<const Operands*>(requests[l]->operands)->*member;
    const auto& lower = static_cast<const Operands*>(requests[l - kTile]->operands)->*member;
    if (std::memcmp(&upper, &lower, sizeof(Vector)) != 0) {
      fatal("kernel %s, workgroup (%u,%u,%u), wave %u, lane %u: %s at %s:%d: operand %s of lane %u "
            "differs from lane %u; on RDNA3 lanes 16-31 must replicate the A and B data of lanes "
            "0-15",
            where.kernel_name, where.block_idx.x, where.block_idx.y, where.block_idx.z, where.wave,
            l, wave_op_name(requests[l]->kind), requests[l]->site.file, requests[l]->site.line,
            operand_name, l, l - kTile);
    }
  }
}

// C and D: element v of lane l is row 2v + l/16, column l%16.
template <class Vector, class Element>
void gather_accumulator(WaveOpRequest* const* requests, Vector (*c_of)(const void*),
                        Element (&c)[kTile][kTile]) {
  for (unsigned l = 0; l < kWaveSize; ++l) {
    const Vector lane_c = c_of(requests[l]->operands);
    for (int v = 0; v < 8; ++v) c[2 * v + l / kTile][l % kTile] = lane_c[v];
  }
}

template <class Vector, class Element>
void scatter_accumulator(WaveOpRequest* const* requests, const Element (&d)[kTile][kTile]) {
  for (unsigned l = 0; l < kWaveSize; ++l) {
    Vector lane_d;
    for (int v = 0; v < 8; ++v) lane_d[v] = d[2 * v + l / kTile][l % kTile];
    std::memcpy(requests[l]->result, &lane_d, sizeof(Vector));
  }
}

template <class Operands>
void check_uniform_flags(const WaveLocation& where, WaveOpRequest* const* requests) {
  const auto& head = *static_cast<const Operands*>(requests[0]->operands);
  for (unsigned l = 1; l < kWaveSize; ++l) {
    const auto& lane = *static_cast<const Operands*>(requests[l]->operands);
    if (lane.a_signed != head.a_signed || lane.b_signed != head.b_signed ||
        lane.clamp != head.clamp) {
      fatal("kernel %s, workgroup (%u,%u,%u), wave %u, lane %u: WMMA sign/clamp flags differ "
            "from lane 0 (they are instruction bits, constant for the whole wave)",
            where.kernel_name, where.block_idx.x, where.block_idx.y, where.block_idx.z,
            where.wave, l);
    }
  }
}

// v_wmma_i32_16x16x16_iu8: D = A x B + C in int32. A lane's v4i32 holds 16
// bytes; VGPR j byte b (little-endian) is k = 4j + b, so byte i of the vector
// is k = i. a_signed/b_signed pick int8 or uint8 per operand; clamp saturates
// the int32 result instead of wrapping.
void execute_wmma_iu8(const WaveLocation& where, WaveOpRequest* const* requests) {
  check_replication<WmmaIu8Operands>(where, requests, &WmmaIu8Operands::a, "A");
  check_replication<WmmaIu8Operands>(where, requests, &WmmaIu8Operands::b, "B");
  check_uniform_flags<WmmaIu8Operands>(where, requests);
  const auto& flags = *static_cast<const WmmaIu8Operands*>(requests[0]->operands);

  std::int32_t a[kTile][kTile], b[kTile][kTile];  // a[m][k], b[n][k]: k contiguous
  for (int l = 0; l < kTile; ++l) {
    const auto& operands = *static_cast<const WmmaIu8Operands*>(requests[l]->operands);
    unsigned char a_bytes[kTile], b_bytes[kTile];
    std::memcpy(a_bytes, &operands.a, kTile);
    std::memcpy(b_bytes, &operands.b, kTile);
    for (int k = 0; k < kTile; ++k) {
      a[l][k] = flags.a_signed ? static_cast<std::int8_t>(a_bytes[k]) : a_bytes[k];
      b[l][k] = flags.b_signed ? static_cast<std::int8_t>(b_bytes[k]) : b_bytes[k];
    }
  }
  std::int32_t c[kTile][kTile], d[kTile][kTile];
  gather_accumulator<v8i32>(
      requests, [](const void* p) { return static_cast<const WmmaIu8Operands*>(p)->c; }, c);
  for (int m = 0; m < kTile; ++m) {
    for (int n = 0; n < kTile; ++n) {
      // 16 products of at most 255 * 255: the dot product is exact in int32.
      std::int32_t dot = 0;
      for (int k = 0; k < kTile; ++k) dot += a[m][k] * b[n][k];
      std::int64_t sum = std::int64_t{c[m][n]} + dot;
      if (flags.clamp) {
        sum = std::min<std::int64_t>(std::max<std::int64_t>(sum, INT32_MIN), INT32_MAX);
      }
      d[m][n] = static_cast<std::int32_t>(static_cast<std::uint32_t>(sum));  // wraps mod 2^32
    }
  }
  scatter_accumulator<v8i32>(requests, d);
}

// v_wmma_f32_16x16x16_{f16,bf16}: D = A x B + C with f32 accumulation; A and
// B element i of a lane is k = i. Products of two f16/bf16 values are exact
// in f32; the hardware's adder order is undocumented, so the 16 products and
// C are summed in double and rounded to f32 once (results may differ from a
// GPU in the last bits of f32).
template <class Operands, class Widen>
void execute_wmma_f32(const WaveLocation& where, WaveOpRequest* const* requests, Widen widen) {
  check_replication<Operands>(where, requests, &Operands::a, "A");
  check_replication<Operands>(where, requests, &Operands::b, "B");
  double a[kTile][kTile], b[kTile][kTile];
  for (int l = 0; l < kTile; ++l) {
    const auto& operands = *static_cast<const Operands*>(requests[l]->operands);
    for (int k = 0; k < kTile; ++k) {
      a[l][k] = widen(operands.a[k]);
      b[k][l] = widen(operands.b[k]);
    }
  }
  float c[kTile][kTile], d[kTile][kTile];
  gather_accumulator<v8f32>(
      requests, [](const void* p) { return static_cast<const Operands*>(p)->c; }, c);
  for (int m = 0; m < kTile; ++m) {
    for (int n = 0; n < kTile; ++n) {
      double sum = c[m][n];
      for (int k = 0; k < kTile; ++k) sum += a[m][k] * b[k][n];
      d[m][n] = static_cast<float>(sum);
    }
  }
  scatter_accumulator<v8f32>(requests, d);
}

float widen_f16(_Float16 value) { return static_cast<float>(value); }

// bf16 is the upper half of an f32.
float widen_bf16(short bits) {
  const std::uint32_t word = std::uint32_t{static_cast<std::uint16_t>(bits)} << 16;
  float value;
  std::memcpy(&value, &word, sizeof value);
  return value;
}

}  // namespace

void execute_wave_op(const WaveLocation& where, WaveOpRequest* const* requests) {
  switch (requests[0]->kind) {
    case WaveOpKind::Permute:
      execute_permute(requests);
      return;
    case WaveOpKind::WmmaIu8:
      execute_wmma_iu8(where, requests);
      return;
    case WaveOpKind::WmmaF16:
      execute_wmma_f32<WmmaF16Operands>(where, requests, &widen_f16);
      return;
    case WaveOpKind::WmmaBf16:
      execute_wmma_f32<WmmaBf16Operands>(where, requests, &widen_bf16);
      return;
  }
}

}  // namespace rdna_emu::detail
