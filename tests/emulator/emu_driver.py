"""Drives the emulator's stand-in HIP runtime through ctypes, like runtime/hip.py does.

Used in-process by the tests and, as a script, in subprocesses that load the sanitized
library (with sanitizer_env()) or run kernels that must abort:

    python emu_driver.py LIBRARY OBJECTS_DIR SCENARIO
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# <hip/hip_runtime_api.h>
HIP_SUCCESS = 0
HIP_ERROR_INVALID_VALUE = 1
HIP_ERROR_INVALID_DEVICE = 101
HIP_ERROR_INVALID_IMAGE = 200
HIP_ERROR_NO_BINARY_FOR_GPU = 209
HIP_ERROR_INVALID_HANDLE = 400
HIP_ERROR_NOT_FOUND = 500
HIP_LAUNCH_PARAM_BUFFER_POINTER = 0x01
HIP_LAUNCH_PARAM_BUFFER_SIZE = 0x02
HIP_LAUNCH_PARAM_END = 0x03

GFX1100 = "gfx1100"
TEST_KERNELS_DIR = Path(__file__).resolve().parent / "kernels"
# The int32 every 4 bytes of unwritten LDS read as (rdna_emulator.h: kLdsPoisonByte 0xA5).
LDS_POISON_INT32 = np.frombuffer(bytes([0xA5] * 4), dtype=np.int32)[0]

KernelArg = ctypes._SimpleCData  # c_void_p, c_int32, c_float, ... by value


class HipCallError(RuntimeError):
    def __init__(self, call: str, code: int, message: str) -> None:
        super().__init__(f"{call} failed with {code}: {message}")
        self.code = code


def emulator_test_sources() -> list[Path]:
    """The test kernels: tests/emulator/kernels/*.hip."""
    return sorted(TEST_KERNELS_DIR.glob("*.hip"))


def pointer(array: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(array.ctypes.data)


def pack_kernargs(args: Sequence[KernelArg]) -> bytes:
    """Each argument at its natural alignment, in order (the AMDGPU kernarg layout)."""
    packed = bytearray()
    for arg in args:
        alignment = ctypes.alignment(type(arg))
        packed += bytes(-len(packed) % alignment)
        packed += bytes(arg)
    return bytes(packed)


@dataclass
class Module:
    handle: ctypes.c_void_p
    image: bytes  # kept alive as long as the module


class StandInRuntime:
    def __init__(self, library: Path) -> None:
        self.lib = ctypes.CDLL(str(library))
        lib = self.lib
        lib.hipModuleLoadData.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
        lib.hipModuleGetFunction.argtypes = [
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_char_p]
        lib.hipModuleLaunchKernel.argtypes = [
            ctypes.c_void_p, *[ctypes.c_uint] * 7, ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]
        lib.hipModuleUnload.argtypes = [ctypes.c_void_p]
        lib.hipGetErrorString.restype = ctypes.c_char_p
        lib.hipGetErrorName.restype = ctypes.c_char_p
        lib.rdnaEmulatorLastErrorMessage.restype = ctypes.c_char_p
        lib.rdnaEmulatorKernelArgs.argtypes = [
            ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
            ctypes.c_int]
        lib.rdnaEmulatorKernelArgs.restype = ctypes.c_int
        for name in ("hipModuleLoadData", "hipModuleGetFunction", "hipModuleLaunchKernel",
                     "hipModuleUnload", "hipGetLastError"):
            getattr(lib, name).restype = ctypes.c_int

    def last_message(self) -> str:
        return self.lib.rdnaEmulatorLastErrorMessage().decode()

    def kernel_args(self, name: str) -> list[tuple[int, int]] | None:
        """(offset, size) of each explicit argument as the emulator unpacks them."""
        capacity = 64
        offsets, sizes = (ctypes.c_uint * capacity)(), (ctypes.c_uint * capacity)()
        count = self.lib.rdnaEmulatorKernelArgs(name.encode(), offsets, sizes, capacity)
        if count < 0:
            return None
        assert count <= capacity
        return list(zip(offsets[:count], sizes[:count]))

    def check(self, call: str, code: int) -> None:
        if code != HIP_SUCCESS:
            raise HipCallError(call, code, self.last_message())

    def load_module(self, image: bytes) -> Module:
        handle = ctypes.c_void_p()
        self.check("hipModuleLoadData", self.lib.hipModuleLoadData(ctypes.byref(handle), image))
        return Module(handle, image)

    def load_object(self, path: Path) -> Module:
        return self.load_module(path.read_bytes())

    def get_function(self, module: Module, name: str) -> ctypes.c_void_p:
        function = ctypes.c_void_p()
        self.check("hipModuleGetFunction", self.lib.hipModuleGetFunction(
            ctypes.byref(function), module.handle, name.encode()))
        return function

    def launch_status(self, function: ctypes.c_void_p, grid: tuple[int, int, int],
                      block: tuple[int, int, int], buffer: bytes,
                      declared_size: int | None = None, shared_bytes: int = 0,
                      stream: ctypes.c_void_p | None = None) -> int:
        """hipModuleLaunchKernel with the packed `buffer` through `extra`; the status code."""
        storage = ctypes.create_string_buffer(buffer, max(len(buffer), 1))
        size = ctypes.c_size_t(len(buffer) if declared_size is None else declared_size)
        extra = (ctypes.c_void_p * 5)(
            HIP_LAUNCH_PARAM_BUFFER_POINTER, ctypes.addressof(storage),
            HIP_LAUNCH_PARAM_BUFFER_SIZE, ctypes.addressof(size), HIP_LAUNCH_PARAM_END)
        return self.lib.hipModuleLaunchKernel(
            function, *grid, *block, shared_bytes, stream, None, extra)

    def launch(self, function: ctypes.c_void_p, grid: tuple[int, int, int],
               block: tuple[int, int, int], args: Sequence[KernelArg]) -> None:
        self.check("hipModuleLaunchKernel",
                   self.launch_status(function, grid, block, pack_kernargs(args)))

    def unload(self, module: Module) -> int:
        return self.lib.hipModuleUnload(module.handle)


class KernelRunner:
    """Loads the gfx1100 code objects (OBJECTS_DIR/gfx1100/<stem>.hsaco) of the test
    kernels and launches their kernels by name."""

    def __init__(self, runtime: StandInRuntime, objects_dir: Path) -> None:
        self.runtime = runtime
        self.objects_dir = objects_dir
        self._modules: dict[str, Module] = {}

    def function(self, object_stem: str, kernel: str) -> ctypes.c_void_p:
        if object_stem not in self._modules:
            self._modules[object_stem] = self.runtime.load_object(
                self.objects_dir / GFX1100 / f"{object_stem}.hsaco")
        return self.runtime.get_function(self._modules[object_stem], kernel)

    def run(self, object_stem: str, kernel: str, grid: int | tuple[int, int, int],
            block: int | tuple[int, int, int], *args: KernelArg) -> None:
        grid3 = (grid, 1, 1) if isinstance(grid, int) else grid
        block3 = (block, 1, 1) if isinstance(block, int) else block
        self.runtime.launch(self.function(object_stem, kernel), grid3, block3, args)


# --- Reference math (numpy, exact) ---------------------------------------------------

def gemm_i8_reference(a: np.ndarray, b_nk: np.ndarray) -> np.ndarray:
    """A[M][K] x B[N][K]^T in int64 (exact)."""
    return a.astype(np.int64) @ b_nk.astype(np.int64).T


# --- Scenarios for subprocess runs ---------------------------------------------------

def scenario_wmma_signed(runner: KernelRunner) -> None:
    """A signed int8 WMMA chain with extremes (the sanitized library must agree exactly)."""
    rng = np.random.default_rng(7)
    waves, k_len = 4, 64
    a = rng.integers(-128, 127, size=(waves, 16, k_len), endpoint=True, dtype=np.int8)
    b = rng.integers(-128, 127, size=(waves, 16, k_len), endpoint=True, dtype=np.int8)
    a[0, 0, :] = -128
    b[0, 0, :] = -128
    c = rng.integers(-1000, 1000, size=(waves, 16, 16), dtype=np.int32)
    d = np.zeros_like(c)
    runner.run("wmma_ops", "emu_test_wmma_i8_ss", 2, 64, pointer(a), pointer(b), pointer(c),
               pointer(d), ctypes.c_int32(k_len))
    expected = np.einsum("wmk,wnk->wmn", a.astype(np.int64), b.astype(np.int64)) + c
    np.testing.assert_array_equal(d, expected)
    print("wmma_signed ok")


def lds_exchange_expected(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """emu_test_lds_exchange on workgroups of 128: thread t reads slot (t + 37) % 128,
    then receives twice the value thread 127 - t read."""
    blocks = values.reshape(-1, 128)
    first = np.roll(blocks, -37, axis=1)
    second = 2 * first[:, ::-1]
    return first.reshape(-1), second.reshape(-1)


def scenario_wave_ops(runner: KernelRunner) -> None:
    """shfl_xor reduction and the LDS exchange with barriers (run under the sanitizer)."""
    values = np.arange(256, dtype=np.int32) * 3 - 100
    sums = np.zeros(256, dtype=np.int32)
    runner.run("wave_ops", "emu_test_shfl_xor_sum", 2, 128, pointer(values), pointer(sums))
    np.testing.assert_array_equal(sums, np.repeat(values.reshape(8, 32).sum(axis=1), 32))
    first = np.zeros(256, dtype=np.int32)
    second = np.zeros(256, dtype=np.int32)
    runner.run("wave_ops", "emu_test_lds_exchange", 2, 128, pointer(values), pointer(first),
               pointer(second))
    expected_first, expected_second = lds_exchange_expected(values)
    np.testing.assert_array_equal(first, expected_first)
    np.testing.assert_array_equal(second, expected_second)
    print("wave_ops ok")


GEMM_SIZE = 256


def run_gemm_256(runner: KernelRunner) -> float:
    """The 256x256x256 int8 GEMM test kernel (16 workgroups x 128 threads): checks the
    result exactly and returns the launch's wall time in seconds."""
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 127, size=(GEMM_SIZE, GEMM_SIZE), endpoint=True, dtype=np.int8)
    b = rng.integers(-128, 127, size=(GEMM_SIZE, GEMM_SIZE), endpoint=True, dtype=np.int8)
    c = np.zeros((GEMM_SIZE, GEMM_SIZE), dtype=np.int32)
    args = (pointer(a), pointer(b), pointer(c), *(ctypes.c_int32(GEMM_SIZE),) * 3)
    start = time.perf_counter()
    runner.run("gemm_i8", "emu_test_gemm_i8", (GEMM_SIZE // 64) ** 2, 128, *args)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(c, gemm_i8_reference(a, b))
    return elapsed


def scenario_gemm_timing(runner: KernelRunner) -> None:
    print(f"gemm_i8 256x256x256 (16 workgroups x 128 threads): {run_gemm_256(runner):.3f} s")


# Kernels that break a rule (tests/emulator/kernels/faults.hip): each must abort.

def fault_wmma_unreplicated(runner: KernelRunner) -> None:
    a = np.arange(256, dtype=np.int8).reshape(16, 16)
    d = np.zeros(3 * 64, dtype=np.int32)
    runner.run("faults", "emu_fault_wmma_unreplicated", 3, 64, pointer(a), pointer(d))


def fault_one_workgroup(kernel: str, threads: int) -> Callable[[KernelRunner], None]:
    """A fault kernel run as one workgroup of `threads` threads, one int32 output per thread."""

    def run(runner: KernelRunner) -> None:
        out = np.zeros(threads, dtype=np.int32)
        runner.run("faults", kernel, 1, threads, pointer(out))

    return run


def fault_misaligned_load(runner: KernelRunner) -> None:
    data = np.zeros(256, dtype=np.int8)
    out = np.zeros(32, dtype=np.int32)
    runner.run("faults", "emu_fault_misaligned_load", 1, 32, pointer(data), pointer(out))


GLOBAL_OVERFLOW_INTS = 1000  # > numpy's small-allocation cache: a plain malloc


def fault_global_overflow(runner: KernelRunner) -> None:
    out = np.zeros(GLOBAL_OVERFLOW_INTS, dtype=np.int32)
    runner.run("faults", "emu_fault_global_overflow", 1, GLOBAL_OVERFLOW_INTS + 1, pointer(out))


SCENARIOS: dict[str, Callable[[KernelRunner], None]] = {
    "wmma_signed": scenario_wmma_signed,
    "wave_ops": scenario_wave_ops,
    "gemm_timing": scenario_gemm_timing,
    "wmma_unreplicated": fault_wmma_unreplicated,
    "divergent_barrier": fault_one_workgroup("emu_fault_divergent_barrier", 128),
    "exit_before_barrier": fault_one_workgroup("emu_fault_exit_before_barrier", 128),
    "partial_wave_wmma": fault_one_workgroup("emu_fault_partial_wave_wmma", 48),
    "partial_shuffle": fault_one_workgroup("emu_fault_partial_shuffle", 32),
    "divergent_shuffles": fault_one_workgroup("emu_fault_divergent_shuffles", 32),
    "misaligned_load": fault_misaligned_load,
    "global_overflow": fault_global_overflow,
    "lds_overrun": fault_one_workgroup("emu_fault_lds_overrun", 64),
}


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3 or argv[2] not in SCENARIOS:
        print(f"usage: emu_driver.py LIBRARY OBJECTS_DIR SCENARIO "
              f"(scenarios: {', '.join(SCENARIOS)})", file=sys.stderr)
        return 2
    library, objects_dir, scenario = Path(argv[0]), Path(argv[1]), argv[2]
    SCENARIOS[scenario](KernelRunner(StandInRuntime(library), objects_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
