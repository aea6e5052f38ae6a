"""Fixtures of the runtime tests: the probe kernels compiled by our build module, and a
recording fake of libamdhip64 compiled from fake_hip.c."""

from __future__ import annotations

import ctypes
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build import Clang, build, get_target
from vllm_rdna_w8a8.runtime.hip import HipRuntime, load_runtime

HERE = Path(__file__).parent
PROBE_TARGETS = ("gfx1100", "gfx1151")


@pytest.fixture(scope="session")
def probe_objects(clang: Clang, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An objects directory (<target>/probe_args.hsaco) built from tests/runtime/kernels."""
    root = tmp_path_factory.mktemp("runtime-objects")
    build(clang, [get_target(t) for t in PROBE_TARGETS], HERE / "kernels", root / "objects",
          root / "work", log=lambda _: None)
    return root / "objects"


@pytest.fixture(scope="session")
def fake_hip_library(clang: Clang, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("fake-hip") / "libfake_hip.so"
    c_compiler = clang.bin_dir / "clang"
    subprocess.run([str(c_compiler), "-shared", "-fPIC", "-O1", str(HERE / "fake_hip.c"),
                    "-o", str(output)], check=True, capture_output=True, text=True)
    return output


@pytest.fixture
def fake_hip(fake_hip_library: Path) -> HipRuntime:
    return load_runtime(fake_hip_library)


LastLaunch = Callable[[HipRuntime], tuple[bytes, tuple[int, ...]]]


def _last_launch(runtime: HipRuntime) -> tuple[bytes, tuple[int, ...]]:
    buffer = (ctypes.c_ubyte * 1024)()
    dims = (ctypes.c_uint * 7)()
    runtime.library.fake_last_kernargs.restype = ctypes.c_size_t
    size = runtime.library.fake_last_kernargs(buffer, dims)
    return bytes(buffer[:size]), tuple(dims)


@pytest.fixture
def last_launch() -> LastLaunch:
    """Reads (kernarg bytes, (gx, gy, gz, bx, by, bz, shared)) of the fake's last launch."""
    return _last_launch
