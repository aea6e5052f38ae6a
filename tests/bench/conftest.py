"""Shared fixtures of the benchmark/tuner tests: running the CLIs as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m <module> <args>` from the repository, without a GPU or emulation."""

    def run(module: str, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("VLLM_RDNA_W8A8_EMULATE", "VLLM_RDNA_W8A8_TUNING_DIR")}
        environment["PYTHONPATH"] = str(REPO)
        environment.update(env or {})
        return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=environment,
                              capture_output=True, text=True, timeout=120)

    return run
