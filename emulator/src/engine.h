// Internal interfaces of the emulator library (not seen by kernel sources).
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "rdna_emulator_interface.h"

namespace rdna_emu::detail {

// An entry point registered by RDNA_EXPORT_KERNEL.
struct RegisteredKernel {
  std::string name;
  KernelInvoker invoker;
  std::vector<KernelArgLayout> args;
  std::uint32_t explicit_kernarg_bytes;
};

// nullptr when no kernel of that name was compiled into the library.
const RegisteredKernel* find_registered_kernel(const std::string& name);

// Runs every workgroup of the grid to completion (synchronously). `kernarg`
// holds at least kernel.explicit_kernarg_bytes bytes.
void run_kernel(const RegisteredKernel& kernel, const unsigned char* kernarg, Dim3 grid,
                Dim3 block);

// Where a diagnostic happened, for messages.
struct WaveLocation {
  const char* kernel_name;
  Dim3 block_idx;
  std::uint32_t wave;
};

// Computes all 32 lanes' results of one wave operation (wave_ops.cpp).
// requests[l] is lane l's request; all have the same kind and call site.
void execute_wave_op(const WaveLocation& where, WaveOpRequest* const* requests);

const char* wave_op_name(WaveOpKind kind);

// Prints "rdna_emulator: <message>" to stderr and aborts: a kernel broke a
// hardware rule and there is no meaningful way to continue.
[[noreturn]] void fatal(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace rdna_emu::detail
