// Stand-in for the HIP module API subset our launcher uses, with HIP's names,
// signatures (checked against <hip/hip_runtime_api.h>) and error codes.
// Launches run the kernels registered by RDNA_EXPORT_KERNEL synchronously.
//
// As strict as ROCm where a mistake on the host side would only show on a real GPU:
// several devices (VLLM_RDNA_W8A8_EMULATE="gfx1100,gfx1151"), a per-thread current device,
// modules and streams owned by the device current when they were created, HIP 7's sticky
// last error, and images that must stay alive as long as their module.
#include <elf.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

// Before engine.h: the HIP header uses names (gridDim, ...) that the
// emulator's device header defines as macros.
#define __HIP_PLATFORM_AMD__ 1
#include <hip/hip_runtime_api.h>

#include "engine.h"

struct ihipModule_t {
  int device;  // the device current at hipModuleLoadData: the only one it may be used from
  // HIP keeps the pointer it was given, not a copy (clr reads the image again later; so do
  // debuggers and profilers): hipModuleGetFunction checks it is still there, unchanged.
  const unsigned char* image;
  std::size_t image_bytes;
  std::uint64_t image_digest;
  std::set<std::string> kernel_symbols;  // kernels the code object defines
  std::map<std::string, std::unique_ptr<ihipModuleSymbol_t>> functions;
};

struct ihipModuleSymbol_t {
  const rdna_emu::detail::RegisteredKernel* kernel;
  int device;  // its module's device
};

struct ihipStream_t {
  int device;  // the device current at hipStreamCreate
};

namespace rdna_emu::detail {
namespace {

std::map<std::string, RegisteredKernel>& kernel_registry() {
  static std::map<std::string, RegisteredKernel> registry;  // filled during static init
  return registry;
}

std::mutex api_mutex;  // guards the live_* sets; one launch at a time
std::set<const ihipModule_t*> live_modules;
std::set<const ihipModuleSymbol_t*> live_functions;
std::set<const ihipStream_t*> live_streams;

// HIP 7 semantics (as CUDA): a failure stays this thread's last error until hipGetLastError
// reads it; later successful calls do not reset it (HIP <= 6 reset it on every call).
thread_local hipError_t last_error = hipSuccess;
thread_local std::string last_message;
thread_local int current_device = 0;  // hipSetDevice is per host thread, default device 0

hipError_t fail(hipError_t code, std::string message) {
  last_error = code;
  last_message = std::move(message);
  return code;
}

hipError_t succeed() {
  last_message.clear();
  return hipSuccess;
}

// e_flags & EF_AMDGPU_MACH of the gfx11 targets (LLVM BinaryFormat/ELF.h).
constexpr unsigned kMachMask = 0xff;
const std::map<unsigned, const char*> kGfx11Machs = {
    {0x41, "gfx1100"}, {0x46, "gfx1101"}, {0x47, "gfx1102"},
    {0x44, "gfx1103"}, {0x43, "gfx1150"}, {0x4a, "gfx1151"},
};
constexpr unsigned char kElfOsAbiAmdgpuHsa = 64;
// e_ident[EI_ABIVERSION] of code object v4, v6 (ELFABIVERSION_AMDGPU_HSA_V4/_V6).
constexpr unsigned char kMinAbiVersion = 2;
constexpr unsigned char kMaxAbiVersion = 4;
// Names the emulated device's target (vllm_rdna_w8a8/emulation.py validates it).
constexpr const char* kEmulatedTargetEnv = "VLLM_RDNA_W8A8_EMULATE";

// The emulated devices, one target name each: $VLLM_RDNA_W8A8_EMULATE split at commas
// (vllm_rdna_w8a8/emulation.py validates it; names other than gfx11 ones are devices that
// run none of our objects). Unset: one device running any gfx11 object. Read per call, so
// a test may change it between calls.
std::vector<std::string> emulated_devices() {
  std::vector<std::string> devices;
  const char* value = std::getenv(kEmulatedTargetEnv);
  const std::string list = value != nullptr ? value : "";
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    const std::size_t first = list.find_first_not_of(" \t", start);
    const std::size_t last = list.find_last_not_of(" \t", end == 0 ? 0 : end - 1);
    if (first != std::string::npos && first < end && last != std::string::npos && last >= first)
      devices.push_back(list.substr(first, last - first + 1));
    start = end + 1;
  }
  if (devices.empty()) devices.emplace_back();  // "": any gfx11 target
  return devices;
}

std::string describe_device(int device) {
  return "device " + std::to_string(device);
}

// FNV-1a over the image, to notice that its memory changed after hipModuleLoadData.
std::uint64_t digest(const unsigned char* bytes, std::size_t size) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ull;
  return hash;
}

// The module's image as it is now, read without faulting if its memory was unmapped
// (a freed large buffer is returned to the system). False when unreadable.
bool read_image_now(const ihipModule_t& module, std::vector<unsigned char>& out) {
  out.resize(module.image_bytes);
  iovec local{out.data(), out.size()};
  iovec remote{const_cast<unsigned char*>(module.image), module.image_bytes};
  const ssize_t read = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
  return read == static_cast<ssize_t>(module.image_bytes);
}
// Bounds for header fields, since the API passes no image size.
constexpr Elf64_Half kMaxSections = 4096;
constexpr Elf64_Off kMaxImageBytes = Elf64_Off{1} << 30;

// [offset, offset + size) lies within the first `limit` bytes (no overflow).
bool within(Elf64_Off offset, Elf64_Xword size, Elf64_Off limit) {
  return offset <= limit && size <= limit - offset;
}

// Kernel names of an AMDGPU code object: every symbol "<name>.kd" (the kernel
// descriptor the runtime launches) in its symbol table.
// hipModuleLoadData passes no image size, so the image is taken to end with its section
// header table (where lld, which links every code object, puts it): every section the
// reader follows must lie before it, and every symbol name inside its string table.
// (An e_shoff beyond the real buffer cannot be seen here; the launcher's reader checks the
// file before the runtime gets it.)
hipError_t read_code_object(const unsigned char* image, const std::string& device_target,
                            int device, std::set<std::string>& kernels, std::size_t& image_bytes) {
  Elf64_Ehdr header;
  std::memcpy(&header, image, sizeof header);
  if (std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0)
    return fail(hipErrorInvalidImage, "image is not an ELF file (bad magic)");
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_ident[EI_DATA] != ELFDATA2LSB)
    return fail(hipErrorInvalidImage, "image is not a little-endian ELF64 file");
  if (header.e_machine != EM_AMDGPU || header.e_ident[EI_OSABI] != kElfOsAbiAmdgpuHsa)
    return fail(hipErrorInvalidImage, "image is an ELF file but not an AMDGPU HSA code object "
                                      "(e_machine " + std::to_string(header.e_machine) + ")");
  if (header.e_type != ET_DYN)
    return fail(hipErrorInvalidImage, "AMDGPU ELF is not a linked code object (e_type " +
                                          std::to_string(header.e_type) + ", expected ET_DYN)");
  // ROCm's loader takes code object v4 to v6 (e_ident[EI_ABIVERSION] 2 to 4); an older
  // runtime refuses a newer object although the file itself is sound.
  if (header.e_ident[EI_ABIVERSION] < kMinAbiVersion || header.e_ident[EI_ABIVERSION] > kMaxAbiVersion)
    return fail(hipErrorInvalidImage,
                "code object v" + std::to_string(header.e_ident[EI_ABIVERSION] + 2) +
                    " is not supported by this runtime (v4 to v6)");
  const auto mach = kGfx11Machs.find(header.e_flags & kMachMask);
  if (mach == kGfx11Machs.end()) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%x", header.e_flags & kMachMask);
    return fail(hipErrorInvalidImage,
                std::string("code object is not for a gfx11 target (EF_AMDGPU_MACH 0x") + hex + ")");
  }
  // Like a real device, an emulated one runs only code objects of its own target.
  if (!device_target.empty() && device_target != mach->second)
    return fail(hipErrorNoBinaryForGpu, std::string("code object is for ") + mach->second +
                                            ", the emulated device is " + device_target + " (" +
                                            describe_device(device) + " of " + kEmulatedTargetEnv +
                                            ")");
  if (header.e_shentsize != sizeof(Elf64_Shdr) || header.e_shnum == 0 ||
      header.e_shnum > kMaxSections || header.e_shoff < sizeof header ||
      header.e_shoff > kMaxImageBytes)
    return fail(hipErrorInvalidImage, "code object has no usable section header table");
  image_bytes = header.e_shoff + std::size_t{header.e_shnum} * sizeof(Elf64_Shdr);
  const auto* sections = reinterpret_cast<const Elf64_Shdr*>(image + header.e_shoff);
  const auto outside = [&](Elf64_Half index) {
    return fail(hipErrorInvalidImage, "code object section " + std::to_string(index) +
                                          " lies outside the image (past its section header table)");
  };
  for (Elf64_Half i = 0; i < header.e_shnum; ++i) {
    const Elf64_Shdr& table = sections[i];
    if (table.sh_type != SHT_DYNSYM && table.sh_type != SHT_SYMTAB) continue;
    if (table.sh_entsize != sizeof(Elf64_Sym) || table.sh_link >= header.e_shnum ||
        sections[table.sh_link].sh_type != SHT_STRTAB)
      return fail(hipErrorInvalidImage, "code object has a malformed symbol table");
    const Elf64_Shdr& strings = sections[table.sh_link];
    if (!within(table.sh_offset, table.sh_size, header.e_shoff)) return outside(i);
    if (!within(strings.sh_offset, strings.sh_size, header.e_shoff)) return outside(table.sh_link);
    const char* names = reinterpret_cast<const char*>(image + strings.sh_offset);
    const auto* symbols = reinterpret_cast<const Elf64_Sym*>(image + table.sh_offset);
    for (std::size_t s = 0; s < table.sh_size / sizeof(Elf64_Sym); ++s) {
      const Elf64_Word name_offset = symbols[s].st_name;
      const void* terminator = name_offset < strings.sh_size
                                   ? std::memchr(names + name_offset, '\0', strings.sh_size - name_offset)
                                   : nullptr;
      if (terminator == nullptr)
        return fail(hipErrorInvalidImage, "code object symbol " + std::to_string(s) +
                                              " has a name outside its string table");
      const std::string name = names + name_offset;
      if (name.size() > 3 && name.compare(name.size() - 3, 3, ".kd") == 0)
        kernels.insert(name.substr(0, name.size() - 3));
    }
  }
  return hipSuccess;
}

// Packs kernelParams (one pointer per argument) into the kernarg layout.
std::vector<unsigned char> pack_kernel_params(const RegisteredKernel& kernel, void** params) {
  std::vector<unsigned char> kernarg(kernel.explicit_kernarg_bytes);
  for (std::size_t i = 0; i < kernel.args.size(); ++i)
    std::memcpy(kernarg.data() + kernel.args[i].offset, params[i], kernel.args[i].size);
  return kernarg;
}

}  // namespace

bool register_kernel(const char* name, KernelInvoker invoker, const KernelArgLayout* args,
                     std::uint32_t arg_count, std::uint32_t explicit_kernarg_bytes) {
  kernel_registry()[name] = RegisteredKernel{
      name, invoker, std::vector<KernelArgLayout>(args, args + arg_count), explicit_kernarg_bytes};
  return true;
}

const RegisteredKernel* find_registered_kernel(const std::string& name) {
  const auto found = kernel_registry().find(name);
  return found == kernel_registry().end() ? nullptr : &found->second;
}

}  // namespace rdna_emu::detail

using namespace rdna_emu::detail;

hipError_t hipModuleLoadData(hipModule_t* module, const void* image) {
  if (module == nullptr || image == nullptr)
    return fail(hipErrorInvalidValue, "hipModuleLoadData: module or image is null");
  const std::vector<std::string> devices = emulated_devices();
  if (current_device >= static_cast<int>(devices.size()))
    return fail(hipErrorInvalidDevice, "hipModuleLoadData: the current " +
                                           describe_device(current_device) + " no longer exists");
  auto loaded = std::make_unique<ihipModule_t>();
  loaded->device = current_device;
  loaded->image = static_cast<const unsigned char*>(image);
  const hipError_t status = read_code_object(loaded->image, devices[current_device], current_device,
                                             loaded->kernel_symbols, loaded->image_bytes);
  if (status != hipSuccess) return status;
  loaded->image_digest = digest(loaded->image, loaded->image_bytes);
  std::lock_guard<std::mutex> lock(api_mutex);
  *module = loaded.release();
  live_modules.insert(*module);
  return succeed();
}

hipError_t hipModuleGetFunction(hipFunction_t* function, hipModule_t module, const char* kname) {
  if (function == nullptr || kname == nullptr)
    return fail(hipErrorInvalidValue, "hipModuleGetFunction: function or name is null");
  std::lock_guard<std::mutex> lock(api_mutex);
  if (live_modules.count(module) == 0)
    return fail(hipErrorInvalidHandle, "hipModuleGetFunction: not a loaded module");
  const std::string name = kname;
  // ROCm <= 6.3 abort()s here (clr hipamd/src/hip_code_object.cpp DynCO::getDynFunc calls
  // CheckDeviceIdMatch: guarantee "Device mismatch from where this module is loaded").
  if (module->device != current_device)
    return fail(hipErrorInvalidDevice,
                "hipModuleGetFunction(" + name + "): the module was loaded on " +
                    describe_device(module->device) + " but the current device is " +
                    std::to_string(current_device) +
                    " (ROCm <= 6.3 aborts the process here: 'Device mismatch from where this "
                    "module is loaded'); look functions up with the loading device current");
  std::vector<unsigned char> now;
  if (!read_image_now(*module, now) || digest(now.data(), now.size()) != module->image_digest)
    return fail(hipErrorInvalidImage,
                "hipModuleGetFunction(" + name + "): the image given to hipModuleLoadData was " +
                    "freed or overwritten; HIP keeps that pointer (no copy) and reads it again, "
                    "so the buffer must stay alive until hipModuleUnload");
  if (module->kernel_symbols.count(name) == 0)
    return fail(hipErrorNotFound, "kernel " + name + " is not defined in the code object");
  const RegisteredKernel* kernel = find_registered_kernel(name);
  if (kernel == nullptr)
    return fail(hipErrorNotFound, "kernel " + name +
                                      " is in the code object but not in the emulator library "
                                      "(its source was not compiled into it)");
  auto& slot = module->functions[name];
  if (!slot) {
    slot = std::make_unique<ihipModuleSymbol_t>(ihipModuleSymbol_t{kernel, module->device});
    live_functions.insert(slot.get());
  }
  *function = slot.get();
  return succeed();
}

hipError_t hipModuleLaunchKernel(hipFunction_t f, unsigned int gridDimX, unsigned int gridDimY,
                                 unsigned int gridDimZ, unsigned int blockDimX,
                                 unsigned int blockDimY, unsigned int blockDimZ,
                                 unsigned int sharedMemBytes, hipStream_t stream,
                                 void** kernelParams, void** extra) {
  // Launches complete before returning, so every stream is in order; streams matter only
  // for which device they belong to.
  std::lock_guard<std::mutex> lock(api_mutex);
  if (live_functions.count(f) == 0)
    return fail(hipErrorInvalidHandle, "hipModuleLaunchKernel: not a function of a loaded module");
  const RegisteredKernel& kernel = *f->kernel;
  const std::string who = "hipModuleLaunchKernel(" + kernel.name + "): ";
  if (stream != nullptr && live_streams.count(stream) == 0)
    return fail(hipErrorInvalidHandle, who + "not a stream of this runtime");
  // The null stream is the current device's; another device's stream is refused.
  if (stream != nullptr && stream->device != current_device)
    return fail(hipErrorInvalidHandle, who + "the stream belongs to " +
                                           describe_device(stream->device) +
                                           " but the current device is " +
                                           std::to_string(current_device));
  // clr ihipLaunchKernel_validate: a kernel without a device kernel for the launch device
  // is hipErrorInvalidDevice.
  if (f->device != current_device)
    return fail(hipErrorInvalidDevice, who + "the function's module was loaded on " +
                                           describe_device(f->device) +
                                           " but the launch is on device " +
                                           std::to_string(current_device) +
                                           " (make the kernel's device current)");
  if (gridDimX == 0 || gridDimY == 0 || gridDimZ == 0 || blockDimX == 0 || blockDimY == 0 ||
      blockDimZ == 0)
    return fail(hipErrorInvalidValue, who + "grid and block dimensions must be positive");
  if (std::uint64_t{blockDimX} * blockDimY * blockDimZ > 1024)
    return fail(hipErrorInvalidValue, who + "more than 1024 threads per workgroup");
  if (std::uint64_t{gridDimX} * blockDimX >= (std::uint64_t{1} << 32) ||
      std::uint64_t{gridDimY} * blockDimY >= (std::uint64_t{1} << 32) ||
      std::uint64_t{gridDimZ} * blockDimZ >= (std::uint64_t{1} << 32))
    return fail(hipErrorInvalidValue, who + "grid x block exceeds 2^32 work-items in a dimension");
  if (sharedMemBytes != 0)
    return fail(hipErrorInvalidValue,
                who + "dynamic LDS is not emulated (kernels use workgroup_lds<T>())");
  if ((kernelParams == nullptr) == (extra == nullptr))
    return fail(hipErrorInvalidValue, who + "pass exactly one of kernelParams and extra");

  std::vector<unsigned char> kernarg;
  if (kernelParams != nullptr) {
    kernarg = pack_kernel_params(kernel, kernelParams);
  } else {
    const void* buffer = nullptr;
    const std::size_t* size = nullptr;
    for (std::size_t i = 0; extra[i] != HIP_LAUNCH_PARAM_END; i += 2) {
      if (extra[i] == HIP_LAUNCH_PARAM_BUFFER_POINTER)
        buffer = extra[i + 1];
      else if (extra[i] == HIP_LAUNCH_PARAM_BUFFER_SIZE)
        size = static_cast<const std::size_t*>(extra[i + 1]);
      else
        return fail(hipErrorInvalidValue, who + "unknown key in extra (expected "
                                                "HIP_LAUNCH_PARAM_BUFFER_POINTER/_SIZE/_END)");
    }
    if (buffer == nullptr || size == nullptr)
      return fail(hipErrorInvalidValue, who + "extra lacks the buffer pointer or its size");
    // The buffer may carry the hidden arguments after the explicit ones; the
    // emulated kernel reads only the explicit ones.
    if (*size < kernel.explicit_kernarg_bytes)
      return fail(hipErrorInvalidValue, who + "argument buffer of " + std::to_string(*size) +
                                            " bytes is smaller than the " +
                                            std::to_string(kernel.explicit_kernarg_bytes) +
                                            " bytes of the kernel's arguments");
    const auto* bytes = static_cast<const unsigned char*>(buffer);
    kernarg.assign(bytes, bytes + kernel.explicit_kernarg_bytes);
  }
  run_kernel(kernel, kernarg.data(), rdna_emu::Dim3{gridDimX, gridDimY, gridDimZ},
             rdna_emu::Dim3{blockDimX, blockDimY, blockDimZ});
  return succeed();
}

hipError_t hipModuleUnload(hipModule_t module) {
  std::lock_guard<std::mutex> lock(api_mutex);
  if (live_modules.erase(module) == 0)
    return fail(hipErrorInvalidHandle, "hipModuleUnload: not a loaded module");
  for (const auto& [name, function] : module->functions) live_functions.erase(function.get());
  delete module;
  return succeed();
}

hipError_t hipGetDeviceCount(int* count) {
  if (count == nullptr) return fail(hipErrorInvalidValue, "hipGetDeviceCount: count is null");
  *count = static_cast<int>(emulated_devices().size());
  return succeed();
}

hipError_t hipGetDevice(int* device) {
  if (device == nullptr) return fail(hipErrorInvalidValue, "hipGetDevice: device is null");
  *device = current_device;
  return succeed();
}

hipError_t hipSetDevice(int device) {
  const int count = static_cast<int>(emulated_devices().size());
  if (device < 0 || device >= count)
    return fail(hipErrorInvalidDevice, "hipSetDevice(" + std::to_string(device) + "): " +
                                           std::to_string(count) + " emulated device(s) (" +
                                           kEmulatedTargetEnv + ")");
  current_device = device;
  return succeed();
}

hipError_t hipStreamCreate(hipStream_t* stream) {
  if (stream == nullptr) return fail(hipErrorInvalidValue, "hipStreamCreate: stream is null");
  std::lock_guard<std::mutex> lock(api_mutex);
  *stream = new ihipStream_t{current_device};
  live_streams.insert(*stream);
  return succeed();
}

hipError_t hipStreamDestroy(hipStream_t stream) {
  std::lock_guard<std::mutex> lock(api_mutex);
  if (live_streams.erase(stream) == 0)
    return fail(hipErrorInvalidHandle, "hipStreamDestroy: not a stream of this runtime");
  delete stream;
  return succeed();
}

hipError_t hipGetLastError(void) {
  const hipError_t error = last_error;
  last_error = hipSuccess;
  return error;
}

hipError_t hipPeekAtLastError(void) { return last_error; }

// Launches are synchronous: there is never outstanding work.
hipError_t hipStreamSynchronize(hipStream_t stream) {
  std::lock_guard<std::mutex> lock(api_mutex);
  if (stream != nullptr && live_streams.count(stream) == 0)
    return fail(hipErrorInvalidHandle, "hipStreamSynchronize: not a stream of this runtime");
  return succeed();
}

hipError_t hipDeviceSynchronize(void) { return hipSuccess; }

const char* hipGetErrorName(hipError_t hip_error) {
  switch (hip_error) {
    case hipSuccess:
      return "hipSuccess";
    case hipErrorInvalidValue:
      return "hipErrorInvalidValue";
    case hipErrorInvalidDevice:
      return "hipErrorInvalidDevice";
    case hipErrorInvalidImage:
      return "hipErrorInvalidImage";
    case hipErrorInvalidHandle:
      return "hipErrorInvalidHandle";
    case hipErrorNotFound:
      return "hipErrorNotFound";
    case hipErrorNoBinaryForGpu:
      return "hipErrorNoBinaryForGpu";
    default:
      return "hipErrorUnknown";
  }
}

const char* hipGetErrorString(hipError_t hipError) {
  switch (hipError) {
    case hipSuccess:
      return "no error";
    case hipErrorInvalidValue:
      return "invalid argument";
    case hipErrorInvalidDevice:
      return "invalid device ordinal";
    case hipErrorInvalidImage:
      return "device kernel image is invalid";
    case hipErrorInvalidHandle:
      return "invalid resource handle";
    case hipErrorNotFound:
      return "named symbol not found";
    case hipErrorNoBinaryForGpu:
      return "no kernel image is available for execution on the device";
    default:
      return "unknown error";
  }
}

// Emulator extensions.

// The detail of the last failed call on this thread.
extern "C" const char* rdnaEmulatorLastErrorMessage(void) { return last_message.c_str(); }

// The explicit arguments of a registered kernel as the emulator unpacks them
// (offset and size of each, in order), for comparing with a code object's
// metadata. Returns the argument count (writing at most `capacity` entries),
// or -1 when no kernel of that name is compiled into the library.
extern "C" int rdnaEmulatorKernelArgs(const char* name, unsigned* offsets, unsigned* sizes,
                                      int capacity) {
  const RegisteredKernel* kernel = name ? find_registered_kernel(name) : nullptr;
  if (kernel == nullptr) return -1;
  for (std::size_t i = 0; i < kernel->args.size() && static_cast<int>(i) < capacity; ++i) {
    offsets[i] = kernel->args[i].offset;
    sizes[i] = kernel->args[i].size;
  }
  return static_cast<int>(kernel->args.size());
}
