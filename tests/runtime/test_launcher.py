from __future__ import annotations

import ctypes
import shutil
import struct
import threading
import time
from pathlib import Path

import pytest

from vllm_rdna_w8a8.runtime.hip import HipRuntime
from vllm_rdna_w8a8.runtime.launcher import OBJECTS_DIR, KernelArg, KernelNotAvailable, Launcher, LaunchError
from vllm_rdna_w8a8.testing.damaged_code_object import (
    copy_with_damage,
    with_argument_offset_moved,
    with_header_field,
)

DEVICE_TARGETS = {0: "gfx1100", 1: "gfx1151"}


def _modules_loaded(runtime: HipRuntime) -> int:
    return runtime.library.fake_modules_loaded()


@pytest.fixture
def launcher(probe_objects: Path, fake_hip: HipRuntime) -> Launcher:
    return Launcher(probe_objects, runtime=lambda: fake_hip, target_of=DEVICE_TARGETS.get)


def _probe_args(out: int = 0x2000) -> list[KernelArg]:
    return [KernelArg.pointer(0x1000), KernelArg.pointer(out), KernelArg.int32(-5),
            KernelArg.pointer(0x3000), KernelArg.uint32(0xFFFFFFFF), KernelArg.float32(0.5)]


def test_launch_packs_arguments_at_metadata_offsets(launcher: Launcher, fake_hip: HipRuntime,
                                                    last_launch) -> None:
    kernel = launcher.get_kernel(0, "probe_args")
    assert kernel.target == "gfx1100" and kernel.kernarg_size == 40
    kernel.launch((4,), (256,), _probe_args(), stream=0x77)
    data, dims = last_launch(fake_hip)
    # int32 at 16, then 4 bytes of padding before the pointer at 24.
    assert data == struct.pack("<QQi4xQIf", 0x1000, 0x2000, -5, 0x3000, 0xFFFFFFFF, 0.5)
    assert dims == (4, 1, 1, 256, 1, 1, 0)


def test_launch_values_packs_what_launch_packs(launcher: Launcher, fake_hip: HipRuntime,
                                              last_launch) -> None:
    kernel = launcher.get_kernel(0, "probe_args")
    kinds, values = zip(*_probe_args())
    kernel.launch_values((4,), (256,), kinds, values, stream=0x77)
    data, dims = last_launch(fake_hip)
    assert data == struct.pack("<QQi4xQIf", 0x1000, 0x2000, -5, 0x3000, 0xFFFFFFFF, 0.5)
    assert dims == (4, 1, 1, 256, 1, 1, 0)


@pytest.mark.parametrize(("cut_kinds", "cut_values", "message"), [
    (1, 1, "probe_args: takes 6 arguments, got 5 kinds and 5 values"),
    (0, 1, "probe_args: 6 argument kinds but 5 values"),
])
def test_launch_values_counts_are_checked(launcher: Launcher, cut_kinds: int, cut_values: int,
                                          message: str) -> None:
    kernel = launcher.get_kernel(0, "probe_args")
    kinds, values = zip(*_probe_args())
    kernel.launch_values((1,), (64,), kinds, values)  # the layout is cached from here on
    with pytest.raises(LaunchError, match=message):
        kernel.launch_values((1,), (64,), kinds[:len(kinds) - cut_kinds], values[:len(values) - cut_values])


def test_launch_values_names_a_value_that_does_not_fit(launcher: Launcher) -> None:
    kernel = launcher.get_kernel(0, "probe_args")
    kinds, values = zip(*_probe_args())
    with pytest.raises(LaunchError, match=r"probe_args: argument 2 \(int32\) value 2147483648 does not fit"):
        kernel.launch_values((1,), (64,), kinds, (*values[:2], 2**31, *values[3:]))


def test_prepared_launch_rewrites_only_its_variable_arguments(launcher: Launcher, fake_hip: HipRuntime,
                                                             last_launch) -> None:
    kernel = launcher.get_kernel(0, "probe_args")
    kinds, values = zip(*_probe_args())
    prepared = kernel.prepare((256,), kinds, values, variable=(1, 2))
    prepared.launch((4, 1, 1), 0x77, 0x5000, 7)
    data, dims = last_launch(fake_hip)
    assert data == struct.pack("<QQi4xQIf", 0x1000, 0x5000, 7, 0x3000, 0xFFFFFFFF, 0.5)
    assert dims == (4, 1, 1, 256, 1, 1, 0)
    prepared.launch((9, 1, 1), 0, 0x6000, -3)  # the constants stay as packed
    data, dims = last_launch(fake_hip)
    assert data == struct.pack("<QQi4xQIf", 0x1000, 0x6000, -3, 0x3000, 0xFFFFFFFF, 0.5)
    assert dims[0] == 9


def test_prepared_launch_refuses_what_launch_values_refuses(launcher: Launcher, fake_hip: HipRuntime) -> None:
    kernel = launcher.get_kernel(0, "probe_args")
    kinds, values = zip(*_probe_args())
    with pytest.raises(LaunchError, match=r"probe_args: argument 2 \(int32\) value 2147483648 does not fit"):
        kernel.prepare((64,), kinds, (*values[:2], 2**31, *values[3:]), variable=())
    with pytest.raises(LaunchError, match="probe_args: 6 argument kinds but 5 values"):
        kernel.prepare((64,), kinds, values[:5], variable=())
    with pytest.raises(LaunchError, match=r"variable argument indices \(2, 2\) must be distinct"):
        kernel.prepare((64,), kinds, values, variable=(2, 2))
    fill = launcher.get_kernel(0, "probe_fill")  # __launch_bounds__(64)
    with pytest.raises(LaunchError, match=r"block \(65,\) has 65 threads"):
        fill.prepare((65,), ("pointer", "int32"), (0x10, 1), variable=())
    prepared = kernel.prepare((64,), kinds, values, variable=(1, 2))
    with pytest.raises(LaunchError, match=r"probe_args: argument 2 \(int32\) value 2147483648 does not fit"):
        prepared.launch((1, 1, 1), 0, 0x5000, 2**31)
    with pytest.raises(LaunchError, match=r"probe_args: argument 1 \(pointer\) value -1 does not fit"):
        prepared.launch((1, 1, 1), 0, -1, 0)
    with pytest.raises(LaunchError, match="probe_args: takes 2 variable arguments, got 1"):
        prepared.launch((1, 1, 1), 0, 0x5000)
    with pytest.raises(LaunchError, match=r"probe_args: grid \(0, 1, 1\) must be ints in \[1, "):
        prepared.launch((0, 1, 1), 0, 0x5000, 1)


def test_loaded_kernels_lists_each_name_once(launcher: Launcher) -> None:
    assert launcher.loaded_kernels() == []
    launcher.get_kernel(1, "probe_fill")
    launcher.get_kernel(0, "probe_fill")
    launcher.get_kernel(0, "probe_args")
    assert launcher.loaded_kernels() == ["probe_args", "probe_fill"]


def test_module_level_loaded_kernels_reads_the_default_launcher(launcher: Launcher,
                                                                monkeypatch) -> None:
    from vllm_rdna_w8a8.runtime import launcher as launcher_module

    monkeypatch.setattr(launcher_module, "_default", launcher)
    launcher.get_kernel(0, "probe_args")
    assert launcher_module.loaded_kernels() == ["probe_args"]


def test_one_module_per_device_and_object(launcher: Launcher, fake_hip: HipRuntime) -> None:
    before = _modules_loaded(fake_hip)
    args_kernel = launcher.get_kernel(0, "probe_args")
    fill_kernel = launcher.get_kernel(0, "probe_fill")  # same object: no second load
    assert launcher.get_kernel(0, "probe_args") is args_kernel
    assert _modules_loaded(fake_hip) - before == 1
    on_second_device = launcher.get_kernel(1, "probe_fill")
    assert on_second_device is not fill_kernel and on_second_device.target == "gfx1151"
    assert _modules_loaded(fake_hip) - before == 2


def test_concurrent_first_calls_load_once(probe_objects: Path, fake_hip: HipRuntime) -> None:
    launcher = Launcher(probe_objects, runtime=lambda: fake_hip, target_of=DEVICE_TARGETS.get)
    before = _modules_loaded(fake_hip)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(launcher.get_kernel(0, "probe_fill")))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and all(kernel is results[0] for kernel in results)
    assert _modules_loaded(fake_hip) - before == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (_probe_args()[:5], "probe_args: takes 6 arguments, got 5"),
        ([*_probe_args()[:2], KernelArg.pointer(1), *_probe_args()[3:]],
         "argument 2 is by_value of 4 bytes in the code object, got a pointer"),
        ([KernelArg.int32(1), *_probe_args()[1:]],
         "argument 0 is global_buffer of 8 bytes in the code object, got a int32"),
        ([0x1000, *_probe_args()[1:]], "argument 0 must be a KernelArg, got int"),
    ],
)
def test_argument_mismatch_names_kernel_and_argument(launcher: Launcher, args: list, message: str) -> None:
    kernel = launcher.get_kernel(0, "probe_args")
    with pytest.raises(LaunchError, match=message):
        kernel.launch((1,), (64,), args)


def test_geometry_checks(launcher: Launcher) -> None:
    kernel = launcher.get_kernel(0, "probe_fill")  # __launch_bounds__(64)
    args = [KernelArg.pointer(0x10), KernelArg.int32(1)]
    with pytest.raises(LaunchError, match=r"block \(65,\) has 65 threads, more than its "
                                          r"max_flat_workgroup_size 64"):
        kernel.launch((1,), (65,), args)
    with pytest.raises(LaunchError, match=r"block \(8, 8, 2\) has 128 threads"):
        kernel.launch((1,), (8, 8, 2), args)
    with pytest.raises(LaunchError, match=r"grid \(0,\) must be ints in \[1, 2147483647\]"):
        kernel.launch((0,), (64,), args)
    with pytest.raises(LaunchError, match=r"grid \(2147483648, 1\) must be ints"):
        kernel.launch((2**31, 1), (64,), args)
    with pytest.raises(LaunchError, match=r"block \(64.0,\) must be ints"):
        kernel.launch((1,), (64.0,), args)
    with pytest.raises(LaunchError, match="grid needs 1 to 3 dimensions"):
        kernel.launch((1, 1, 1, 1), (64,), args)


@pytest.mark.parametrize(
    ("index", "arg", "message"),
    [
        (2, KernelArg.int32(2**31), r"argument 2 \(int32\) value 2147483648 does not fit"),
        (4, KernelArg.uint32(-1), r"argument 4 \(uint32\) value -1 does not fit"),
        (0, KernelArg.pointer(-8), r"argument 0 \(pointer\) value -8 does not fit"),
        (2, KernelArg.int32(1.5), r"argument 2 \(int32\) value 1.5 does not fit"),
        (5, KernelArg.float32("x"), r"argument 5 \(float32\) value 'x' does not fit"),
        (5, KernelArg("half", 1), r"argument 5 has unknown kind 'half'"),
    ],
)
def test_bad_values_name_kernel_argument_and_value(launcher: Launcher, index: int, arg: KernelArg,
                                                   message: str) -> None:
    kernel = launcher.get_kernel(0, "probe_args")
    args = _probe_args()
    args[index] = arg
    with pytest.raises(LaunchError, match="probe_args: " + message):
        kernel.launch((1,), (64,), args)
    with pytest.raises(LaunchError, match="probe_args: " + message):
        kernel.pack(args)


def test_null_pointer() -> None:
    assert KernelArg.pointer(None).value == 0


def test_missing_reasons(launcher: Launcher, probe_objects: Path, tmp_path: Path) -> None:
    assert launcher.available_targets() == ["gfx1100", "gfx1151"]
    assert launcher.missing_reason("gfx1100") is None
    assert launcher.missing_reason("gfx1100", ["probe_args", "probe_fill"]) is None
    assert launcher.missing_reason("gfx1102") == "no code object for gfx1102 (built for: gfx1100, gfx1151)"
    assert launcher.missing_reason("gfx1100", ["w8a8_i8_gemm_x"]) == (
        "code objects for gfx1100 lack kernel(s) w8a8_i8_gemm_x")
    with pytest.raises(KernelNotAvailable, match="w8a8_i8_gemm_x on device 0: code objects for gfx1100 lack"):
        launcher.get_kernel(0, "w8a8_i8_gemm_x")
    with pytest.raises(KernelNotAvailable, match="device 7 is not a ROCm device"):
        launcher.get_kernel(7, "probe_fill")
    assert Launcher(tmp_path / "none").available_targets() == []


def test_broken_objects_are_reported(probe_objects: Path, tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    shutil.copytree(probe_objects, objects)
    (objects / "gfx1100" / "truncated.hsaco").write_bytes(b"\x7fELF")
    assert Launcher(objects).missing_reason("gfx1100").startswith("code object unusable: ")
    # The same kernel in two objects of one target is ambiguous.
    (objects / "gfx1100" / "truncated.hsaco").unlink()
    shutil.copy(objects / "gfx1100" / "probe_args.hsaco", objects / "gfx1100" / "copy.hsaco")
    assert "is defined by both" in Launcher(objects).missing_reason("gfx1100")
    # An object for another target in the wrong directory.
    shutil.copy(objects / "gfx1151" / "probe_args.hsaco", objects / "gfx1100" / "copy.hsaco")
    assert "built for gfx1151, found in the gfx1100 directory" in Launcher(objects).missing_reason("gfx1100")


def test_host_overhead_per_launch(launcher: Launcher) -> None:
    """Measured here (CPU, fake runtime): prints the figure; the bound only catches
    a regression by an order of magnitude."""
    kernel = launcher.get_kernel(0, "probe_args")
    args = _probe_args()
    count = 20000
    start = time.perf_counter()
    for _ in range(count):
        kernel.launch((4, 1, 1), (256, 1, 1), args)
    per_launch_us = (time.perf_counter() - start) / count * 1e6
    print(f"\nlauncher host overhead: {per_launch_us:.2f} us per launch (6 args, fake runtime)")
    assert per_launch_us < 100


PROBE_ARGS_SIGNATURE = (("in", "pointer"), ("out", "pointer"), ("delta", "int32"), ("spare", "pointer"),
                        ("mask", "uint32"), ("factor", "float32"))


def test_argument_layout_is_checked_against_the_callers_list(probe_objects: Path) -> None:
    def expecting(signature):
        return Launcher(probe_objects, expected_args=lambda name: signature if name == "probe_args" else None)

    assert expecting(PROBE_ARGS_SIGNATURE).missing_reason("gfx1100", ["probe_args"]) is None
    swapped = (*PROBE_ARGS_SIGNATURE[:2], ("delta", "pointer"), *PROBE_ARGS_SIGNATURE[3:])
    assert expecting(swapped).missing_reason("gfx1100") == (
        f"code object unusable: {probe_objects / 'gfx1100' / 'probe_args.hsaco'}: kernel probe_args "
        "argument 2 is unnamed, by_value of 4 bytes at offset 16 in the metadata; the ops pass delta, "
        "global_buffer of 8 bytes at offset 16")
    assert "has 6 arguments in its metadata, the ops pass 5" in expecting(
        PROBE_ARGS_SIGNATURE[:5]).missing_reason("gfx1100")


def _shipped_objects_with(tmp_path: Path, name: str, damage) -> Path:
    """A copy of the shipped gfx1100 code objects with `name` damaged by `damage`."""
    copy_with_damage(OBJECTS_DIR / "gfx1100", tmp_path / "objects", name, damage)
    return tmp_path / "objects"


def test_moved_metadata_argument_offset_is_declined(tmp_path: Path) -> None:
    # Issue 11: flags moved 88 -> 92 in int8_gemm.hsaco's metadata gave wrong GEMM results
    # with every check passing (the kernel reads flags at 88 whatever the metadata says).
    objects = _shipped_objects_with(tmp_path, "int8_gemm.hsaco", lambda image: with_argument_offset_moved(image, 88, 92))
    reason = Launcher(objects).missing_reason("gfx1100")
    assert reason is not None and reason.startswith(f"code object unusable: {objects / 'gfx1100' / 'int8_gemm.hsaco'}")
    assert reason.endswith("argument 14 is unnamed, by_value of 4 bytes at offset 92 in the metadata; "
                           "the ops pass flags, by_value of 4 bytes at offset 88")


@pytest.mark.parametrize("field", ["e_ident[EI_OSABI]", "e_type", "e_flags machine"])
def test_damaged_gemm_object_header_is_a_reason_before_any_load(tmp_path: Path, field: str) -> None:
    # Issue 11: these passed the index (only the quantization object is test-loaded), vLLM
    # selected our class and the first GEMM raised at engine start.
    objects = _shipped_objects_with(tmp_path, "int8_gemm.hsaco", lambda image: with_header_field(image, field, 1))
    reason = Launcher(objects).missing_reason("gfx1100")
    assert reason is not None and reason.startswith(f"code object unusable: {objects / 'gfx1100' / 'int8_gemm.hsaco'}: ELF")


def _kernels_by_object(target: str = "gfx1100") -> dict[str, list[str]]:
    """The shipped objects of `target`, by file name, and the kernels each defines."""
    by_object: dict[str, list[str]] = {}
    for name, entry in Launcher(OBJECTS_DIR).index(target).items():
        by_object.setdefault(entry.object_path.name, []).append(name)
    return by_object


def test_a_damaged_object_takes_away_its_own_kernels_only(tmp_path: Path) -> None:
    # One damaged object used to make every kernel of its target unavailable: a bad fp8 GEMM
    # object sent the int8 layers to upstream kernels too.
    by_object = _kernels_by_object()
    objects = _shipped_objects_with(tmp_path, "fp8_gemm.hsaco", lambda image: with_header_field(image, "e_type", 1))
    launcher = Launcher(objects)
    for object_name, names in by_object.items():
        if object_name != "fp8_gemm.hsaco":
            assert launcher.missing_reason("gfx1100", names) is None, object_name
    damaged = objects / "gfx1100" / "fp8_gemm.hsaco"
    reason = f"code object unusable: {damaged}: ELF type 1 is not a linked code object (ET_DYN, 3)"
    assert launcher.missing_reason("gfx1100", by_object["fp8_gemm.hsaco"][:1]) == reason
    assert launcher.missing_reason("gfx1100") == reason  # the whole target: what selftest reports
    assert [entry.reason for entry in launcher.unusable_objects("gfx1100")] == [reason.split(": ", 1)[1]]


def test_an_object_refused_after_reading_is_the_reason_for_its_own_kernels_alone(tmp_path: Path) -> None:
    by_object = _kernels_by_object()
    objects = _shipped_objects_with(tmp_path, "int8_gemm.hsaco", lambda image: with_argument_offset_moved(image, 88, 92))
    launcher = Launcher(objects)
    assert launcher.missing_reason("gfx1100", by_object["fp8_gemm.hsaco"] + by_object["quant_int8.hsaco"]) is None
    reason = launcher.missing_reason("gfx1100", by_object["int8_gemm.hsaco"])
    assert reason is not None and reason.startswith(f"code object unusable: {objects / 'gfx1100' / 'int8_gemm.hsaco'}: ")
    # Its kernels are known: a kernel no object defines is not blamed on it.
    assert launcher.missing_reason("gfx1100", ["w8a8_i8_gemm_x"]) == "code objects for gfx1100 lack kernel(s) w8a8_i8_gemm_x"
