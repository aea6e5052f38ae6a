"""How fast the emulator runs a 256x256x256 int8 GEMM with 128-thread workgroups (the
figures are printed; the results are checked exactly)."""

from __future__ import annotations

import ctypes
import re
import time

import numpy as np
import pytest

from emu_driver import (
    GFX1100,
    KernelRunner,
    StandInRuntime,
    gemm_i8_reference,
    pointer,
    run_gemm_256,
)
from vllm_rdna_w8a8.build import build, find_clang, get_target
from vllm_rdna_w8a8.emulation import BUILD_DIR, KERNELS_DIR, build_emulator

SIZE = 256
PRODUCTION_KERNEL = "w8a8_i8_gemm_m128n128k64_w2x2x1"  # 128x128 tiles, 4 waves = 128 threads
PRODUCTION_OBJECTS_DIR = BUILD_DIR / "kernel-objects"


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[emulator timing] {line}")


def test_gemm_256_cubed_test_kernel(runner: KernelRunner, capsys) -> None:
    elapsed = run_gemm_256(runner)
    report(capsys, f"tests/emulator gemm_i8 {SIZE}^3, 16 workgroups x 128 threads, plain build: "
                   f"{elapsed:.3f} s")


def test_gemm_256_cubed_test_kernel_sanitized(run_driver, capsys) -> None:
    result = run_driver("gemm_timing", sanitized=True)
    assert result.returncode == 0, result.stderr
    match = re.search(r"gemm_i8 256x256x256 .*: ([0-9.]+) s", result.stdout)
    assert match, result.stdout
    report(capsys, f"same under ASan+UBSan: {match.group(1)} s")


@pytest.mark.slow  # compiles the production kernels for gfx1100 and for the host
def test_gemm_256_cubed_production_kernel(capsys) -> None:
    build(find_clang(), [get_target(GFX1100)], kernels_dir=KERNELS_DIR,
          objects_dir=PRODUCTION_OBJECTS_DIR, work_dir=BUILD_DIR, log=lambda line: None)
    runtime = StandInRuntime(build_emulator())
    module = runtime.load_object(PRODUCTION_OBJECTS_DIR / GFX1100 / "int8_gemm.hsaco")
    function = runtime.get_function(module, PRODUCTION_KERNEL)
    rng = np.random.default_rng(1)
    # |a|, |b| <= 8: every int32 sum (<= 2^14) is exact in fp16 after the unit scales.
    a = rng.integers(-8, 8, size=(SIZE, SIZE), endpoint=True, dtype=np.int8)
    b = rng.integers(-8, 8, size=(SIZE, SIZE), endpoint=True, dtype=np.int8)
    out = np.full((SIZE, SIZE), np.nan, dtype=np.float16)
    unit = np.ones(1, dtype=np.float32)
    null = ctypes.c_void_p(None)
    args = [pointer(a), pointer(b), pointer(out), pointer(unit), pointer(unit), null, null, null,
            *(ctypes.c_int32(SIZE),) * 6, ctypes.c_uint32(0)]
    tiles = (SIZE // 128) ** 2
    start = time.perf_counter()
    runtime.launch(function, (tiles, 1, 1), (128, 1, 1), args)
    elapsed = time.perf_counter() - start
    expected = gemm_i8_reference(a, b).astype(np.float32).astype(np.float16)
    np.testing.assert_array_equal(out, expected)
    report(capsys, f"kernels/int8_gemm.hip {PRODUCTION_KERNEL} {SIZE}^3, {tiles} workgroups x "
                   f"128 threads, plain build: {elapsed:.3f} s")
