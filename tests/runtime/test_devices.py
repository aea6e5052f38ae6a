"""The real HIP path's device handling, against the stand-in runtime made as strict as ROCm
(issue 10): two emulated devices in one process, modules and launches on the right device,
no sticky error left behind, images alive as long as their modules, every code object
loaded by the support check, and the libamdhip64 that torch already uses."""

from __future__ import annotations

import ctypes
import gc
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vllm_rdna_w8a8.settings import EMULATE_ENV
from vllm_rdna_w8a8.runtime import device, hip, launcher
from vllm_rdna_w8a8.runtime.hip import HipError, HipRuntime
from vllm_rdna_w8a8.runtime.launcher import OBJECTS_DIR, KernelArg, Launcher

QUANT = "w8a8_quant_i8_f16"
ABI_VERSION_OFFSET = 8  # Elf64_Ehdr.e_ident[EI_ABIVERSION]


@pytest.fixture
def two_devices(monkeypatch: pytest.MonkeyPatch) -> Iterator[HipRuntime]:
    """The stand-in runtime with devices gfx1100 and gfx1151, device 0 current, no error set."""
    monkeypatch.setenv(EMULATE_ENV, "gfx1100,gfx1151")
    monkeypatch.delenv(hip.EMULATOR_LIBRARY_ENV, raising=False)
    monkeypatch.setattr(hip, "_runtime", None)
    device.clear_caches()
    runtime = hip.get_runtime()
    runtime.library.hipGetLastError()
    yield runtime
    runtime.check("hipSetDevice", runtime.library.hipSetDevice(0))
    device.clear_caches()


def _peek_last_error(runtime: HipRuntime) -> int:
    return runtime.library.hipPeekAtLastError()


def test_kernels_load_and_are_looked_up_on_their_device(two_devices: HipRuntime) -> None:
    # Issue 10: the lookup ran after switching back to device 0 (ROCm <= 6.3 aborts).
    fresh = Launcher()
    first, second = fresh.get_kernel(0, QUANT), fresh.get_kernel(1, QUANT)
    assert (first.target, second.target) == ("gfx1100", "gfx1151")
    assert first.object_path.parent.name == "gfx1100" and second.object_path.parent.name == "gfx1151"
    assert two_devices.current_device() == 0


def test_a_launch_runs_on_its_kernels_device_from_any_current_device(two_devices: HipRuntime) -> None:
    # Issue 10: launches did not make the kernel's (the tensor's) device current.
    kernel = Launcher().get_kernel(1, QUANT)
    rows, k = 2, 32
    x = np.linspace(-3, 3, rows * k, dtype=np.float16).reshape(rows, k)
    q = np.full((rows, k), 99, dtype=np.int8)
    scale = np.zeros(rows, dtype=np.float32)
    args = [KernelArg.pointer(x.ctypes.data), KernelArg.pointer(q.ctypes.data),
            KernelArg.pointer(scale.ctypes.data), KernelArg.pointer(None), KernelArg.int32(rows),
            KernelArg.int32(k), KernelArg.int32(k), KernelArg.int32(k), KernelArg.uint32(0)]
    kernel.launch((rows,), (256,), args)
    assert two_devices.current_device() == 0  # restored
    np.testing.assert_array_equal(scale, np.abs(x.astype(np.float32)).max(axis=1) / np.float32(127))
    assert q[0, 0] == -127 and q[1, -1] == 127


def test_a_handled_failure_leaves_no_sticky_hip_error(two_devices: HipRuntime) -> None:
    # Issue 10: from HIP 7 the error stays until hipGetLastError; torch checks it later.
    with pytest.raises(HipError, match="hipModuleLoadData failed with error 200"):
        two_devices.load_module(b"\x7fELF" + bytes(60))
    assert _peek_last_error(two_devices) == 0
    module = two_devices.load_module((OBJECTS_DIR / "gfx1100" / "quant_int8.hsaco").read_bytes())
    with pytest.raises(HipError, match="not defined in the code object"):
        two_devices.get_function(module, "no_such_kernel")
    assert _peek_last_error(two_devices) == 0
    with two_devices.on_device(1), pytest.raises(HipError, match="current device is 1"):
        two_devices.get_function(module, QUANT)
    assert _peek_last_error(two_devices) == 0
    two_devices.unload_module(module)


def test_the_image_lives_as_long_as_its_module(two_devices: HipRuntime) -> None:
    # Issue 10: HIP keeps the image pointer; the buffer was freed when load_module returned.
    image = (OBJECTS_DIR / "gfx1100" / "int8_gemm.hsaco").read_bytes()
    module = two_devices.load_module(image)
    gc.collect()
    reuse = [ctypes.create_string_buffer(len(image)) for _ in range(4)]  # takes freed memory
    name = next(n for n in launcher.Launcher().index("gfx1100") if n.startswith("w8a8_i8_gemm_"))
    assert two_devices.get_function(module, name).value
    del reuse
    two_devices.unload_module(module)


def _objects_with_a_newer_gemm_object(tmp_path: Path) -> Path:
    """The shipped objects with int8_gemm.hsaco claiming code object v7: a sound file (it
    indexes) that the runtime refuses to load, as an older ROCm refuses a newer object."""
    objects = tmp_path / "objects"
    shutil.copytree(OBJECTS_DIR / "gfx1100", objects / "gfx1100")
    gemm = objects / "gfx1100" / "int8_gemm.hsaco"
    data = bytearray(gemm.read_bytes())
    data[ABI_VERSION_OFFSET] = 5
    gemm.write_bytes(bytes(data))
    return objects


def test_support_check_loads_every_code_object_the_kind_needs(
        two_devices: HipRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 10: only the quantization object was loaded; the GEMM one failed in vLLM's
    # profile run instead of leaving the layer on upstream kernels.
    from vllm_rdna_w8a8.scaled_mm import support

    monkeypatch.setattr(launcher, "_default", Launcher(_objects_with_a_newer_gemm_object(tmp_path)))
    support.code_object_problem.cache_clear()
    try:
        problem = support.code_object_problem(0, "gfx1100", "i8")
    finally:
        support.code_object_problem.cache_clear()
    assert problem is not None and "code object v7 is not supported by this runtime" in problem
    assert _peek_last_error(two_devices) == 0


def _maps_line(path: Path, inode: int) -> str:
    return f"7f0000000000-7f0000001000 r--p 00000000 08:01 {inode}                    {path}\n"


def test_the_already_mapped_libamdhip64_is_preferred(tmp_path: Path) -> None:
    # Issue 10: torch/lib's copy came first even when the process had mapped another one.
    torch_lib = tmp_path / "torch" / "lib"
    torch_lib.mkdir(parents=True)
    (torch_lib / "libamdhip64.so").write_bytes(b"")
    mapped = tmp_path / "opt" / "rocm" / "lib" / "libamdhip64.so.6.4.0"
    maps = tmp_path / "maps"
    maps.write_text(_maps_line(mapped, 11) + _maps_line(mapped, 11) + _maps_line(Path("/usr/lib/libc.so.6"), 3))
    assert hip._rocm_torch_library(maps, torch_lib) == mapped
    maps.write_text(_maps_line(Path("/usr/lib/libc.so.6"), 3))
    assert hip._rocm_torch_library(maps, torch_lib) == torch_lib / "libamdhip64.so"


def test_two_mapped_libamdhip64_files_are_refused(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    first, second = Path("/opt/rocm/lib/libamdhip64.so.6"), tmp_path / "torch/lib/libamdhip64.so"
    maps.write_text(_maps_line(first, 11) + _maps_line(second, 12))
    with pytest.raises(HipError, match=r"2 different libamdhip64.so files are mapped into this process "
                                       r"\(/opt/rocm/lib/libamdhip64.so.6, .*torch/lib/libamdhip64.so\)"):
        hip._rocm_torch_library(maps, tmp_path)
