#include "fiber.h"

#include <cstdint>

namespace rdna_emu::detail {

// The frame rdna_emu_switch_fiber leaves on a suspended stack, lowest address
// first: x87 control word (2 bytes, slot of 8), MXCSR (4 bytes, slot of 8),
// r15, r14, r13, r12, rbx, rbp, return address.
asm(R"(
    .text
    .globl rdna_emu_switch_fiber
    .hidden rdna_emu_switch_fiber
    .type rdna_emu_switch_fiber, @function
rdna_emu_switch_fiber:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    fnstcw (%rsp)
    stmxcsr 8(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    fldcw (%rsp)
    ldmxcsr 8(%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size rdna_emu_switch_fiber, .-rdna_emu_switch_fiber
)");

namespace {
constexpr std::uint16_t kDefaultX87ControlWord = 0x037F;  // all exceptions masked, double extended
constexpr std::uint32_t kDefaultMxcsr = 0x1F80;           // all exceptions masked, round to nearest
constexpr int kSavedRegisters = 6;                        // rbp rbx r12 r13 r14 r15
}  // namespace

void* prepare_fiber_stack(unsigned char* bottom, std::size_t size, void (*entry)()) {
  auto top = reinterpret_cast<std::uintptr_t>(bottom + size) & ~std::uintptr_t{15};
  auto* slot = reinterpret_cast<void**>(top);
  // entry() starts as if called: its "return address" (never used) sits at
  // an address that is 8 mod 16, as the ABI requires at function entry.
  *--slot = nullptr;
  *--slot = reinterpret_cast<void*>(entry);  // where the first switch's ret goes
  for (int i = 0; i < kSavedRegisters; ++i) *--slot = nullptr;
  slot -= 2;  // control words
  *reinterpret_cast<std::uint16_t*>(slot) = kDefaultX87ControlWord;
  *reinterpret_cast<std::uint32_t*>(slot + 1) = kDefaultMxcsr;
  return slot;
}

}  // namespace rdna_emu::detail
