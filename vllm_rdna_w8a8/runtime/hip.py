"""The HIP module API through ctypes: load a code object, get a kernel, launch it.

The library is the libamdhip64.so that ROCm torch has already loaded or, in emulated mode
(VLLM_RDNA_W8A8_EMULATE set), the emulator's stand-in runtime, which exports the same
functions with the same ABI and return codes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
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
        self._bind("hipGetDevice", [ctypes.POINTER(ctypes.c_int)])
        self._bind("hipSetDevice", [ctypes.c_int])
        # Unchecked twin for the launch path's device compare (see _launch_unchecked).
        self._get_device_unchecked = library["hipGetDevice"]
        self._get_device_unchecked.restype = ctypes.c_int
        self._bind("hipGetLastError", [])
        library.hipGetErrorString.restype = ctypes.c_char_p
        library.hipGetErrorString.argtypes = [ctypes.c_int]
        self._detail = getattr(library, "rdnaEmulatorLastErrorMessage", None)
        if self._detail is not None:
            self._detail.restype = ctypes.c_char_p
            self._detail.argtypes = []
        # HIP keeps a pointer to the image it loaded, not a copy (clr hip_code_object.cpp,
        # and debuggers and profilers read it again): each image lives as long as its module.
        self._images: dict[int, ctypes.Array] = {}

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

    def fail(self, function: str, code: int) -> HipError:
        """The HipError for a failed call, with HIP's last error cleared: from HIP 7.0 it stays
        set until hipGetLastError reads it, and PyTorch checks it after its own launches, so
        an error handled here (e.g. vLLM falling back to its kernels) must not surface later
        in an unrelated torch op. hipGetLastError clears it in every HIP version."""
        error = HipError(function, code, self.error_string(code))
        self.library.hipGetLastError()
        return error

    def check(self, function: str, code: int) -> None:
        if code != HIP_SUCCESS:
            raise self.fail(function, code)

    def current_device(self) -> int:
        device = ctypes.c_int()
        self.check("hipGetDevice", self.library.hipGetDevice(ctypes.byref(device)))
        return device.value

    @contextlib.contextmanager
    def on_device(self, device_index: int) -> Iterator[None]:
        """`device_index` current for the block (the calling thread's current device is
        restored after it). Modules belong to the device current when they are loaded and
        may be used only while it is current."""
        previous = self.current_device()
        if previous == device_index:
            yield
            return
        self.check("hipSetDevice", self.library.hipSetDevice(device_index))
        try:
            yield
        finally:
            self.check("hipSetDevice", self.library.hipSetDevice(previous))

    def load_module(self, image: bytes, device_index: int | None = None) -> int:
        """hipModuleLoadData on `device_index` (default: the current device). The image
        buffer is kept until `unload_module`."""
        if device_index is not None:
            with self.on_device(device_index):
                return self.load_module(image)
        module = _c_void_p()
        buffer = ctypes.create_string_buffer(image, len(image))
        self.check("hipModuleLoadData", self.library.hipModuleLoadData(ctypes.byref(module), buffer))
        handle = module.value or 0
        self._images[handle] = buffer
        return handle

    def get_function(self, module: int, name: str) -> ctypes.c_void_p:
        """The hipFunction_t of kernel `name`, kept as a c_void_p (what launch passes). Call
        it with the module's device current."""
        function = _c_void_p()
        code = self.library.hipModuleGetFunction(ctypes.byref(function), module, name.encode())
        if code != HIP_SUCCESS:
            raise self.fail(f"hipModuleGetFunction({name!r})", code)
        return function

    def unload_module(self, module: int) -> None:
        self.check("hipModuleUnload", self.library.hipModuleUnload(module))
        self._images.pop(module, None)

    def launch(self, function: ctypes.c_void_p, grid: tuple[int, int, int],
               block: tuple[int, int, int], kernargs: KernargBuffer, stream: int,
               name: str, device_index: int) -> None:
        """hipModuleLaunchKernel with the packed-buffer `extra` form; no dynamic LDS. The
        runtime copies the kernarg bytes during the call, so the buffer may be reused.
        Dimensions must be ints in [1, MAX_LAUNCH_DIM] (the caller checks).

        `device_index` (the function's device, that of `stream`) is made current for the
        launch and the previous device restored: HIP refuses a stream of another device
        than the current one, and the null stream is the current device's. One hipGetDevice
        when it already is current."""
        current = ctypes.c_int()
        self._get_device_unchecked(ctypes.byref(current))
        switch = current.value != device_index
        if switch:
            self.check("hipSetDevice", self.library.hipSetDevice(device_index))
        try:
            code = self._launch_unchecked(function, grid[0], grid[1], grid[2], block[0], block[1],
                                          block[2], 0, _c_void_p(stream) if stream else None, None,
                                          kernargs.extra)
        finally:
            if switch:
                self.check("hipSetDevice", self.library.hipSetDevice(current.value))
        if code != HIP_SUCCESS:
            raise self.fail(f"hipModuleLaunchKernel({name})", code)


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


HIP_LIBRARY_NAME = "libamdhip64.so"
PROC_MAPS = Path("/proc/self/maps")


def mapped_hip_libraries(maps: Path = PROC_MAPS) -> list[Path]:
    """The distinct libamdhip64 files mapped into this process, in mapping order (a file
    is its (device, inode) pair from the maps line, however many segments it has)."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return []
    found: dict[tuple[str, str], Path] = {}
    for line in lines:
        fields = line.split(maxsplit=5)  # address perms offset dev inode path
        if len(fields) == 6 and Path(fields[5]).name.startswith(HIP_LIBRARY_NAME):
            found.setdefault((fields[3], fields[4]), Path(fields[5]))
    return list(found.values())


def _rocm_torch_library(maps: Path = PROC_MAPS, torch_lib_dir: Path | None = None) -> Path:
    """The libamdhip64 that torch uses: the one already mapped into this process (torch's
    streams and pointers belong to that HIP runtime; opening another file would start a
    second runtime, in which they are invalid), else torch/lib's. Triton's AMD driver
    chooses the same way (third_party/amd/backend/driver.py,
    _get_path_to_hip_runtime_dylib: the already-mmapped library first)."""
    import torch

    mapped = mapped_hip_libraries(maps)
    if len(mapped) > 1:
        raise HipError("dlopen", -1, f"{len(mapped)} different {HIP_LIBRARY_NAME} files are mapped into this "
                                     f"process ({', '.join(map(str, mapped))}): each is its own HIP runtime "
                                     "and their streams and pointers do not mix; load only one ROCm's "
                                     "library (check LD_LIBRARY_PATH, LD_PRELOAD and other ROCm packages)")
    if mapped:
        return mapped[0]
    candidate = (torch_lib_dir or Path(torch.__file__).parent / "lib") / HIP_LIBRARY_NAME
    if candidate.is_file():
        return candidate
    raise HipError("dlopen", -1, f"{HIP_LIBRARY_NAME} is not loaded by this process nor in {candidate.parent} "
                                 f"(torch {torch.__version__}, hip {torch.version.hip})")


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
            from vllm_rdna_w8a8 import settings

            from .device import torch_is_rocm

            if settings.emulated_target() is not None:
                _runtime = load_runtime(_emulator_library())
            elif torch_is_rocm():
                _runtime = load_runtime(_rocm_torch_library())
            else:
                raise HipError("dlopen", -1, "no HIP runtime: torch is not a ROCm build and "
                                             "VLLM_RDNA_W8A8_EMULATE is not set")
        return _runtime
