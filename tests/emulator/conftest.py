"""Fixtures for the emulator tests: the test kernels compiled for a real gfx1100, and ways to
run them in the emulator library (plain and sanitized: emulator_library and sanitized_library
of tests/conftest.py, which the emulation.py tests share)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from emu_driver import GFX1100, TEST_KERNELS_DIR, KernelRunner, StandInRuntime  # on the path: tests/conftest.py
from vllm_rdna_w8a8.build import build, find_clang, get_target
from vllm_rdna_w8a8.emulation import BUILD_DIR, sanitizer_env

TEST_OBJECTS_DIR = BUILD_DIR / "test-objects"
DRIVER = Path(__file__).resolve().with_name("emu_driver.py")
SUBPROCESS_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def test_objects() -> Path:
    """tests/emulator/kernels/*.hip compiled for gfx1100 by the package's build module
    (the same flags and device libraries as the shipped kernels); cached between runs."""
    build(find_clang(), [get_target(GFX1100)], kernels_dir=TEST_KERNELS_DIR,
          objects_dir=TEST_OBJECTS_DIR, work_dir=BUILD_DIR, log=lambda line: None)
    return TEST_OBJECTS_DIR


@pytest.fixture(scope="session")
def runtime(emulator_library: Path) -> StandInRuntime:
    return StandInRuntime(emulator_library)


@pytest.fixture(scope="session")
def runner(runtime: StandInRuntime, test_objects: Path) -> KernelRunner:
    return KernelRunner(runtime, test_objects)


DriverRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def run_driver(test_objects: Path, request: pytest.FixtureRequest) -> DriverRun:
    """Runs one emu_driver.py scenario in a subprocess, against the sanitized library
    (in sanitizer_env()) or the plain one."""

    def run(scenario: str, *, sanitized: bool,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        library = request.getfixturevalue(
            "sanitized_library" if sanitized else "emulator_library")
        env = sanitizer_env() if sanitized else dict(os.environ)
        return subprocess.run(
            [sys.executable, str(DRIVER), str(library), str(test_objects), scenario],
            env={**env, **(extra_env or {})}, capture_output=True, text=True,
            timeout=SUBPROCESS_TIMEOUT_S, check=False,
        )

    return run
