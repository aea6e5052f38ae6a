"""`python -m vllm_rdna_w8a8 doctor` says something useful on this CPU machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_report_on_plain_cpu(fresh_plugin_state) -> None:
    from vllm_rdna_w8a8.tools.doctor import collect_report, format_report

    report = collect_report()
    assert report.platform == "cpu" and report.devices == []
    int8, fp8 = report.selections
    assert int8.chosen == "CPUInt8ScaledMMLinearKernel"
    assert [c.name for c in int8.candidates] == ["ZentorchInt8ScaledMMLinearKernel", "CPUInt8ScaledMMLinearKernel"]
    assert fp8.candidates and all(c.reason for c in fp8.candidates)
    text = format_report(report)
    assert "plugin: rdna_w8a8: platform cpu, quantization method registered, staying on upstream kernels" in text
    assert "[yes] CPUInt8ScaledMMLinearKernel: ok  <- vLLM picks this" in text
    assert "no ROCm GPU visible" in text
    # which machine a report came from: vLLM-CPU's int8 path differs per x86 class
    from vllm_rdna_w8a8.cpu_stack import describe

    assert f"\ncpu: {describe()}\n" in text


def test_report_with_an_emulated_gfx11_device(fresh_plugin_state, monkeypatch) -> None:
    from vllm_rdna_w8a8.scaled_mm import support
    from vllm_rdna_w8a8.tools.doctor import collect_report, format_report

    monkeypatch.setenv("VLLM_RDNA_W8A8_OPS", "reference")  # no emulator build needed
    monkeypatch.setattr(support, "emulated_target", lambda: "gfx1102")
    import vllm_rdna_w8a8.runtime.device as device

    monkeypatch.setattr(device, "emulated_target", lambda: "gfx1102")
    support.code_object_problem.cache_clear()
    report = collect_report()
    assert report.devices[0].target == "gfx1102"
    assert report.selections[0].chosen == "RdnaHipInt8ScaledMMLinearKernel"
    text = format_report(report)
    assert "[yes] RdnaHipInt8ScaledMMLinearKernel: ok  <- vLLM picks this" in text
    assert "[yes] CPUInt8ScaledMMLinearKernel: ok\n" in text


@pytest.mark.slow
@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "vllm_rdna_w8a8", "doctor"],
    [str(Path(sys.executable).with_name("vllm-rdna-w8a8")), "doctor"],
])
def test_doctor_command_runs(command) -> None:
    assert Path(command[0]).exists(), f"{command[0]} missing: the package is not installed (pip install -e .)"
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "vLLM: 0.32.0" in result.stdout
    assert "<- vLLM picks this" in result.stdout


def test_unknown_command_is_a_usage_error(capsys) -> None:
    from vllm_rdna_w8a8.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fix-everything"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fix-everything'" in capsys.readouterr().err
