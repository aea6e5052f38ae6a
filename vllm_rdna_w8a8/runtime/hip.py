"""The HIP module API through ctypes: load a code object, get a kernel, launch it.

The library is the libamdhip64.so that ROCm torch has already loaded or, in emulated mode
(VLLM_RDNA_W8A8_EMULATE set), the emulator's stand-in runtime, which exports the same
functions with the same ABI and return codes.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

# From /usr/include/hip/hip_runtime_api.h (identical in the stand-in runtime).
HIP_SUCCESS = 0
HIP_LAUNCH_PARAM_BUFFER_POINTER = 0x01
HIP_LAUNCH_PARAM_BUFFER_SIZE = 0x02
HIP_LAUNCH_PARAM_END = 0x03
# Launch dimensions travel as C ints on the hot path; no real launch comes near this.
MAX_LAUNCH_DIM = 2**31 - 1
# A prebuilt stand-in runtime to use in emulated mode (e.g. the AddressSanitizer build that
# a test subprocess preloads) instead of building the default one.
EMULATOR_LIBRARY_ENV = "VLLM_RDNA_W8A8_EMULATOR_LIB"

_c_void_p = ctypes.c_void_p
_c_uint = ctypes.c_uint


class HipError(RuntimeError):
    """A HIP call failed: names the function, the error code and HIP's message."""

    def __init__(self, function: str, code: int, message: str) -> None:
        self.function = function
        self.code = code
        super().__init__(f"{function} failed with error {code}: {message}")


class HipRuntime:
    """Bound HIP module functions of one loaded library."""

    def __init__(self, library: ctypes.CDLL, origin: str) -> None:
        self.library = library
        self.origin = origin  # where the library came from, for messages
        self._bind("hipModuleLoadData", [ctypes.POINTER(_c_void_p), _c_void_p])
        self._bind("hipModuleGetFunction", [ctypes.POINTER(_c_void_p), _c_void_p, ctypes.c_char_p])
        self._bind(
            "hipModuleLaunchKernel",
            [_c_void_p, _c_uint, _c_uint, _c_uint, _c_uint, _c_uint, _c_uint, _c_uint,
             _c_void_p, ctypes.POINTER(_c_void_p), ctypes.POINTER(_c_void_p)],
        )
        # The hot path calls a second handle without argtypes (their conversions cost more
        # than the call): every argument is then passed ready-made, dims as C ints.
        self._launch_unchecked = library["hipModuleLaunchKernel"]
        self._launch_unchecked.restype = ctypes.c_int
        self._bind("hipModuleUnload", [_c_void_p])
        library.hipGetErrorString.restype = ctypes.c_char_p
        library.hipGetErrorString.argtypes = [ctypes.c_int]
        self._detail = getattr(library, "rdnaEmulatorLastErrorMessage", None)
        if self._detail is not None:
            self._detail.restype = ctypes.c_char_p
            self._detail.argtypes = []
        # Only needed with several devices; the stand-in runtime has one device.
        self._has_device_switch = hasattr(library, "hipSetDevice") and hasattr(library, "hipGetDevice")
        if self._has_device_switch:
            self._bind("hipGetDevice", [ctypes.POINTER(ctypes.c_int)])
            self._bind("hipSetDevice", [ctypes.c_int])

    def _bind(self, name: str, argtypes: list[type]) -> ctypes._CFuncPtr:
        try:
            function = getattr(self.library, name)
        except AttributeError:
            raise HipError(name, -1, f"not exported by {self.origin}") from None
        function.restype = ctypes.c_int
        function.argtypes = argtypes
        return function

    def error_string(self, code: int) -> str:
        message = self.library.hipGetErrorString(code)
        text = message.decode(errors="replace") if message else "unknown error"
        if self._detail is not None:  # the stand-in runtime says what exactly was wrong
            detail = self._detail()
            if detail:
                text += f" ({detail.decode(errors='replace')})"
        return text

    def check(self, function: str, code: int) -> None:
        if code != HIP_SUCCESS:
            raise HipError(function, code, self.error_string(code))

    def load_module(self, image: bytes, device_index: int = 0) -> int:
        """hipModuleLoadData on `device_index` (modules belong to the current device)."""
        module = _c_void_p()
        buffer = ctypes.create_string_buffer(image, len(image))
        if not self._has_device_switch:
            if device_index != 0:
                raise HipError("hipSetDevice", -1, f"{self.origin} has one device; asked for {device_index}")
            self.check("hipModuleLoadData", self.library.hipModuleLoadData(ctypes.byref(module), buffer))
            return module.value or 0
        previous = ctypes.c_int()
        self.check("hipGetDevice", self.library.hipGetDevice(ctypes.byref(previous)))
        self.check("hipSetDevice", self.library.hipSetDevice(device_index))
        try:
            self.check("hipModuleLoadData", self.library.hipModuleLoadData(ctypes.byref(module), buffer))
        finally:
            self.check("hipSetDevice", self.library.hipSetDevice(previous.value))
        return module.value or 0

    def get_function(self, module: int, name: str) -> ctypes.c_void_p:
        """The hipFunction_t of kernel `name`, kept as a c_void_p (what launch passes)."""
        function = _c_void_p()
        code = self.library.hipModuleGetFunction(ctypes.byref(function), module, name.encode())
        if code != HIP_SUCCESS:
            raise HipError(f"hipModuleGetFunction({name!r})", code, self.error_string(code))
        return function

    def unload_module(self, module: int) -> None:
        self.check("hipModuleUnload", self.library.hipModuleUnload(module))

    def launch(self, function: ctypes.c_void_p, grid: tuple[int, int, int],
               block: tuple[int, int, int], kernargs: KernargBuffer, stream: int,
               name: str) -> None:
        """hipModuleLaunchKernel with the packed-buffer `extra` form; no dynamic LDS. The
        runtime copies the kernarg bytes during the call, so the buffer may be reused.
        Dimensions must be ints in [1, MAX_LAUNCH_DIM] (the caller checks)."""
        code = self._launch_unchecked(function, grid[0], grid[1], grid[2], block[0], block[1],
                                      block[2], 0, _c_void_p(stream) if stream else None, None,
                                      kernargs.extra)
        if code != HIP_SUCCESS:
            raise HipError(f"hipModuleLaunchKernel({name})", code, self.error_string(code))


class KernargBuffer:
    """A kernarg buffer of fixed size and the `extra` array that passes it to
    hipModuleLaunchKernel: {BUFFER_POINTER, &data, BUFFER_SIZE, &size, END}."""

    def __init__(self, size: int) -> None:
        self.data = ctypes.create_string_buffer(max(size, 1))
        self.size = ctypes.c_size_t(size)
        self.extra = (_c_void_p * 5)(
            HIP_LAUNCH_PARAM_BUFFER_POINTER, ctypes.addressof(self.data),
            HIP_LAUNCH_PARAM_BUFFER_SIZE, ctypes.addressof(self.size),
            HIP_LAUNCH_PARAM_END,
        )


_runtime: HipRuntime | None = None
_runtime_lock = threading.Lock()


def _rocm_torch_library() -> Path:
    """libamdhip64.so as ROCm torch loaded it: torch/lib first, else what the process mapped."""
    import torch

    candidate = Path(torch.__file__).parent / "lib" / "libamdhip64.so"
    if candidate.is_file():
        return candidate
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if Path(path).name.startswith("libamdhip64.so"):
                    return Path(path)
    except OSError:
        pass
    raise HipError("dlopen", -1, f"libamdhip64.so not found in {candidate.parent} nor loaded "
                                 f"by this process (torch {torch.__version__}, hip {torch.version.hip})")


def _emulator_library() -> Path:
    prebuilt = os.environ.get(EMULATOR_LIBRARY_ENV, "").strip()
    if prebuilt:
        if not Path(prebuilt).is_file():
            problem = "is a directory, not a library file" if Path(prebuilt).is_dir() else "does not exist"
            raise HipError("dlopen", -1, f"${EMULATOR_LIBRARY_ENV}={prebuilt!r} {problem}")
        return Path(prebuilt)
    from vllm_rdna_w8a8.emulation import build_emulator

    return build_emulator()


def load_runtime(library_path: str | Path) -> HipRuntime:
    """Bind the HIP module API of the library at `library_path`."""
    try:
        library = ctypes.CDLL(str(library_path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise HipError("dlopen", -1, f"cannot load {library_path}: {exc}") from exc
    return HipRuntime(library, str(library_path))


def get_runtime() -> HipRuntime:
    """The process's HIP runtime: the emulator's in emulated mode, else ROCm torch's."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            from .device import emulated_target, torch_is_rocm

            if emulated_target() is not None:
                _runtime = load_runtime(_emulator_library())
            elif torch_is_rocm():
                _runtime = load_runtime(_rocm_torch_library())
            else:
                raise HipError("dlopen", -1, "no HIP runtime: torch is not a ROCm build and "
                                             "VLLM_RDNA_W8A8_EMULATE is not set")
        return _runtime
