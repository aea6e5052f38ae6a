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


def test_offline_generate_defaults(tiny_checkpoints: dict[str, Path]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_RDNA_W8A8_") and k != "VLLM_PLUGINS"}
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE), "--max-tokens", "8"],
        capture_output=True, text=True, timeout=900, env=env, check=False,
    )
    seconds = time.monotonic() - started
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    out = completed.stdout
    # built (or found) the same cached tiny int8 model the other tests use
    assert f"tiny W8A8 int8 model: {tiny_checkpoints['int8']}" in out
    assert len(re.findall(r"^completion: '.+'$", out, flags=re.MULTILINE)) == 3
    # on the CPU every W8A8 linear layer is served by vLLM's CPU int8 kernel
    assert re.search(r"rank 0 \(pid \d+\): CPUInt8ScaledMMLinearKernel x8, UnquantizedEmbeddingMethod x1", out), out
    print(f"offline_generate.py took {seconds:.0f} s")
