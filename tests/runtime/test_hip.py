"""The ctypes bindings against a recording fake of libamdhip64 (real C ABI, real constants)."""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from pathlib import Path

import pytest

from vllm_rdna_w8a8.runtime import hip
from vllm_rdna_w8a8.runtime.hip import HipError, HipRuntime, KernargBuffer, load_runtime


def test_launch_param_constants_match_the_hip_header() -> None:
    header = Path("/usr/include/hip/hip_runtime_api.h")
    if not header.is_file():
        pytest.skip("HIP headers not installed")
    text = header.read_text()
    for name in ("HIP_LAUNCH_PARAM_BUFFER_POINTER", "HIP_LAUNCH_PARAM_BUFFER_SIZE",
                 "HIP_LAUNCH_PARAM_END"):
        assert f"#define {name} ((void*)0x{getattr(hip, name):02x})" in text


def test_load_get_launch_round_trip(fake_hip: HipRuntime, probe_objects: Path, last_launch) -> None:
    module = fake_hip.load_module((probe_objects / "gfx1100" / "probe_args.hsaco").read_bytes())
    assert module != 0
    function = fake_hip.get_function(module, "probe_fill")
    kernargs = KernargBuffer(12)
    struct.pack_into("<Qi", kernargs.data, 0, 0xDEAD0000, 7)
    fake_hip.launch(function, (3, 2, 1), (64, 1, 1), kernargs, 0x5000, "probe_fill", 0)
    data, dims = last_launch(fake_hip)
    assert data == struct.pack("<Qi", 0xDEAD0000, 7)
    assert dims == (3, 2, 1, 64, 1, 1, 0)
    fake_hip.library.fake_last_stream.restype = ctypes.c_void_p
    assert fake_hip.library.fake_last_stream() == 0x5000
    fake_hip.library.fake_last_function.restype = ctypes.c_char_p
    assert fake_hip.library.fake_last_function() == b"probe_fill"
    fake_hip.unload_module(module)


def test_errors_name_function_code_and_message(fake_hip: HipRuntime) -> None:
    with pytest.raises(HipError, match=r"hipModuleLoadData failed with error 200: hipErrorInvalidImage"):
        fake_hip.load_module(b"not an elf image")
    with pytest.raises(HipError, match=r"hipModuleGetFunction\('probe_missing_in_runtime'\) "
                                       r"failed with error 500: hipErrorNotFound") as caught:
        fake_hip.get_function(1, "probe_missing_in_runtime")
    assert caught.value.code == 500


def test_module_loads_on_the_requested_device(fake_hip: HipRuntime, probe_objects: Path) -> None:
    fake_hip.library.fake_current_device.restype = ctypes.c_int
    assert fake_hip.library.fake_current_device() == 0
    module = fake_hip.load_module((probe_objects / "gfx1100" / "probe_args.hsaco").read_bytes(), 1)
    assert module & 0xF00 == 0x100  # the fake encodes the current device in the handle
    assert fake_hip.library.fake_current_device() == 0  # restored
    with pytest.raises(HipError, match="hipSetDevice failed with error 101"):
        fake_hip.load_module(b"\x7fELF", 5)


def test_launch_runs_with_the_kernels_device_current(fake_hip: HipRuntime, probe_objects: Path) -> None:
    # Issue 10: launches never made the tensor's device current; HIP refuses a stream of
    # another device, and the null stream would send the kernel to the current device.
    module = fake_hip.load_module((probe_objects / "gfx1100" / "probe_args.hsaco").read_bytes(), 1)
    function = fake_hip.get_function(module, "probe_fill")
    for name in ("fake_current_device", "fake_last_launch_device", "fake_device_switches"):
        getattr(fake_hip.library, name).restype = ctypes.c_int
    switches = fake_hip.library.fake_device_switches()
    fake_hip.launch(function, (1, 1, 1), (64, 1, 1), KernargBuffer(12), 0, "probe_fill", 1)
    assert fake_hip.library.fake_last_launch_device() == 1
    assert fake_hip.library.fake_current_device() == 0  # restored
    assert fake_hip.library.fake_device_switches() == switches + 2
    fake_hip.launch(function, (1, 1, 1), (64, 1, 1), KernargBuffer(12), 0, "probe_fill", 0)
    assert fake_hip.library.fake_last_launch_device() == 0
    assert fake_hip.library.fake_device_switches() == switches + 2  # already current: no switch


def test_unloadable_library_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HipError, match="cannot load"):
        load_runtime(tmp_path / "libmissing.so")


def test_library_without_the_api_is_a_clear_error() -> None:
    libc = ctypes.util.find_library("c")
    with pytest.raises(HipError, match="hipModuleLoadData failed .*not exported"):
        load_runtime(libc)


def test_no_runtime_without_rocm_or_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hip, "_runtime", None)
    monkeypatch.setattr("vllm_rdna_w8a8.settings.emulated_target", lambda: None)
    monkeypatch.setattr("vllm_rdna_w8a8.runtime.device.torch_is_rocm", lambda: False)
    with pytest.raises(HipError, match="torch is not a ROCm build"):
        hip.get_runtime()


def test_emulated_mode_uses_the_prebuilt_library_from_env(monkeypatch: pytest.MonkeyPatch,
                                                          fake_hip_library: Path) -> None:
    monkeypatch.setattr(hip, "_runtime", None)
    monkeypatch.setattr("vllm_rdna_w8a8.settings.emulated_target", lambda: "gfx1100")
    monkeypatch.setenv(hip.EMULATOR_LIBRARY_ENV, str(fake_hip_library))
    assert hip.get_runtime().origin == str(fake_hip_library)
    monkeypatch.setattr(hip, "_runtime", None)
    monkeypatch.setenv(hip.EMULATOR_LIBRARY_ENV, "/nonexistent/lib.so")
    with pytest.raises(HipError, match="does not exist"):
        hip.get_runtime()
    # Issue 11: a directory was reported as "does not exist".
    monkeypatch.setenv(hip.EMULATOR_LIBRARY_ENV, str(fake_hip_library.parent))
    with pytest.raises(HipError, match=f"={str(fake_hip_library.parent)!r} is a directory, not a library file"):
        hip.get_runtime()
