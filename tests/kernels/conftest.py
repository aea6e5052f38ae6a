"""Fixtures of the kernel tests: our HIP kernels (plus the accumulator probe) compiled for
gfx1100 by the build module, the AddressSanitizer build of the emulator holding the same
sources, and `run_launches`, which executes launches in a sanitized subprocess through the
runtime launcher and returns every array after its launch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from kernel_harness import KERNELS_DIR, REPO, Launch, RunLaunches
from vllm_rdna_w8a8.build import build, find_clang, get_target
from vllm_rdna_w8a8.emulation import build_emulator, sanitizer_env
from vllm_rdna_w8a8.runtime.hip import EMULATOR_LIBRARY_ENV
from vllm_rdna_w8a8.settings import EMULATE_ENV, OPS_ENV

HERE = Path(__file__).resolve().parent
PROBE_SOURCES = sorted((HERE / "probe").glob("*.hip"))
RUNNER = HERE / "kernel_runner.py"
TARGET = "gfx1100"
OBJECTS_CACHE = REPO / "build" / "kernel-tests"
RUN_TIMEOUT_S = 1800
# The emulator runs a workgroup's threads in this order between barriers ("forward" or
# "reverse"): a missing barrier shows up as a difference between the two.
SCHEDULE_ENV = "RDNA_EMULATOR_SCHEDULE"


@pytest.fixture(scope="session")
def kernel_objects() -> Path:
    """gfx1100 code objects of kernels/*.hip and the probe (the stand-in runtime loads real
    images and serves only the kernels they define)."""
    sources = OBJECTS_CACHE / "sources"
    # Links to every file (not to directories: the build's header digest does not follow
    # directory links), so that the build sees exactly kernels/ plus the probe.
    wanted = {path.relative_to(KERNELS_DIR): path
              for path in KERNELS_DIR.rglob("*") if path.is_file() and path.suffix != ".hip"}
    wanted.update({Path(path.name): path for path in [*KERNELS_DIR.glob("*.hip"), *PROBE_SOURCES]})
    for path in sorted(sources.rglob("*"), reverse=True) if sources.exists() else []:
        if path.is_symlink() and path.relative_to(sources) not in wanted:
            path.unlink()
    for relative, target in wanted.items():
        link = sources / relative
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    build(find_clang(), [get_target(TARGET)], sources, OBJECTS_CACHE / "objects",
          OBJECTS_CACHE / "work", log=lambda _: None)
    return OBJECTS_CACHE / "objects"


@pytest.fixture(scope="session")
def sanitized_emulator() -> Path:
    return build_emulator([*sorted(KERNELS_DIR.glob("*.hip")), *PROBE_SOURCES], sanitize=True)


@pytest.fixture(scope="session")
def sanitized_ops_env(sanitized_emulator: Path) -> Callable[[str], dict[str, str]]:
    """The environment (threads scheduled in `schedule` order) of a subprocess that runs the
    production ops (ops/, moe/hip_backend.py) on CPU tensors through the sanitized emulator,
    emulating TARGET."""

    def env(schedule: str = "forward") -> dict[str, str]:
        environment = sanitizer_env({**os.environ, EMULATE_ENV: TARGET, SCHEDULE_ENV: schedule,
                                     EMULATOR_LIBRARY_ENV: str(sanitized_emulator)})
        environment.pop(OPS_ENV, None)
        return environment

    return env


@pytest.fixture(scope="session")
def run_launches(kernel_objects: Path, sanitized_emulator: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> RunLaunches:
    """Runs the launches in order in one sanitized subprocess (threads scheduled in
    `schedule` order); returns each launch's arrays as they are after it ran. Any sanitizer
    report or emulator abort fails the test."""

    def run(launches: Sequence[Launch], schedule: str = "forward") -> list[dict[str, np.ndarray]]:
        cases = tmp_path_factory.mktemp("cases")
        for index, launch in enumerate(launches):
            spec = {"kernel": launch.kernel, "grid": list(launch.grid),
                    "block": list(launch.block), "args": [list(arg) for arg in launch.args]}
            np.savez(cases / f"{index:05d}.in.npz", spec=np.array(json.dumps(spec)),
                     **launch.arrays)
        completed = subprocess.run(
            [sys.executable, str(RUNNER), str(sanitized_emulator), str(kernel_objects),
             str(cases)],
            env=sanitizer_env({**os.environ, EMULATE_ENV: TARGET, SCHEDULE_ENV: schedule}),
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
            cwd=REPO, check=False)
        if completed.returncode != 0:
            pytest.fail(f"kernel runner failed (exit {completed.returncode}):\n"
                        f"{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}")
        results = []
        for index in range(len(launches)):
            with np.load(cases / f"{index:05d}.out.npz") as data:
                results.append({name: data[name] for name in data.files})
        return results

    return run
