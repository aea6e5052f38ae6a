"""Engines shared by the end-to-end tests: each group runs once per session, in a subprocess.

vLLM start-up dominates (measured on this 2-core machine: 25-35 s per tiny-model engine
when idle, up to 60-100 s under load, plus about 11 s to import vLLM per subprocess), so
every group starts its engines one after another in one runner process, and the tests
only look at the recorded tokens, logprobs, kernel probes and logs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_support import (
    MOE_SCHEMES,
    MOE_TP2_KERNEL_SCHEMES,
    MOE_TP2_REFERENCE_SCHEMES,
    PROMPTS,
    SCORED_TEXT,
    SCORED_TOP_LOGPROBS,
    EngineGroup,
    run_engine_group,
    run_spec,
)
from vllm_rdna_w8a8.testing.tiny_model import TinyMoESpec, build_tiny_model

EMULATED_TARGET = "gfx1100"
# Switches of the plugin that must not leak in from the developer's shell.
PLUGIN_SWITCHES_OFF: dict[str, str | None] = {
    "VLLM_RDNA_W8A8_EMULATE": None,
    "VLLM_RDNA_W8A8_OPS": None,
    "VLLM_PLUGINS": None,
    "VLLM_DISABLED_KERNELS": None,
}
# Tensor parallelism 2 on a 2-core machine: one core per worker (vLLM refuses otherwise).
TP2_ENV = {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}
TP2 = {"tensor_parallel_size": 2}
RDNA = {"quantization": "rdna_w8a8"}
EMULATED_REFERENCE_OPS = {"VLLM_RDNA_W8A8_EMULATE": EMULATED_TARGET, "VLLM_RDNA_W8A8_OPS": "reference"}


@pytest.fixture(scope="session")
def tiny_checkpoints() -> dict[str, Path]:
    return {scheme: build_tiny_model(scheme) for scheme in ("int8", "fp16", "fp8", "quark-int8")}


def _group(tmp_path_factory: pytest.TempPathFactory, name: str, runs: list, env: dict) -> EngineGroup:
    return run_engine_group(runs, {**PLUGIN_SWITCHES_OFF, **env}, tmp_path_factory.mktemp(name))


@pytest.fixture(scope="session")
def cpu_engines(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> EngineGroup:
    """Plain CPU platform, plugin installed: upstream kernels whatever the method."""
    int8, fp16 = tiny_checkpoints["int8"], tiny_checkpoints["fp16"]
    # the fp16 runs also score SCORED_TEXT (last prompt) through its prompt logprobs
    scored = {"prompts": [*PROMPTS, SCORED_TEXT], "prompt_logprobs": SCORED_TOP_LOGPROBS}
    runs = [
        run_spec("int8", int8),
        run_spec("int8_rdna", int8, RDNA),
        run_spec("fp16", fp16, **scored),
        run_spec("fp16_rdna", fp16, RDNA, **scored),
        run_spec("fp8", tiny_checkpoints["fp8"]),
        run_spec("quark_int8", tiny_checkpoints["quark-int8"]),
    ]
    return _group(tmp_path_factory, "cpu", runs, {})


@pytest.fixture(scope="session")
def emulated_reference_engines(
    tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> EngineGroup:
    """gfx1100 emulated, our kernel class selected, ops on the reference implementation."""
    int8 = tiny_checkpoints["int8"]
    runs = [run_spec("int8", int8), run_spec("int8_rdna", int8, RDNA)]
    return _group(tmp_path_factory, "emulated-reference", runs, EMULATED_REFERENCE_OPS)


@pytest.fixture(scope="session")
def emulated_reference_tp2_engines(
    tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> EngineGroup:
    runs = [run_spec("int8_tp2", tiny_checkpoints["int8"], TP2)]
    return _group(tmp_path_factory, "emulated-reference-tp2", runs, {**EMULATED_REFERENCE_OPS, **TP2_ENV})


@pytest.fixture(scope="session")
def emulated_kernel_engines(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> EngineGroup:
    """gfx1100 emulated with the real HIP kernels running in the emulator; fp8 through the
    default compressed-tensors method and through rdna_w8a8."""
    fp8 = tiny_checkpoints["fp8"]
    runs = [run_spec("int8", tiny_checkpoints["int8"], RDNA), run_spec("fp8", fp8), run_spec("fp8_rdna", fp8, RDNA)]
    return _group(tmp_path_factory, "emulated-kernels", runs, {"VLLM_RDNA_W8A8_EMULATE": EMULATED_TARGET})


@pytest.fixture(scope="session")
def emulated_kernel_tp2_engines(
    tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> EngineGroup:
    runs = [run_spec("int8_tp2", tiny_checkpoints["int8"], {**RDNA, **TP2})]
    env = {"VLLM_RDNA_W8A8_EMULATE": EMULATED_TARGET, **TP2_ENV}
    return _group(tmp_path_factory, "emulated-kernels-tp2", runs, env)


@pytest.fixture(scope="session")
def emulated_quark_engines(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> EngineGroup:
    """The AMD Quark int8 checkpoint under --quantization rdna_w8a8 on the emulated gfx1100,
    the real HIP kernels running in the emulator (about 55 s here)."""
    runs = [run_spec("quark_int8_rdna", tiny_checkpoints["quark-int8"], RDNA)]
    return _group(tmp_path_factory, "emulated-quark", runs, {"VLLM_RDNA_W8A8_EMULATE": EMULATED_TARGET})


@pytest.fixture(scope="session")
def tiny_moe_checkpoints() -> dict[str, Path]:
    return {scheme: build_tiny_model(scheme, spec=TinyMoESpec()) for scheme in MOE_SCHEMES}


def _moe_runs(checkpoints: dict[str, Path], schemes: tuple[str, ...], llm: dict) -> list:
    return [run_spec(scheme, checkpoints[scheme], llm) for scheme in schemes]


@pytest.fixture(scope="session")
def cpu_moe_engines(tiny_moe_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> EngineGroup:
    """Plain CPU platform, default compressed-tensors method: vLLM-CPU's int8 MoE experts
    (they exist on AMX machines only)."""
    return _group(tmp_path_factory, "cpu-moe", _moe_runs(tiny_moe_checkpoints, ("int8",), {}), {})


@pytest.fixture(scope="session")
def emulated_moe_reference_engines(
    tiny_moe_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> EngineGroup:
    """gfx1100 emulated, ops on the reference: our experts under rdna_w8a8, every scheme."""
    runs = _moe_runs(tiny_moe_checkpoints, MOE_SCHEMES, RDNA)
    return _group(tmp_path_factory, "emulated-moe-reference", runs, EMULATED_REFERENCE_OPS)


@pytest.fixture(scope="session")
def emulated_moe_reference_tp2_engines(
    tiny_moe_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> EngineGroup:
    runs = _moe_runs(tiny_moe_checkpoints, MOE_TP2_REFERENCE_SCHEMES, {**RDNA, **TP2})
    return _group(tmp_path_factory, "emulated-moe-reference-tp2", runs, {**EMULATED_REFERENCE_OPS, **TP2_ENV})


@pytest.fixture(scope="session")
def emulated_moe_kernel_engines(
    tiny_moe_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> EngineGroup:
    """gfx1100 emulated with our HIP kernels (dense and MoE) running in the emulator, every scheme."""
    runs = _moe_runs(tiny_moe_checkpoints, MOE_SCHEMES, RDNA)
    return _group(tmp_path_factory, "emulated-moe-kernels", runs, {"VLLM_RDNA_W8A8_EMULATE": EMULATED_TARGET})


@pytest.fixture(scope="session")
def emulated_moe_kernel_tp2_engines(
    tiny_moe_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> EngineGroup:
    runs = _moe_runs(tiny_moe_checkpoints, MOE_TP2_KERNEL_SCHEMES, {**RDNA, **TP2})
    env = {"VLLM_RDNA_W8A8_EMULATE": EMULATED_TARGET, **TP2_ENV}
    return _group(tmp_path_factory, "emulated-moe-kernels-tp2", runs, env)
