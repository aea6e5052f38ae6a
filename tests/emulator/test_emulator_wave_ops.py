"""Shuffles, barriers and LDS under the emulator against numpy."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from emu_driver import LDS_POISON_INT32, KernelRunner, lds_exchange_expected, pointer

WAVE = 32


def test_shfl_xor_butterfly_sums_each_wave(runner: KernelRunner) -> None:
    values = np.random.default_rng(0).integers(-1000, 1000, size=512, dtype=np.int32)
    sums = np.zeros_like(values)
    runner.run("wave_ops", "emu_test_shfl_xor_sum", 2, 256, pointer(values), pointer(sums))
    np.testing.assert_array_equal(sums, np.repeat(values.reshape(-1, WAVE).sum(axis=1), WAVE))


def hip_shfl_xor_source(lane: np.ndarray, mask: int, width: int) -> np.ndarray:
    """HIP's __shfl_xor (amd_warp_functions.h): index = lane ^ mask, replaced by the lane
    itself when it reaches past the end of the lane's width segment."""
    index = lane ^ mask
    segment_end = (lane + width) & ~(width - 1)
    return np.where(index >= segment_end, lane, index)


@pytest.mark.parametrize(("mask", "width"),
                         [(1, 32), (16, 32), (31, 32), (5, 8), (3, 4), (8, 8), (16, 16), (32, 32)])
def test_shfl_xor_width_segments(runner: KernelRunner, mask: int, width: int) -> None:
    values = np.arange(64, dtype=np.float32) + 0.5
    out = np.full_like(values, np.nan)
    runner.run("wave_ops", "emu_test_shfl_xor_width", 1, 64, pointer(values), pointer(out),
               ctypes.c_int32(mask), ctypes.c_int32(width))
    lane = np.arange(64) % WAVE
    wave_base = np.arange(64) - lane
    np.testing.assert_array_equal(out, values[wave_base + hip_shfl_xor_source(lane, mask, width)])


def test_shfl_xor_width_rule_examples() -> None:
    """The reference rule itself, on hand-checked lanes: with mask 8 and width 8, lanes
    0-7 would leave their segment upwards and keep their value, lanes 8-15 reach down."""
    lanes = np.array([0, 5, 9, 15])
    np.testing.assert_array_equal(hip_shfl_xor_source(lanes, 8, 8), [0, 5, 1, 7])
    np.testing.assert_array_equal(hip_shfl_xor_source(lanes, 1, 32), [1, 4, 8, 14])


def test_lds_exchange_across_waves_with_barriers(runner: KernelRunner) -> None:
    values = np.random.default_rng(1).integers(-(2**30), 2**30, size=384, dtype=np.int32)
    first = np.zeros_like(values)
    second = np.zeros_like(values)
    runner.run("wave_ops", "emu_test_lds_exchange", 3, 128, pointer(values), pointer(first),
               pointer(second))
    expected_first, expected_second = lds_exchange_expected(values)
    np.testing.assert_array_equal(first, expected_first)
    np.testing.assert_array_equal(second, expected_second)


def test_unwritten_lds_reads_as_the_poison_pattern(runner: KernelRunner) -> None:
    out = np.zeros(64, dtype=np.int32)
    runner.run("faults", "emu_fault_lds_unwritten", 1, 64, pointer(out))
    np.testing.assert_array_equal(out[0::2], np.arange(0, 64, 2) * 10)
    np.testing.assert_array_equal(out[1::2], LDS_POISON_INT32)
    assert LDS_POISON_INT32 == np.int32(-0x5A5A5A5B)  # bytes A5 A5 A5 A5


@pytest.mark.parametrize("threads", ["1", "2"])
def test_lds_is_fresh_for_every_workgroup(runner: KernelRunner, monkeypatch: pytest.MonkeyPatch,
                                          threads: str) -> None:
    """Later workgroups do not see workgroup 0's LDS writes, whether they run after it on
    the same OS thread or beside it."""
    monkeypatch.setenv("RDNA_EMULATOR_THREADS", threads)
    out = np.zeros((4, 64), dtype=np.int32)
    runner.run("faults", "emu_fault_lds_unwritten", 4, 64, pointer(out))
    np.testing.assert_array_equal(out[0, 0::2], np.arange(0, 64, 2) * 10)
    np.testing.assert_array_equal(out[0, 1::2], LDS_POISON_INT32)
    np.testing.assert_array_equal(out[1:], LDS_POISON_INT32)


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_schedule_order_does_not_change_correct_kernels(runner: KernelRunner,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        order: str) -> None:
    monkeypatch.setenv("RDNA_EMULATOR_SCHEDULE", order)
    values = np.arange(256, dtype=np.int32) * 7
    first, second = np.zeros_like(values), np.zeros_like(values)
    runner.run("wave_ops", "emu_test_lds_exchange", 2, 128, pointer(values), pointer(first),
               pointer(second))
    expected_first, expected_second = lds_exchange_expected(values)
    np.testing.assert_array_equal(first, expected_first)
    np.testing.assert_array_equal(second, expected_second)


@pytest.mark.parametrize(("order", "stale_half"), [("forward", 0), ("reverse", 1)])
def test_a_missing_barrier_shows_in_one_schedule_order(runner: KernelRunner,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       order: str, stale_half: int) -> None:
    """Thread t reads slot 127 - t without a barrier: the threads scheduled before their
    writer read poison, so running both orders exposes every such read."""
    monkeypatch.setenv("RDNA_EMULATOR_SCHEDULE", order)
    out = np.zeros(128, dtype=np.int32)
    runner.run("faults", "emu_fault_missing_barrier", 1, 128, pointer(out))
    halves = out.reshape(2, 64)
    correct = (128 - np.arange(128)).reshape(2, 64)
    np.testing.assert_array_equal(halves[stale_half], LDS_POISON_INT32)
    np.testing.assert_array_equal(halves[1 - stale_half], correct[1 - stale_half])
