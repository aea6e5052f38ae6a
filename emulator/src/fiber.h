// Switching between fibers without the system call that swapcontext() makes
// for the signal mask on every switch (that call dominated the run time:
// every WMMA is 64 switches). x86-64 System V only.
#pragma once

#include <cstddef>

#if !defined(__x86_64__)
#error "the emulator's fiber switch is written for x86-64 (System V ABI)"
#endif

namespace rdna_emu::detail {

// Saves the callee-saved registers, the x87 control word and MXCSR on the
// current stack, stores the stack pointer in *save_sp, then continues the
// fiber whose stack pointer is load_sp.
extern "C" void rdna_emu_switch_fiber(void** save_sp, void* load_sp);

// Lays out a fresh stack [bottom, bottom + size) so that switching to the
// returned stack pointer calls entry(), which must never return.
void* prepare_fiber_stack(unsigned char* bottom, std::size_t size, void (*entry)());

}  // namespace rdna_emu::detail
