// The emulator's C++ interface shared by the device-side header
// (rdna_emulator.h) and the emulator library: types, the scheduler's entry
// points and the WMMA emulation functions. No HIP macros here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

namespace rdna_emu {

typedef int v4i32 __attribute__((ext_vector_type(4)));
typedef int v8i32 __attribute__((ext_vector_type(8)));
typedef float v8f32 __attribute__((ext_vector_type(8)));
typedef _Float16 v16f16 __attribute__((ext_vector_type(16)));
typedef short v16i16 __attribute__((ext_vector_type(16)));

// RDNA3 kernels here run in wave32 mode.
inline constexpr unsigned kWaveSize = 32;
// gfx11: one workgroup may allocate at most 64 KiB of LDS.
inline constexpr std::size_t kMaxLdsBytesPerWorkgroup = 64 * 1024;
// Every byte of a workgroup's LDS reads as this until the kernel writes it
// (int8 -91, int32 0xA5A5A5A5, fp16 -0.0226...): unwritten reads show up.
inline constexpr unsigned char kLdsPoisonByte = 0xA5;

struct Dim3 {
  std::uint32_t x, y, z;
};

// What one HIP thread sees of its launch; the scheduler points
// detail::current_lane at the running fiber's copy before every switch.
struct LaneCoordinates {
  Dim3 thread_idx, block_idx, block_dim, grid_dim;
  std::uint32_t lane_id;  // (linear thread id in the workgroup) % 32
};

namespace detail {

extern thread_local const LaneCoordinates* current_lane
    __attribute__((tls_model("initial-exec")));

struct SourceSite {
  const char* file;
  int line;
};

// Suspends the calling thread until every thread of its workgroup reaches a
// barrier (deadlock and divergence are reported, not waited on).
void barrier(SourceSite site);

enum class WaveOpKind : std::uint8_t { Permute, WmmaIu8, WmmaF16, WmmaBf16 };

// One lane's part of a wave operation. `operands` and `result` live on the
// lane's own stack, which stays valid while the lane is suspended.
struct WaveOpRequest {
  WaveOpKind kind;
  SourceSite site;
  const void* operands;
  void* result;
  std::uint32_t size;         // Permute: bytes of the value
  std::uint32_t source_lane;  // Permute: lane whose value this lane receives
};

// Suspends until all 32 lanes of the caller's wave submit a request from the
// same call site, then the emulator computes every lane's result.
void wave_op(WaveOpRequest& request);

struct WmmaIu8Operands {
  v4i32 a, b;
  v8i32 c;
  bool a_signed, b_signed, clamp;
};
struct WmmaF16Operands {
  v16f16 a, b;
  v8f32 c;
};
struct WmmaBf16Operands {
  v16i16 a, b;  // bf16 bit patterns
  v8f32 c;
};

void* workgroup_lds_storage(const void* type_tag, std::size_t size, std::size_t alignment,
                            const char* type_name);
template <class T>
inline char lds_type_tag = 0;  // its address identifies T's LDS object

// Kernel registration: the packed kernarg buffer is unpacked by the entry
// point's own parameter types, each at its natural alignment (the AMDGPU
// kernarg layout for the explicit arguments).
struct KernelArgLayout {
  std::uint32_t offset, size;
};
using KernelInvoker = void (*)(const unsigned char* kernarg);
bool register_kernel(const char* name, KernelInvoker invoker, const KernelArgLayout* args,
                     std::uint32_t arg_count, std::uint32_t explicit_kernarg_bytes);

template <class... Args>
struct KernargLayout {
  static constexpr std::size_t count = sizeof...(Args);
  struct Table {
    KernelArgLayout args[count > 0 ? count : 1];
    std::uint32_t bytes;
  };
  static constexpr Table compute() {
    Table table{};
    std::uint32_t offset = 0;
    std::size_t i = 0;
    ((offset = (offset + alignof(Args) - 1) / alignof(Args) * alignof(Args),
      table.args[i++] = KernelArgLayout{offset, static_cast<std::uint32_t>(sizeof(Args))},
      offset += sizeof(Args)),
     ...);
    table.bytes = offset;
    return table;
  }
  static constexpr Table table = compute();
};

template <auto Fn>
struct ExportedKernel;

template <class... Args, void (*Fn)(Args...)>
struct ExportedKernel<Fn> {
  static_assert((std::is_trivially_copyable_v<Args> && ...),
                "kernel arguments are copied as bytes from the kernarg segment: "
                "every parameter type must be trivially copyable");
  using Layout = KernargLayout<Args...>;

  template <class T>
  static T load(const unsigned char* at) {
    T value;
    std::memcpy(&value, at, sizeof(T));
    return value;
  }
  template <std::size_t... I>
  static void call(const unsigned char* kernarg, std::index_sequence<I...>) {
    Fn(load<Args>(kernarg + Layout::table.args[I].offset)...);
  }
  static void invoke(const unsigned char* kernarg) {
    call(kernarg, std::index_sequence_for<Args...>{});
  }
  static bool register_as(const char* name) {
    return register_kernel(name, &invoke, Layout::table.args,
                           static_cast<std::uint32_t>(Layout::count), Layout::table.bytes);
  }
};

}  // namespace detail

// --- WMMA (gfx11, wave32). Operand layout, lane l = 0..31:
//   A: lane l supplies row l % 16; VGPR j byte b (f16: element i) is k = 4j + b (k = i).
//   B: lane l supplies column l % 16, same k packing.
//   Lanes 16-31 must hold exactly the data of lanes 0-15 (RDNA3 rule; checked).
//   C/D: element v of lane l is D[2v + l / 16][l % 16].

inline v8i32 wmma_i32_16x16x16_iu8_w32(bool a_signed, v4i32 a, bool b_signed, v4i32 b, v8i32 c,
                                       bool clamp, const char* file = __builtin_FILE(),
                                       int line = __builtin_LINE()) {
  const detail::WmmaIu8Operands operands{a, b, c, a_signed, b_signed, clamp};
  v8i32 d;
  detail::WaveOpRequest request{detail::WaveOpKind::WmmaIu8, {file, line}, &operands, &d, 0, 0};
  detail::wave_op(request);
  return d;
}

inline v8f32 wmma_f32_16x16x16_f16_w32(v16f16 a, v16f16 b, v8f32 c,
                                       const char* file = __builtin_FILE(),
                                       int line = __builtin_LINE()) {
  const detail::WmmaF16Operands operands{a, b, c};
  v8f32 d;
  detail::WaveOpRequest request{detail::WaveOpKind::WmmaF16, {file, line}, &operands, &d, 0, 0};
  detail::wave_op(request);
  return d;
}

inline v8f32 wmma_f32_16x16x16_bf16_w32(v16i16 a, v16i16 b, v8f32 c,
                                        const char* file = __builtin_FILE(),
                                        int line = __builtin_LINE()) {
  const detail::WmmaBf16Operands operands{a, b, c};
  v8f32 d;
  detail::WaveOpRequest request{detail::WaveOpKind::WmmaBf16, {file, line}, &operands, &d, 0, 0};
  detail::wave_op(request);
  return d;
}

}  // namespace rdna_emu
