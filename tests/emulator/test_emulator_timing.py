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


def production_runtime() -> StandInRuntime:
    """The default emulator library (kernels/*.hip) and the gfx1100 objects of kernels/."""
    build(find_clang(), [get_target(GFX1100)], kernels_dir=KERNELS_DIR,
          objects_dir=PRODUCTION_OBJECTS_DIR, work_dir=BUILD_DIR, log=lambda line: None)
    return StandInRuntime(build_emulator())


def gemm_args(a: np.ndarray, b: np.ndarray, out: np.ndarray, unit: np.ndarray) -> list:
    """Arguments of a w8a8_i8_gemm_* kernel: per-tensor scales, no zero points or bias,
    fp16 output (docs/architecture.md)."""
    (m, k), n = a.shape, b.shape[0]
    null = ctypes.c_void_p(None)
    return [pointer(a), pointer(b), pointer(out), pointer(unit), pointer(unit), null, null, null,
            *(ctypes.c_int32(v) for v in (m, n, k, k, k, n)), ctypes.c_uint32(0)]


def run_production_gemm(kernel: str, a: np.ndarray, b: np.ndarray, workgroups: int) -> tuple[float, float]:
    """One launch of the shipped gfx1100 `kernel` (128 threads) on a [M, K] x b [N, K] with
    unit scales; checks the fp16 result exactly and returns (wall, CPU) seconds of the launch.
    Callers keep the int32 sums exact in fp16."""
    runtime = production_runtime()
    module = runtime.load_object(PRODUCTION_OBJECTS_DIR / GFX1100 / "int8_gemm.hsaco")
    function = runtime.get_function(module, kernel)
    out = np.full((a.shape[0], b.shape[0]), np.nan, dtype=np.float16)
    unit = np.ones(1, dtype=np.float32)
    start, cpu_start = time.perf_counter(), time.process_time()
    runtime.launch(function, (workgroups, 1, 1), (128, 1, 1), gemm_args(a, b, out, unit))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    expected = gemm_i8_reference(a, b).astype(np.float32).astype(np.float16)
    np.testing.assert_array_equal(out, expected)
    return elapsed, cpu


@pytest.mark.slow  # compiles the production kernels for gfx1100 and for the host
def test_gemm_256_cubed_production_kernel(capsys) -> None:
    rng = np.random.default_rng(1)
    # |a|, |b| <= 8: every int32 sum (<= 2^14) is exact in fp16 after the unit scales.
    a = rng.integers(-8, 8, size=(SIZE, SIZE), endpoint=True, dtype=np.int8)
    b = rng.integers(-8, 8, size=(SIZE, SIZE), endpoint=True, dtype=np.int8)
    tiles = (SIZE // 128) ** 2
    elapsed, _ = run_production_gemm(PRODUCTION_KERNEL, a, b, tiles)
    report(capsys, f"kernels/int8_gemm.hip {PRODUCTION_KERNEL} {SIZE}^3, {tiles} workgroups x "
                   f"128 threads, plain build: {elapsed:.3f} s")


DECODE_KERNEL = "w8a8_i8_gemm_m16n32k256_w1x1x4"  # 16x32 tiles, K split over 4 waves


@pytest.mark.slow  # compiles the production kernels for gfx1100 and for the host
def test_decode_gemm_4096_production_kernel(capsys) -> None:
    """M = 1 against a 4096 x 4096 weight: the decode shape of a 7B-class layer."""
    rng = np.random.default_rng(2)
    n = k = 4096
    a = rng.integers(-2, 2, size=(1, k), endpoint=True, dtype=np.int8)
    b = rng.integers(-2, 2, size=(n, k), endpoint=True, dtype=np.int8)  # sums <= 2^14
    elapsed, cpu = run_production_gemm(DECODE_KERNEL, a, b, n // 32)
    report(capsys, f"kernels/int8_gemm.hip {DECODE_KERNEL} M=1 N=K=4096, {n // 32} workgroups x "
                   f"128 threads, plain build: {elapsed:.3f} s wall, {cpu:.3f} s CPU")
