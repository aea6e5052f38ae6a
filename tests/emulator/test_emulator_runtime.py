"""The stand-in HIP module API: image checks, lookup, launch validation and argument
unpacking at the offsets of the real gfx1100 code object's metadata."""

from __future__ import annotations

import ctypes
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from emu_driver import (
    GFX1100,
    HIP_ERROR_INVALID_DEVICE,
    HIP_ERROR_INVALID_HANDLE,
    HIP_ERROR_INVALID_IMAGE,
    HIP_ERROR_INVALID_VALUE,
    HIP_ERROR_NO_BINARY_FOR_GPU,
    HIP_ERROR_NOT_FOUND,
    HIP_LAUNCH_PARAM_BUFFER_POINTER,
    HIP_LAUNCH_PARAM_BUFFER_SIZE,
    HIP_LAUNCH_PARAM_END,
    HipCallError,
    KernelRunner,
    StandInRuntime,
    pack_kernargs,
    pointer,
)
from vllm_rdna_w8a8.settings import EMULATE_ENV
from vllm_rdna_w8a8.runtime.code_object import parse_code_object
from vllm_rdna_w8a8.testing.damaged_code_object import (
    PAST_THE_END,
    SH_OFFSET,
    SH_SIZE,
    section_index,
    with_first_symbol_name_offset,
    with_header_field,
    with_section_field,
)

E_TYPE_OFFSET = 16  # Elf64_Ehdr.e_type
E_FLAGS_OFFSET = 48  # Elf64_Ehdr.e_flags
E_ABI_VERSION_OFFSET = 8  # Elf64_Ehdr.e_ident[EI_ABIVERSION]
GFX11_MACHS = {"gfx1100": 0x41, "gfx1101": 0x46, "gfx1102": 0x47, "gfx1103": 0x44,
               "gfx1150": 0x43, "gfx1151": 0x4A}
GFX90A_MACH = 0x3F


def image(test_objects: Path, stem: str) -> bytes:
    return (test_objects / GFX1100 / f"{stem}.hsaco").read_bytes()


def with_mach(data: bytes, mach: int) -> bytes:
    (flags,) = struct.unpack_from("<I", data, E_FLAGS_OFFSET)
    patched = bytearray(data)
    struct.pack_into("<I", patched, E_FLAGS_OFFSET, (flags & ~0xFF) | mach)
    return bytes(patched)


def load_error(runtime: StandInRuntime, data: bytes) -> HipCallError:
    with pytest.raises(HipCallError) as caught:
        runtime.load_module(data)
    return caught.value


def test_non_elf_image_is_invalid(runtime: StandInRuntime) -> None:
    error = load_error(runtime, b"definitely not a code object" + bytes(64))
    assert error.code == HIP_ERROR_INVALID_IMAGE
    assert "not an ELF file" in str(error)


def test_host_elf_image_is_invalid(runtime: StandInRuntime, emulator_library: Path) -> None:
    error = load_error(runtime, emulator_library.read_bytes())
    assert error.code == HIP_ERROR_INVALID_IMAGE
    assert "not an AMDGPU HSA code object" in str(error)


def test_non_gfx11_code_object_is_invalid(runtime: StandInRuntime, test_objects: Path) -> None:
    error = load_error(runtime, with_mach(image(test_objects, "launch"), GFX90A_MACH))
    assert error.code == HIP_ERROR_INVALID_IMAGE
    assert "not for a gfx11 target (EF_AMDGPU_MACH 0x3f)" in str(error)


def test_unlinked_code_object_is_invalid(runtime: StandInRuntime, test_objects: Path) -> None:
    relocatable = bytearray(image(test_objects, "launch"))
    struct.pack_into("<H", relocatable, E_TYPE_OFFSET, 1)  # ET_REL
    error = load_error(runtime, bytes(relocatable))
    assert error.code == HIP_ERROR_INVALID_IMAGE
    assert "expected ET_DYN" in str(error)


# Issue 11: a section or symbol name the reader would follow past the image segfaulted.
OUTSIDE_THE_IMAGE = {
    "symtab offset": (lambda data: with_section_field(data, ".symtab", SH_OFFSET, PAST_THE_END),
                      "section {symtab} lies outside the image (past its section header table)"),
    "strtab offset": (lambda data: with_section_field(data, ".strtab", SH_OFFSET, PAST_THE_END),
                      "section {strtab} lies outside the image (past its section header table)"),
    "symtab size": (lambda data: with_section_field(data, ".symtab", SH_SIZE, PAST_THE_END),
                    "section {symtab} lies outside the image (past its section header table)"),
    "symbol name": (lambda data: with_first_symbol_name_offset(data, ".symtab", 0x7FFFFFFF),
                    "symbol 1 has a name outside its string table"),
    "section table": (lambda data: with_header_field(data, "e_shoff", PAST_THE_END),
                      "code object has no usable section header table"),
}


@pytest.mark.parametrize("damage", sorted(OUTSIDE_THE_IMAGE))
def test_tables_outside_the_image_are_invalid(runtime: StandInRuntime, test_objects: Path,
                                              damage: str) -> None:
    data = image(test_objects, "launch")
    corrupt, message = OUTSIDE_THE_IMAGE[damage]
    error = load_error(runtime, corrupt(data))
    assert error.code == HIP_ERROR_INVALID_IMAGE
    assert message.format(symtab=section_index(data, ".symtab"), strtab=section_index(data, ".strtab")) in str(error)


@pytest.mark.parametrize("target", sorted(GFX11_MACHS))
def test_every_gfx11_target_loads(runtime: StandInRuntime, test_objects: Path,
                                  monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    monkeypatch.delenv(EMULATE_ENV, raising=False)  # no emulated device target to match
    module = runtime.load_module(with_mach(image(test_objects, "launch"), GFX11_MACHS[target]))
    assert runtime.get_function(module, "emu_test_kernargs").value
    assert runtime.unload(module) == 0


def test_emulated_device_runs_only_its_own_target(runtime: StandInRuntime, test_objects: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMULATE_ENV, "gfx1101")
    error = load_error(runtime, image(test_objects, "launch"))  # a gfx1100 object
    assert error.code == HIP_ERROR_NO_BINARY_FOR_GPU
    assert "code object is for gfx1100, the emulated device is gfx1101" in str(error)
    module = runtime.load_module(with_mach(image(test_objects, "launch"), GFX11_MACHS["gfx1101"]))
    assert runtime.unload(module) == 0


def test_registered_arguments_match_the_gfx1100_metadata(runtime: StandInRuntime,
                                                         test_objects: Path) -> None:
    """The host build of every test kernel unpacks each argument at the offset and size
    the device build's metadata gives (the launcher packs by that metadata)."""
    checked = 0
    for path in sorted((test_objects / GFX1100).glob("*.hsaco")):
        for name, metadata in parse_code_object(path.read_bytes()).kernels.items():
            expected = [(arg.offset, arg.size) for arg in metadata.explicit_args]
            assert runtime.kernel_args(name) == expected, name
            checked += 1
    assert checked >= 15
    assert runtime.kernel_args("no_such_kernel") is None


def test_null_arguments_are_invalid_values(runtime: StandInRuntime) -> None:
    assert runtime.lib.hipModuleLoadData(None, b"x") == HIP_ERROR_INVALID_VALUE
    handle = ctypes.c_void_p()
    assert runtime.lib.hipModuleLoadData(ctypes.byref(handle), None) == HIP_ERROR_INVALID_VALUE


def test_unknown_kernel_name_is_not_found(runtime: StandInRuntime, test_objects: Path) -> None:
    module = runtime.load_module(image(test_objects, "launch"))
    with pytest.raises(HipCallError, match="not defined in the code object") as caught:
        runtime.get_function(module, "emu_test_wmma_f16")  # defined in another object
    assert caught.value.code == HIP_ERROR_NOT_FOUND


def test_kernel_missing_from_the_library_is_not_found(runtime: StandInRuntime,
                                                      test_objects: Path) -> None:
    """A code object naming a kernel whose source was not compiled into the library."""
    renamed = image(test_objects, "launch").replace(b"emu_test_kernargs", b"emu_test_kernargz")
    module = runtime.load_module(renamed)
    with pytest.raises(HipCallError, match="not in the emulator library") as caught:
        runtime.get_function(module, "emu_test_kernargz")
    assert caught.value.code == HIP_ERROR_NOT_FOUND


def kernargs_values() -> tuple[np.ndarray, np.ndarray, list]:
    source = np.array([-(2**40) - 5], dtype=np.int64)
    out = np.zeros(6, dtype=np.int64)
    args = [ctypes.c_int8(-7), pointer(source), ctypes.c_uint32(4_000_000_000),
            ctypes.c_double(2.5), ctypes.c_uint16(65535), ctypes.c_float(-1.25), pointer(out)]
    return source, out, args


EXPECTED_KERNARGS = [-7, -(2**40) - 5, 4_000_000_000, 2500, 65535, -5]


def test_arguments_unpack_at_the_metadata_offsets(runtime: StandInRuntime,
                                                  test_objects: Path) -> None:
    """Pack the way the real launcher does (offsets from the gfx1100 metadata) into a
    buffer with room for hidden arguments after the explicit ones, and read them back."""
    metadata = parse_code_object(image(test_objects, "launch")).kernels["emu_test_kernargs"]
    explicit = metadata.explicit_args
    source, out, args = kernargs_values()
    assert len(explicit) == len(args)
    explicit_end = explicit[-1].offset + explicit[-1].size
    buffer = bytearray(max(metadata.kernarg_segment_size, explicit_end) + 256)
    for arg, value in zip(explicit, args):
        assert arg.size == ctypes.sizeof(value)
        buffer[arg.offset:arg.offset + arg.size] = bytes(value)
    module = runtime.load_module(image(test_objects, "launch"))
    function = runtime.get_function(module, "emu_test_kernargs")
    runtime.check("launch", runtime.launch_status(function, (1, 1, 1), (32, 1, 1), bytes(buffer)))
    assert out.tolist() == EXPECTED_KERNARGS
    # ...and the natural-alignment packing of emu_driver gives the same offsets.
    natural = pack_kernargs(args)
    assert len(natural) == explicit_end
    assert bytes(buffer[:explicit_end]) == natural


def test_kernel_params_array_is_supported(runtime: StandInRuntime, test_objects: Path) -> None:
    module = runtime.load_module(image(test_objects, "launch"))
    function = runtime.get_function(module, "emu_test_kernargs")
    source, out, args = kernargs_values()
    params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(arg) for arg in args])
    status = runtime.lib.hipModuleLaunchKernel(function, 1, 1, 1, 32, 1, 1, 0, None, params, None)
    runtime.check("hipModuleLaunchKernel", status)
    assert out.tolist() == EXPECTED_KERNARGS


@pytest.fixture()
def kernargs_function(runtime: StandInRuntime, test_objects: Path) -> ctypes.c_void_p:
    return runtime.get_function(runtime.load_module(image(test_objects, "launch")),
                                "emu_test_kernargs")


@pytest.mark.parametrize(
    ("grid", "block", "shared", "size_change", "message"),
    [((0, 1, 1), (32, 1, 1), 0, 0, "must be positive"),
     ((1, 1, 1), (32, 0, 1), 0, 0, "must be positive"),
     ((1, 1, 1), (1025, 1, 1), 0, 0, "more than 1024 threads"),
     ((1, 1, 1), (32, 32, 2), 0, 0, "more than 1024 threads"),
     ((1, 1, 1), (32, 1, 1), 256, 0, "dynamic LDS is not emulated"),
     ((1, 1, 1), (32, 1, 1), 0, -1, "smaller than the 48 bytes"),
     ((2**31, 1, 1), (2, 1, 1), 0, 0, "exceeds 2\\^32")],
)
def test_invalid_launches_are_refused(runtime: StandInRuntime, kernargs_function, grid, block,
                                      shared: int, size_change: int, message: str) -> None:
    _, out, args = kernargs_values()
    buffer = pack_kernargs(args)
    status = runtime.launch_status(kernargs_function, grid, block, buffer,
                                   declared_size=len(buffer) + size_change, shared_bytes=shared)
    assert status == HIP_ERROR_INVALID_VALUE
    assert __import__("re").search(message, runtime.last_message())
    assert not out.any()  # nothing ran


def test_extra_must_be_well_formed(runtime: StandInRuntime, kernargs_function) -> None:
    launch = runtime.lib.hipModuleLaunchKernel
    unknown_key = (ctypes.c_void_p * 3)(0x7, 0, HIP_LAUNCH_PARAM_END)
    assert launch(kernargs_function, 1, 1, 1, 32, 1, 1, 0, None, None,
                  unknown_key) == HIP_ERROR_INVALID_VALUE
    assert "unknown key in extra" in runtime.last_message()
    no_size = (ctypes.c_void_p * 3)(HIP_LAUNCH_PARAM_BUFFER_POINTER, 16, HIP_LAUNCH_PARAM_END)
    assert launch(kernargs_function, 1, 1, 1, 32, 1, 1, 0, None, None,
                  no_size) == HIP_ERROR_INVALID_VALUE
    assert "lacks the buffer pointer or its size" in runtime.last_message()
    assert launch(kernargs_function, 1, 1, 1, 32, 1, 1, 0, None, None,
                  None) == HIP_ERROR_INVALID_VALUE
    assert "exactly one of kernelParams and extra" in runtime.last_message()
    size = ctypes.c_size_t(48)
    both = (ctypes.c_void_p * 5)(HIP_LAUNCH_PARAM_BUFFER_POINTER, 16,
                                 HIP_LAUNCH_PARAM_BUFFER_SIZE, ctypes.addressof(size),
                                 HIP_LAUNCH_PARAM_END)
    params = (ctypes.c_void_p * 7)()
    assert launch(kernargs_function, 1, 1, 1, 32, 1, 1, 0, None, params,
                  both) == HIP_ERROR_INVALID_VALUE


def test_unloaded_modules_and_their_functions_become_invalid(runtime: StandInRuntime,
                                                             test_objects: Path) -> None:
    module = runtime.load_module(image(test_objects, "launch"))
    function = runtime.get_function(module, "emu_test_kernargs")
    assert runtime.unload(module) == 0
    assert runtime.unload(module) == HIP_ERROR_INVALID_HANDLE
    with pytest.raises(HipCallError) as caught:
        runtime.get_function(module, "emu_test_kernargs")
    assert caught.value.code == HIP_ERROR_INVALID_HANDLE
    _, _, args = kernargs_values()
    status = runtime.launch_status(function, (1, 1, 1), (32, 1, 1), pack_kernargs(args))
    assert status == HIP_ERROR_INVALID_HANDLE


def test_last_error_is_reported_once_and_named(runtime: StandInRuntime) -> None:
    runtime.lib.hipGetLastError()  # clear
    load_error(runtime, b"\x7fELF" + bytes(60))
    assert runtime.lib.hipGetLastError() == HIP_ERROR_INVALID_IMAGE
    assert runtime.lib.hipGetLastError() == 0
    assert runtime.lib.hipGetErrorName(HIP_ERROR_NOT_FOUND) == b"hipErrorNotFound"
    assert runtime.lib.hipGetErrorString(HIP_ERROR_NOT_FOUND) == b"named symbol not found"
    assert runtime.lib.hipGetErrorString(0) == b"no error"
    assert runtime.lib.hipDeviceSynchronize() == 0
    assert runtime.lib.hipStreamSynchronize(None) == 0


@pytest.mark.parametrize(("grid", "block"), [((3, 2, 2), (8, 4, 2)), ((5, 1, 1), (96, 1, 1)),
                                             ((1, 1, 3), (4, 4, 4))])
def test_work_item_coordinates(runner: KernelRunner, grid, block) -> None:
    blocks, threads = int(np.prod(grid)), int(np.prod(block))
    out = np.full((blocks, threads, 14), 0xFFFFFFFF, dtype=np.uint32)
    runner.run("launch", "emu_test_coordinates", grid, block, pointer(out))
    for b in range(blocks):
        block_idx = (b % grid[0], b // grid[0] % grid[1], b // (grid[0] * grid[1]))
        for t in range(threads):
            thread_idx = (t % block[0], t // block[0] % block[1], t // (block[0] * block[1]))
            expected = [*thread_idx, *block_idx, *block, *grid, t % 32, 32]
            assert out[b, t].tolist() == expected, (b, t)


# --- Devices, streams, the last error and image lifetime: as strict as ROCm (issue 10) ---

@pytest.fixture
def two_devices(runtime: StandInRuntime, monkeypatch: pytest.MonkeyPatch):
    """Two emulated gfx1100 devices; device 0 current again afterwards."""
    monkeypatch.setenv(EMULATE_ENV, "gfx1100,gfx1100")
    yield
    assert runtime.lib.hipSetDevice(0) == 0


def current_device(runtime: StandInRuntime) -> int:
    device = ctypes.c_int(-1)
    assert runtime.lib.hipGetDevice(ctypes.byref(device)) == 0
    return device.value


def test_device_count_and_a_current_device_per_thread(runtime: StandInRuntime, two_devices) -> None:
    count = ctypes.c_int()
    assert runtime.lib.hipGetDeviceCount(ctypes.byref(count)) == 0 and count.value == 2
    assert runtime.lib.hipSetDevice(1) == 0 and current_device(runtime) == 1
    other_thread = []
    worker = threading.Thread(target=lambda: other_thread.append(current_device(runtime)))
    worker.start()
    worker.join()
    assert other_thread == [0]  # hipSetDevice is per host thread
    assert runtime.lib.hipSetDevice(2) == HIP_ERROR_INVALID_DEVICE
    assert "2 emulated device(s)" in runtime.last_message()
    assert current_device(runtime) == 1


def test_modules_are_used_only_from_their_loading_device(runtime: StandInRuntime, test_objects: Path,
                                                         two_devices) -> None:
    module = runtime.load_module(image(test_objects, "launch"))  # on device 0
    function = runtime.get_function(module, "emu_test_kernargs")
    _, _, args = kernargs_values()
    assert runtime.lib.hipSetDevice(1) == 0
    with pytest.raises(HipCallError) as caught:  # ROCm <= 6.3 aborts the process here
        runtime.get_function(module, "emu_test_kernargs")
    assert caught.value.code == HIP_ERROR_INVALID_DEVICE
    assert "module was loaded on device 0 but the current device is 1" in str(caught.value)
    assert runtime.launch_status(function, (1, 1, 1), (32, 1, 1), pack_kernargs(args)) == HIP_ERROR_INVALID_DEVICE
    assert "loaded on device 0 but the launch is on device 1" in runtime.last_message()
    assert runtime.lib.hipSetDevice(0) == 0
    assert runtime.launch_status(function, (1, 1, 1), (32, 1, 1), pack_kernargs(args)) == 0
    assert runtime.unload(module) == 0


def test_a_stream_of_another_device_is_refused(runtime: StandInRuntime, test_objects: Path,
                                               two_devices) -> None:
    module = runtime.load_module(image(test_objects, "launch"))
    function = runtime.get_function(module, "emu_test_kernargs")
    _, _, args = kernargs_values()
    stream, own_stream = ctypes.c_void_p(), ctypes.c_void_p()
    assert runtime.lib.hipSetDevice(1) == 0
    assert runtime.lib.hipStreamCreate(ctypes.byref(stream)) == 0
    assert runtime.lib.hipSetDevice(0) == 0
    assert runtime.lib.hipStreamCreate(ctypes.byref(own_stream)) == 0
    status = runtime.launch_status(function, (1, 1, 1), (32, 1, 1), pack_kernargs(args), stream=stream)
    assert status == HIP_ERROR_INVALID_HANDLE
    assert "the stream belongs to device 1 but the current device is 0" in runtime.last_message()
    assert runtime.launch_status(function, (1, 1, 1), (32, 1, 1), pack_kernargs(args), stream=own_stream) == 0
    for handle in (stream, own_stream):
        assert runtime.lib.hipStreamDestroy(handle) == 0
    status = runtime.launch_status(function, (1, 1, 1), (32, 1, 1), pack_kernargs(args), stream=own_stream)
    assert status == HIP_ERROR_INVALID_HANDLE  # destroyed
    assert runtime.unload(module) == 0


def test_the_last_error_stays_until_read_as_in_hip_7(runtime: StandInRuntime) -> None:
    runtime.lib.hipGetLastError()  # clear
    load_error(runtime, b"\x7fELF" + bytes(60))
    assert current_device(runtime) == 0  # a later successful call does not reset it
    assert runtime.lib.hipDeviceSynchronize() == 0
    assert runtime.lib.hipPeekAtLastError() == HIP_ERROR_INVALID_IMAGE
    assert runtime.lib.hipGetLastError() == HIP_ERROR_INVALID_IMAGE
    assert runtime.lib.hipGetLastError() == 0


def test_the_image_must_stay_alive_as_long_as_its_module(runtime: StandInRuntime, test_objects: Path) -> None:
    data = image(test_objects, "launch")
    buffer = ctypes.create_string_buffer(data, len(data))
    module = ctypes.c_void_p()
    assert runtime.lib.hipModuleLoadData(ctypes.byref(module), buffer) == 0
    ctypes.memset(buffer, 0, len(data))  # what freeing and reusing the buffer does to it
    function = ctypes.c_void_p()
    status = runtime.lib.hipModuleGetFunction(ctypes.byref(function), module, b"emu_test_kernargs")
    assert status == HIP_ERROR_INVALID_IMAGE
    assert "freed or overwritten" in runtime.last_message()
    assert runtime.lib.hipModuleUnload(module) == 0


def test_a_code_object_version_the_runtime_lacks_is_invalid(runtime: StandInRuntime, test_objects: Path) -> None:
    newer = bytearray(image(test_objects, "launch"))
    newer[E_ABI_VERSION_OFFSET] = 5  # code object v7
    error = load_error(runtime, bytes(newer))
    assert error.code == HIP_ERROR_INVALID_IMAGE
    assert "code object v7 is not supported by this runtime (v4 to v6)" in str(error)
