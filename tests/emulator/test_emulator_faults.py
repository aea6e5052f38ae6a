"""Hardware rules the emulator enforces: each broken rule ends the process with a message
naming the kernel and place, or (sanitized build) an AddressSanitizer report. Every case
runs in a subprocess; the sanitized ones in sanitizer_env()."""

from __future__ import annotations

import re
import signal

import pytest

SIGABRT_STATUS = -signal.SIGABRT
FAULTS_SOURCE = "faults.hip"


def assert_aborted(result, *patterns: str) -> None:
    assert result.returncode == SIGABRT_STATUS, (
        f"expected an abort, got status {result.returncode}\n{result.stdout}\n{result.stderr}")
    for pattern in patterns:
        assert re.search(pattern, result.stderr), f"{pattern!r} not in:\n{result.stderr}"


# (scenario, sanitized build, patterns stderr must match): a broken rule aborts the process.
ABORTS = [
    pytest.param("wmma_unreplicated", False, (
        r"kernel emu_fault_wmma_unreplicated, workgroup \(2,0,0\), wave 1, lane 21",
        r"operand A of lane 21 differs from lane 5",
        r"lanes 16-31 must replicate",
    ), id="unreplicated_wmma_lanes_name_kernel_workgroup_wave_and_lane"),
    pytest.param("divergent_barrier", False, (
        r"deadlock in kernel emu_fault_divergent_barrier",
        r"different __syncthreads\(\) calls",
        rf"threads 0-63 wait at __syncthreads\(\) \S*{FAULTS_SOURCE}:\d+",
        rf"threads 64-127 wait at __syncthreads\(\) \S*{FAULTS_SOURCE}:\d+",
    ), id="divergent_barriers_are_reported_not_waited_on"),
    pytest.param("exit_before_barrier", False, (
        r"deadlock in kernel emu_fault_exit_before_barrier, workgroup \(0,0,0\) of 128 threads",
        r"threads 96-127 have exited",
        r"threads 0-95 wait at __syncthreads\(\)",
    ), id="barrier_after_some_threads_exited_is_a_deadlock"),
    pytest.param("partial_wave_wmma", False, (
        r"kernel emu_fault_partial_wave_wmma, workgroup \(0,0,0\), wave 1",
        r"partial wave of 16 threads \(workgroup size 48",
    ), id="wmma_in_a_partial_wave_is_refused"),
    pytest.param("partial_shuffle", False, (
        r"deadlock in kernel emu_fault_partial_shuffle",
        r"threads 0-15 wait at __shfl_xor\(\)",
        r"threads 16-31 have exited",
    ), id="shuffle_not_reached_by_all_lanes_is_a_deadlock"),
    pytest.param("divergent_shuffles", False, (
        r"kernel emu_fault_divergent_shuffles, workgroup \(0,0,0\), wave 0: lanes reached "
        r"different wave operations",
        rf"lane 0 at __shfl_xor\(\) \(\S*{FAULTS_SOURCE}:(\d+)\), "
        rf"lane 16 at __shfl_xor\(\) \(\S*{FAULTS_SOURCE}:(\d+)\)",
    ), id="lanes_at_different_shuffles_are_refused"),
    pytest.param("global_overflow", True, (
        r"AddressSanitizer: heap-buffer-overflow",
        r"WRITE of size 4",
        rf"in emu_fault_global_overflow \S*{FAULTS_SOURCE}:\d+",
        r"0 bytes after 4000-byte region",
    ), id="out_of_bounds_global_write_is_caught_by_asan"),
    # The LDS object is exactly sizeof(T): one int past it is already an overflow.
    pytest.param("lds_overrun", True, (
        r"AddressSanitizer: heap-buffer-overflow",
        r"READ of size 4",
        rf"in emu_fault_lds_overrun \S*{FAULTS_SOURCE}:\d+",
        r"0 bytes after 256-byte region",
        r"workgroup_lds<SmallLds>",
    ), id="lds_overrun_is_caught_by_asan"),
]


@pytest.mark.parametrize(("scenario", "sanitized", "patterns"), ABORTS)
def test_broken_rule_aborts_with_a_message_naming_it(run_driver, scenario: str, sanitized: bool,
                                                     patterns: tuple[str, ...]) -> None:
    assert_aborted(run_driver(scenario, sanitized=sanitized), *patterns)


def test_undefined_behaviour_is_fatal_under_ubsan(run_driver) -> None:
    result = run_driver("misaligned_load", sanitized=True)
    assert result.returncode != 0
    assert re.search(rf"{FAULTS_SOURCE}:\d+:\d+: runtime error: load of misaligned address",
                     result.stderr), result.stderr


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("RDNA_EMULATOR_SCHEDULE", "sideways", "expected forward \\(thread 0 first\\) or reverse"),
    ("RDNA_EMULATOR_THREADS", "0", "expected a thread count from 1 to 64"),
])
def test_bad_emulator_settings_are_named(run_driver, variable: str, value: str,
                                         expected: str) -> None:
    result = run_driver("wave_ops", sanitized=False, extra_env={variable: value})
    assert_aborted(result, rf"{variable}={value}: {expected}")


def test_lds_overrun_goes_unnoticed_without_the_sanitizer(run_driver) -> None:
    """Why the kernels' tests run sanitized: the plain build cannot see it."""
    assert run_driver("lds_overrun", sanitized=False).returncode == 0


@pytest.mark.parametrize("scenario", ["wmma_signed", "wave_ops"])
def test_correct_kernels_run_clean_under_asan_and_ubsan(run_driver, scenario: str) -> None:
    result = run_driver(scenario, sanitized=True)
    assert result.returncode == 0, result.stderr
    assert f"{scenario} ok" in result.stdout
    assert result.stderr == ""  # no sanitizer report, not even a warning
