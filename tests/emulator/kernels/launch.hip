// Launch plumbing: argument unpacking and work-item coordinates.
#include "test_compat.h"

// Arguments of mixed sizes and alignments, to check that the emulator unpacks
// the kernarg buffer at the offsets the real code object's metadata gives.
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

constexpr int kCoordinateFields = 14;

// Every work-item records what it sees, at its global linear index.
extern "C" __global__ void __launch_bounds__(1024) emu_test_coordinates(uint32_t* out) {
  const uint32_t local = threadIdx.x + threadIdx.y * blockDim.x +
                         threadIdx.z * blockDim.x * blockDim.y;
  const uint32_t block = blockIdx.x + blockIdx.y * gridDim.x + blockIdx.z * gridDim.x * gridDim.y;
  uint32_t* mine = out + (size_t(block) * blockDim.x * blockDim.y * blockDim.z + local) *
                             kCoordinateFields;
  const uint32_t fields[kCoordinateFields] = {
      threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z,
      blockDim.x,  blockDim.y,  blockDim.z,  gridDim.x,  gridDim.y,  gridDim.z,
      static_cast<uint32_t>(__lane_id()), static_cast<uint32_t>(warpSize)};
  for (int i = 0; i < kCoordinateFields; ++i) mine[i] = fields[i];
}
RDNA_EXPORT_KERNEL(emu_test_coordinates)
