"""The whole launch path in emulated mode: VLLM_RDNA_W8A8_EMULATE picks the device target
and the stand-in runtime, the launcher loads our real gfx1100 code object of the
quantization kernel into it and runs the emulated kernel on numpy buffers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from vllm_rdna_w8a8.build import DEFAULT_KERNELS_DIR, Clang, build, get_target
from vllm_rdna_w8a8.build.compile import KERNEL_ABI_NAME
from vllm_rdna_w8a8.runtime import hip
from vllm_rdna_w8a8.runtime.hip import HipError
from vllm_rdna_w8a8.runtime.launcher import KernelArg, Launcher

pytestmark = pytest.mark.slow  # builds the emulator library on a cold cache
QUANT_SOURCE = DEFAULT_KERNELS_DIR / "quant_int8.hip"


@pytest.fixture(scope="module")
def quant_objects(clang: Clang, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not QUANT_SOURCE.is_file():
        pytest.skip(f"{QUANT_SOURCE} not written yet")
    root = tmp_path_factory.mktemp("quant")
    kernels = root / "kernels"
    shutil.copytree(DEFAULT_KERNELS_DIR / "common", kernels / "common")
    shutil.copy(DEFAULT_KERNELS_DIR / KERNEL_ABI_NAME, kernels)
    shutil.copy(QUANT_SOURCE, kernels)
    build(clang, [get_target("gfx1100")], kernels, root / "objects", root / "work", log=lambda _: None)
    return root / "objects"


@pytest.fixture
def emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm_rdna_w8a8.emulation import build_emulator

    monkeypatch.setenv("VLLM_RDNA_W8A8_EMULATE", "gfx1100")
    monkeypatch.setenv(hip.EMULATOR_LIBRARY_ENV, str(build_emulator([QUANT_SOURCE])))
    monkeypatch.setattr(hip, "_runtime", None)


def test_quantization_kernel_runs_through_the_launcher(quant_objects: Path, emulated: None) -> None:
    rows, k, ldq = 3, 40, 48
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 4, size=(rows, k)).astype(np.float16)
    x[1] = 0  # a zero row quantizes to zeros with scale 0
    q = np.full((rows, ldq), 99, dtype=np.int8)
    scale = np.full(rows, -1.0, dtype=np.float32)

    launcher = Launcher(quant_objects)  # default target lookup and runtime: the emulated ones
    kernel = launcher.get_kernel(0, "w8a8_quant_i8_f16")
    assert kernel.target == "gfx1100"
    kernel.launch((rows,), (256,), [
        KernelArg.pointer(x.ctypes.data), KernelArg.pointer(q.ctypes.data),
        KernelArg.pointer(scale.ctypes.data), KernelArg.pointer(None),
        KernelArg.int32(rows), KernelArg.int32(k), KernelArg.int32(k), KernelArg.int32(ldq),
        KernelArg.uint32(0),
    ])
    absmax = np.abs(x.astype(np.float32)).max(axis=1)
    np.testing.assert_array_equal(scale, absmax / np.float32(127))
    assert np.all(q[:, k:] == 0) and np.all(q[1] == 0)
    expected = np.rint(x[[0, 2]].astype(np.float32) * (np.float32(127) / absmax[[0, 2], None]))
    # The exact rounding is the kernel tests' business; here: every value landed in place.
    assert np.abs(q[[0, 2], :k].astype(np.int32) - expected).max() <= 1


def test_stand_in_runtime_errors_become_hip_errors(quant_objects: Path, emulated: None) -> None:
    runtime = hip.get_runtime()
    with pytest.raises(HipError, match=r"hipModuleLoadData failed with error \d+"):
        runtime.load_module(b"\x7fELF" + b"\0" * 60)
    module = runtime.load_module((quant_objects / "gfx1100" / "quant_int8.hsaco").read_bytes())
    with pytest.raises(HipError, match=r"hipModuleGetFunction\('no_such_kernel'\) failed"):
        runtime.get_function(module, "no_such_kernel")
    runtime.unload_module(module)
