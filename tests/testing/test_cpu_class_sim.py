"""cpu_class_sim: a command sees the simulated class, the way vLLM-CPU and cpu_stack ask."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vllm_rdna_w8a8.testing import cpu_class_sim

PROBE = """
import os, torch
from vllm_rdna_w8a8 import cpu_stack
print(cpu_stack.cpu_class().name, cpu_stack.onednn_int8_sums_exact(), torch.backends.cpu.get_cpu_capability(),
      os.environ.get("ONEDNN_MAX_CPU_ISA", "-"))
"""


@pytest.mark.parametrize(("simulation", "expected"), [
    ("avx2", ["AVX2", "False", "AVX2", "AVX2"]),
    ("amx-routing", ["AVX512_AMX", "True"]),
])
def test_a_child_process_sees_the_simulated_class(simulation: str, expected: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vllm_rdna_w8a8.testing.cpu_class_sim", simulation, "--", sys.executable, "-c", PROBE],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:len(expected)] == expected


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cpu_class_sim.main(["avx2"])
    assert "give the command to run after --" in capsys.readouterr().err
