// Arguments of mixed sizes and alignments, to check that the emulator unpacks
// the kernarg buffer at the offsets the real code object's metadata gives.
#include "test_compat.h"

extern "C" __global__ void __launch_bounds__(32)
    emu_test_kernargs(int8_t tag, const int64_t* in, uint32_t count, double scale,
                      uint16_t small, float ratio, int64_t* out) {
  if (threadIdx.x != 0) return;
  out[0] = tag;
  out[1] = in[0];
  out[2] = count;
  out[3] = static_cast<int64_t>(scale * 1000.0);
  out[4] = small;
  out[5] = static_cast<int64_t>(ratio * 4.0f);
}
RDNA_EXPORT_KERNEL(emu_test_kernargs)
