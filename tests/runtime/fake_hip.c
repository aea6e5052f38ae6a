/* A recording stand-in for libamdhip64's module API (runtime tests only): checks the
 * `extra` array the way ROCm's hipModuleLaunchKernel does and keeps a copy of the last
 * launch so Python can compare it with what it meant to send. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HIP_LAUNCH_PARAM_BUFFER_POINTER ((void*)0x01)
#define HIP_LAUNCH_PARAM_BUFFER_SIZE ((void*)0x02)
#define HIP_LAUNCH_PARAM_END ((void*)0x03)

static int modules_loaded;
static int modules_unloaded;
static int current_device;
static unsigned last_dims[7];
static void* last_stream;
static int last_launch_device = -1;
static int device_switches;
static unsigned char last_kernargs[1024];
static size_t last_kernargs_size;
static const void* last_function;
static char function_names[16][128];

int hipModuleLoadData(void** module, const void* image) {
  if (memcmp(image, "\177ELF", 4) != 0) return 200; /* hipErrorInvalidImage */
  *module = (void*)(uintptr_t)(0x1000 + 0x100 * current_device + ++modules_loaded);
  return 0;
}

int hipModuleGetFunction(void** function, void* module, const char* name) {
  (void)module;
  if (strcmp(name, "probe_missing_in_runtime") == 0) return 500; /* hipErrorNotFound */
  for (int i = 0; i < 16; ++i) {
    if (function_names[i][0] == 0 || strcmp(function_names[i], name) == 0) {
      strncpy(function_names[i], name, 127);
      *function = function_names[i];
      return 0;
    }
  }
  return 1;
}

int hipModuleLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                          unsigned bz, unsigned shared, void* stream, void** params, void** extra) {
  if (params != NULL || extra == NULL) return 1;
  if (extra[0] != HIP_LAUNCH_PARAM_BUFFER_POINTER || extra[2] != HIP_LAUNCH_PARAM_BUFFER_SIZE ||
      extra[4] != HIP_LAUNCH_PARAM_END)
    return 3; /* hipErrorNotInitialized, as ROCm does */
  size_t size = *(size_t*)extra[3];
  if (size > sizeof(last_kernargs)) return 1;
  memcpy(last_kernargs, extra[1], size);
  last_kernargs_size = size;
  unsigned dims[7] = {gx, gy, gz, bx, by, bz, shared};
  memcpy(last_dims, dims, sizeof(dims));
  last_stream = stream;
  last_launch_device = current_device;
  last_function = f;
  return 0;
}

int hipModuleUnload(void* module) { (void)module; ++modules_unloaded; return 0; }
int hipGetLastError(void) { return 0; }
int hipGetDevice(int* device) { *device = current_device; return 0; }
int hipSetDevice(int device) {
  if (device < 0 || device > 1) return 101; /* hipErrorInvalidDevice */
  current_device = device;
  ++device_switches;
  return 0;
}

const char* hipGetErrorString(int code) {
  switch (code) {
    case 0: return "hipSuccess";
    case 200: return "hipErrorInvalidImage";
    case 500: return "hipErrorNotFound";
    default: return "hipErrorUnknown";
  }
}

/* Test accessors. */
int fake_modules_loaded(void) { return modules_loaded; }
int fake_current_device(void) { return current_device; }
int fake_last_launch_device(void) { return last_launch_device; }
int fake_device_switches(void) { return device_switches; }
const char* fake_last_function(void) { return (const char*)last_function; }
void* fake_last_stream(void) { return last_stream; }
size_t fake_last_kernargs(unsigned char* out, unsigned* dims) {
  memcpy(out, last_kernargs, last_kernargs_size);
  memcpy(dims, last_dims, sizeof(last_dims));
  return last_kernargs_size;
}
