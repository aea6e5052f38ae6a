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


def _emulate(monkeypatch, target: str) -> None:
    """The doctor's view of an emulated `target` device, with the ops on the reference."""
    from vllm_rdna_w8a8 import settings
    from vllm_rdna_w8a8.scaled_mm import support

    monkeypatch.setenv(settings.OPS_ENV, "reference")  # no emulator build needed
    monkeypatch.setattr(settings, "emulated_targets", lambda: (target,))
    support.code_object_problem.cache_clear()


def test_report_with_an_emulated_gfx11_device(fresh_plugin_state, monkeypatch) -> None:
    from vllm_rdna_w8a8.tools.doctor import collect_report, format_report

    _emulate(monkeypatch, "gfx1102")
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
    from vllm.version import __version__ as vllm_version

    assert f"vLLM: {vllm_version}" in result.stdout  # the installed one (0.32 here, 0.33 in the overlay check)
    assert "<- vLLM picks this" in result.stdout


def test_unknown_command_is_a_usage_error(capsys) -> None:
    from vllm_rdna_w8a8.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fix-everything"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fix-everything'" in capsys.readouterr().err


def test_doctor_exits_1_when_registration_failed(fresh_plugin_state, monkeypatch, capsys) -> None:
    # Issue 11: the doctor exited 0 after the plugin's registration had failed.
    import vllm_rdna_w8a8.plugin as plugin
    from vllm_rdna_w8a8.tools.doctor import main

    def broken() -> str:
        raise RuntimeError("simulated")

    monkeypatch.setattr(plugin, "_register", broken)
    assert main() == 1
    assert "plugin: rdna_w8a8: registration failed (RuntimeError: simulated)" in capsys.readouterr().out


def test_doctor_exits_0_on_a_machine_without_gfx11(fresh_plugin_state, capsys) -> None:
    from vllm_rdna_w8a8.tools.doctor import main

    assert main() == 0
    assert "no ROCm GPU visible" in capsys.readouterr().out


def test_doctor_names_the_tuning_table_it_ignores(fresh_plugin_state, monkeypatch, tmp_path) -> None:
    # Issue 11: a user table the dispatcher ignored (or that crashed every GEMM) left the
    # doctor saying all was well.
    from vllm_rdna_w8a8.dispatch import tables
    from vllm_rdna_w8a8.tools.doctor import collect_report, exit_code, format_report

    _emulate(monkeypatch, "gfx1102")
    (tmp_path / "gfx1102.json").mkdir()
    monkeypatch.setenv(tables.TUNING_DIR_ENV, str(tmp_path))
    report = collect_report()
    text = format_report(report)
    assert (f"    tuning tables: user {tmp_path / 'gfx1102.json'}: ignored (a directory, not a table file); "
            f"shipped {tables.shipped_table_path('gfx1102')}: used (") in text
    assert exit_code(report) == 0  # the dispatcher falls back: the plugin still serves


@pytest.mark.slow  # ~15 s: a fresh interpreter imports vLLM (the reader's checks have fast tests)
def test_doctor_on_a_damaged_quantization_object_reports_it_and_exits_1(tmp_path) -> None:
    # Issue 11: .strtab's section offset past the file in quant_int8.hsaco: doctor segfaulted.
    from vllm_rdna_w8a8.testing.damaged_code_object import run_emulated_on, shipped_with_section_past_the_end

    objects = tmp_path / "objects"
    quant = shipped_with_section_past_the_end(objects, "quant_int8.hsaco", ".strtab")
    result = run_emulated_on(objects, "import sys\nfrom vllm_rdna_w8a8.tools.doctor import main\nsys.exit(main())\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"code objects int8 unusable: code object unusable: {quant}: truncated or damaged (section 14, "
            "0x7fff00000000") in result.stdout
