"""AMD Quark checkpoints under `--quantization rdna_w8a8` (issue 14): the tiny checkpoint
quantized by amd-quark with Quark's `int8` scheme (per-tensor static int8 weights and
activations) generates on the emulated gfx1100 with our int8 kernels serving every
linear layer, and its greedy tokens match vLLM's own CPU path on the same checkpoint
(default method, upstream kernels).
"""

from __future__ import annotations

import pytest

from e2e_support import MAX_TOKENS, EngineGroup, assert_greedy_tokens_match, kernel_counts, launches, plugin_log_lines

pytestmark = pytest.mark.slow

OUR_INT8 = "RdnaHipInt8ScaledMMLinearKernel"
LINEAR_LAYERS = 8  # 2 layers x (qkv, o, gate_up, down)


def test_upstream_cpu_serves_the_quark_checkpoint(cpu_engines: EngineGroup) -> None:
    counts = kernel_counts(cpu_engines.run("quark_int8"))
    assert counts.get("CPUInt8ScaledMMLinearKernel") == LINEAR_LAYERS, counts


def test_quark_int8_under_rdna_w8a8_on_our_kernels(emulated_quark_engines: EngineGroup,
                                                   cpu_engines: EngineGroup) -> None:
    result = emulated_quark_engines.run("quark_int8_rdna")
    assert kernel_counts(result).get(OUR_INT8) == LINEAR_LAYERS, kernel_counts(result)
    loaded = result["workers"][0]["hip_kernels_loaded"]
    assert any(name.startswith("w8a8_i8") and "gemm" in name for name in loaded), loaded
    assert launches(result["workers"][0], "w8a8_i8") >= LINEAR_LAYERS * MAX_TOKENS, result["workers"][0]
    log = emulated_quark_engines.run_log("quark_int8_rdna")
    assert "does not match" not in log
    assert f"Selected {OUR_INT8}" in log
    lines = plugin_log_lines(log)
    assert lines and all("emulated gfx1100" in line for line in lines), lines
    assert_greedy_tokens_match(result, cpu_engines.run("quark_int8"))
