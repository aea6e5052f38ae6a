"""Several emulated devices in one process (issue 10): the support check per device, a
mixed gfx11 + non-gfx11 box, an unloadable GEMM object, the doctor over every device and
a W8A8 layer on each device."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from vllm_rdna_w8a8.runtime import device, hip, launcher
from vllm_rdna_w8a8.runtime.launcher import OBJECTS_DIR, Launcher
from vllm_rdna_w8a8.scaled_mm import support
from vllm_rdna_w8a8.settings import EMULATE_ENV, OPS_ENV


@pytest.fixture
def emulate(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """emulate("gfx1100,gfx1030", objects_dir=None): those emulated devices, a fresh
    launcher (on `objects_dir` if given) and fresh support answers."""
    def apply(targets: str, objects_dir: Path = OBJECTS_DIR) -> None:
        monkeypatch.setenv(EMULATE_ENV, targets)
        monkeypatch.delenv(OPS_ENV, raising=False)
        monkeypatch.delenv(hip.EMULATOR_LIBRARY_ENV, raising=False)
        monkeypatch.setattr(hip, "_runtime", None)
        monkeypatch.setattr(launcher, "_default", Launcher(objects_dir))
        device.clear_caches()
        support.code_object_problem.cache_clear()

    yield apply
    device.clear_caches()
    support.code_object_problem.cache_clear()


def test_a_mixed_box_serves_its_gfx11_device_and_leaves_the_other_upstream(emulate) -> None:
    emulate("gfx1100,gfx1030")
    assert support.hip_kernels_usable("i8") == (True, None)
    with device.emulated_device(1):
        ok, reason = support.hip_kernels_usable("i8")
    assert not ok and "device 1 is gfx1030" in reason
    assert hip.get_runtime().current_device() == 0


def test_an_unloadable_gemm_object_falls_back_at_is_supported_time(emulate, tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    for target in ("gfx1100", "gfx1151"):
        shutil.copytree(OBJECTS_DIR / target, objects / target)
    gemm = objects / "gfx1151" / "int8_gemm.hsaco"
    gemm.write_bytes(gemm.read_bytes()[: gemm.stat().st_size // 2])  # truncated
    emulate("gfx1100,gfx1151", objects)
    with device.emulated_device(1):
        ok, reason = support.hip_kernels_usable("i8")
    assert support.hip_kernels_usable("i8") == (True, None)  # device 0's objects are sound
    assert not ok and "int8_gemm.hsaco: truncated or damaged" in reason
    assert hip.get_runtime().library.hipPeekAtLastError() == 0


TWO_DEVICES_SCRIPT = textwrap.dedent(
    """
    import torch
    from vllm_rdna_w8a8.ops import custom_ops, hip_backend, reference
    from vllm_rdna_w8a8.runtime import launcher
    from vllm_rdna_w8a8.runtime.device import emulated_device
    from vllm_rdna_w8a8.runtime.hip import get_runtime
    from vllm_rdna_w8a8.tools.doctor import collect_report, exit_code, format_report

    report = collect_report()
    print(format_report(report))
    assert [(d.index, d.target) for d in report.devices] == [(0, "gfx1100"), (1, "gfx1151")]
    assert all(d.usable and d.code_objects == "int8 present and loadable; fp8 present and loadable"
               for d in report.devices), report.devices
    assert exit_code(report) == 0

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(17, 80, generator=generator).to(torch.float16)
    weight = torch.randint(-128, 128, (40, 80), dtype=torch.int8, generator=generator)
    weight_scale = torch.rand(40, generator=generator) * 0.01
    for index in (1, 0):  # device 1 first, while the HIP runtime's current device is 0
        with emulated_device(index):
            q, scale, _ = custom_ops.scaled_int8_quant(x)
            out = custom_ops.int8_scaled_mm(q, weight, scale, weight_scale, torch.float16)
        q_ref, scale_ref, _ = reference.scaled_int8_quant(x)
        assert torch.equal(q, q_ref) and torch.equal(scale, scale_ref), index
        assert torch.equal(out, reference.int8_scaled_mm(q_ref, weight, scale_ref, weight_scale, torch.float16))
        assert get_runtime().current_device() == 0
    loaded = {(d, k.target) for (d, _name), k in launcher._default._kernels.items()}
    assert loaded == {(0, "gfx1100"), (1, "gfx1151")}, loaded
    print("TWO DEVICES OK")
    """
)


@pytest.mark.slow
def test_doctor_and_a_layer_on_each_of_two_emulated_devices() -> None:
    env = {**os.environ, EMULATE_ENV: "gfx1100,gfx1151"}
    env.pop(OPS_ENV, None)
    result = subprocess.run([sys.executable, "-c", TWO_DEVICES_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "device 1: gfx1151: code objects int8 present and loadable" in result.stdout
    assert "TWO DEVICES OK" in result.stdout
