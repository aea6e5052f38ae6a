"""Fixtures shared across test folders."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build import Clang, CompilerNotFound, find_clang

# The plugin logs under vLLM's logger tree; everything else in caplog is vLLM's or torch's
# and differs by machine (vLLM-CPU logs CPU-feature notes on AVX-512 and AMX machines).
PLUGIN_LOGGER = "vllm.rdna_w8a8"
REPO = Path(__file__).resolve().parents[1]

# emu_driver: the emulator tests' kernels and runtime helpers, which the emulation.py tests
# (tests/emulation) use too; it also runs as a script, so it is a plain module on the path.
sys.path.insert(0, str(REPO / "tests" / "emulator"))
from emu_driver import emulator_test_sources  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # Every vLLM process the tests start (they inherit this) works around the vLLM-CPU
    # defects of cpu_stack's ledger; tests of the plain plugin remove it for their child.
    from vllm_rdna_w8a8.cpu_stack import WORKAROUNDS_ENV

    os.environ[WORKAROUNDS_ENV] = "1"


def pytest_report_header() -> str:
    # vLLM-CPU behaves differently per x86-64 class: every report says which one it ran on.
    from vllm_rdna_w8a8.cpu_stack import describe

    return f"CPU: {describe()}"


@pytest.fixture(scope="session")
def clang() -> Clang:
    """The gfx11-capable clang the build module finds (installed by .ci/install-toolchain.sh)."""
    try:
        return find_clang()
    except CompilerNotFound as exc:
        pytest.skip(f"no gfx11-capable clang here: {exc}")


@pytest.fixture(scope="session")
def emulator_library() -> Path:
    """The emulator library holding tests/emulator/kernels (cached in build/emulator/)."""
    from vllm_rdna_w8a8.emulation import build_emulator

    return build_emulator(emulator_test_sources())


@pytest.fixture(scope="session")
def sanitized_library() -> Path:
    """The same under AddressSanitizer + UBSan: load it only in a process started with
    emulation.sanitizer_env()."""
    from vllm_rdna_w8a8.emulation import build_emulator

    return build_emulator(emulator_test_sources(), sanitize=True)


@pytest.fixture
def plugin_messages(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The messages the plugin itself logged so far in this test (caplog, own logger only)."""
    caplog.set_level(logging.INFO, logger=PLUGIN_LOGGER)

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == PLUGIN_LOGGER]

    return messages


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


# The plugin's own settings and vLLM's plugin switch: the plugin and doctor tests start
# without them.
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
