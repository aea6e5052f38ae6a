"""gfx11 simulated inside the engine processes (`VLLM_RDNA_W8A8_EMULATE=gfx1100`): our
kernel class is really selected for every W8A8 linear layer, in every worker, and the
tokens match vLLM's own CPU int8 path.

Two op backends: the reference implementation (`VLLM_RDNA_W8A8_OPS=reference`, plain
torch, exact int8 math) and the real HIP kernels running in the emulator through the
stand-in HIP runtime.
"""

from __future__ import annotations

import re

import pytest

from e2e_support import MAX_TOKENS, EngineGroup, assert_greedy_tokens_match, kernel_counts, launches, plugin_log_lines

pytestmark = pytest.mark.slow

OUR_INT8 = "RdnaHipInt8ScaledMMLinearKernel"
LINEAR_LAYERS = 8  # per worker: 2 layers x (qkv, o, gate_up, down); each TP rank holds a shard of each


def _assert_ours_everywhere(group: EngineGroup, run_name: str, workers: int, hip_kernels: bool) -> None:
    """Our class serves every W8A8 layer of every worker; `hip_kernels`: the ops ran our
    HIP kernels (emulated), else the reference implementation (no kernel loaded)."""
    result = group.run(run_name)
    assert len({worker["pid"] for worker in result["workers"]}) == workers
    for worker in result["workers"]:
        assert worker["plugin_loaded"], worker["pid"]
        loaded, launched = worker["hip_kernels_loaded"], worker["hip_kernels_launched"]
        if hip_kernels:
            assert any(name.startswith("w8a8_i8_gemm_") for name in loaded), loaded
            assert any(name.startswith("w8a8_quant_i8_") for name in loaded), loaded
            # w8a8_i8_gemm_* or the fused decode w8a8_i8q_*: one per layer and step at least
            assert launches(worker, "w8a8_i8") >= LINEAR_LAYERS * MAX_TOKENS, launched
        else:
            assert loaded == [] and launched == {}, (loaded, launched)
    assert kernel_counts(result).get(OUR_INT8) == LINEAR_LAYERS * workers, kernel_counts(result)

    log = group.run_log(run_name)
    assert f"Selected {OUR_INT8}" in log
    lines = plugin_log_lines(log)
    assert lines and all("emulated gfx1100" in line for line in lines), lines
    # the plugin logged its line in every worker process that served the model
    logged_pids = {int(pid) for line in lines for pid in re.findall(r"pid=(\d+)", line)}
    missing = {worker["pid"] for worker in result["workers"]} - logged_pids
    assert not missing, f"no plugin log line from worker(s) {missing}"


@pytest.mark.parametrize("run_name", ["int8", "int8_rdna"])
def test_reference_ops_tp1(emulated_reference_engines: EngineGroup, cpu_engines: EngineGroup, run_name: str) -> None:
    """Default compressed-tensors method and `quantization="rdna_w8a8"` both route to us."""
    _assert_ours_everywhere(emulated_reference_engines, run_name, workers=1, hip_kernels=False)
    assert_greedy_tokens_match(emulated_reference_engines.run(run_name), cpu_engines.run("int8"))


def test_reference_ops_tp2(emulated_reference_tp2_engines: EngineGroup, cpu_engines: EngineGroup) -> None:
    _assert_ours_everywhere(emulated_reference_tp2_engines, "int8_tp2", workers=2, hip_kernels=False)
    assert_greedy_tokens_match(emulated_reference_tp2_engines.run("int8_tp2"), cpu_engines.run("int8"))


def test_emulated_kernels_tp1(
    emulated_kernel_engines: EngineGroup, emulated_reference_engines: EngineGroup, cpu_engines: EngineGroup
) -> None:
    _assert_ours_everywhere(emulated_kernel_engines, "int8", workers=1, hip_kernels=True)
    assert_greedy_tokens_match(emulated_kernel_engines.run("int8"), cpu_engines.run("int8"))
    # and the oracle: the same engine configuration with the ops on the reference implementation
    assert_greedy_tokens_match(emulated_kernel_engines.run("int8"), emulated_reference_engines.run("int8_rdna"))


def test_emulated_kernels_tp2(emulated_kernel_tp2_engines: EngineGroup, cpu_engines: EngineGroup) -> None:
    _assert_ours_everywhere(emulated_kernel_tp2_engines, "int8_tp2", workers=2, hip_kernels=True)
    assert_greedy_tokens_match(emulated_kernel_tp2_engines.run("int8_tp2"), cpu_engines.run("int8"))
