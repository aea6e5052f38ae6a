"""Fixtures for the plugin tests: fresh interpreters, and vLLM state put back afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

PLUGIN_ENV_VARS = ("VLLM_RDNA_W8A8_EMULATE", "VLLM_RDNA_W8A8_OPS", "VLLM_PLUGINS", "VLLM_RDNA_W8A8_CPU_WORKAROUNDS")


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess]:
    """Run a snippet in a fresh interpreter (the venv's), without our env overrides."""

    def run(code: str, env: dict[str, str] | None = None, timeout: float = 300):
        child_env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV_VARS}
        child_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def fresh_plugin_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let register_plugin() run again, and undo what it did to vLLM's globals."""
    from vllm.model_executor.kernels import linear
    from vllm.model_executor.layers import quantization

    import vllm_rdna_w8a8.plugin as plugin

    for name in PLUGIN_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    tables = (linear._POSSIBLE_INT8_KERNELS, linear._POSSIBLE_FP8_KERNELS)
    saved_tables = [{k: list(v) for k, v in table.items()} for table in tables]
    saved_methods = list(quantization.QUANTIZATION_METHODS)
    saved_custom = dict(quantization._CUSTOMIZED_METHOD_TO_QUANT_CONFIG)
    monkeypatch.setattr(plugin, "_outcome", None)
    yield
    for table, saved in zip(tables, saved_tables):
        table.clear()
        table.update(saved)
    quantization.QUANTIZATION_METHODS[:] = saved_methods
    quantization._CUSTOMIZED_METHOD_TO_QUANT_CONFIG.clear()
    quantization._CUSTOMIZED_METHOD_TO_QUANT_CONFIG.update(saved_custom)
