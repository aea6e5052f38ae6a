"""The tiny Qwen3-MoE checkpoint (`TinyMoESpec`): architecture, per-expert weights in the
layout vLLM's Qwen3-MoE loader reads (bf16, and int8 / fp8 in the compressed-tensors
format), and the schemes it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vllm_rdna_w8a8.testing.tiny_model import TinyModelSpec, TinyMoESpec, build_key, build_tiny_model

SPEC = TinyMoESpec()
EXPERT_SHAPES = {
    "gate_proj": (SPEC.moe_intermediate_size, SPEC.hidden_size),
    "up_proj": (SPEC.moe_intermediate_size, SPEC.hidden_size),
    "down_proj": (SPEC.hidden_size, SPEC.moe_intermediate_size),
}


@pytest.fixture(scope="module")
def moe_bf16(tiny_cache: Path) -> Path:
    return build_tiny_model("bf16", spec=SPEC, cache_dir=tiny_cache)


def test_config_is_a_top2_qwen3_moe(moe_bf16: Path) -> None:
    config = json.loads((moe_bf16 / "config.json").read_text())
    assert config["architectures"] == ["Qwen3MoeForCausalLM"]
    assert (config["num_local_experts"], config["num_experts_per_tok"]) == (4, 2)  # transformers 5 spelling
    assert config["moe_intermediate_size"] == SPEC.moe_intermediate_size
    assert config["norm_topk_prob"] is True
    assert config["decoder_sparse_step"] == 1 and config["mlp_only_layers"] == []
    assert config["dtype"] == "bfloat16"
    assert "quantization_config" not in config
    assert moe_bf16.name.startswith("moe-bf16-")


def test_experts_saved_one_linear_each(moe_bf16: Path) -> None:
    tensors = load_file(moe_bf16 / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    for layer in range(SPEC.num_hidden_layers):
        mlp = f"model.layers.{layer}.mlp"
        assert tuple(tensors[f"{mlp}.gate.weight"].shape) == (SPEC.num_experts, SPEC.hidden_size)
        for expert in range(SPEC.num_experts):
            for name, shape in EXPERT_SHAPES.items():
                assert tuple(tensors[f"{mlp}.experts.{expert}.{name}.weight"].shape) == shape
        assert not [key for key in tensors if key.startswith(f"{mlp}.experts.") and key.count(".") < 6]


@pytest.fixture(scope="module")
def moe_compressed(tiny_cache: Path) -> dict[str, Path]:
    return {scheme: build_tiny_model(scheme, spec=SPEC, cache_dir=tiny_cache) for scheme in ("int8", "fp8")}


@pytest.mark.parametrize(("scheme", "weight_dtype"), [("int8", torch.int8), ("fp8", torch.float8_e4m3fn)])
def test_compressed_tensors_experts_quantized_per_expert_routers_ignored(
        moe_compressed: dict[str, Path], moe_bf16: Path, scheme: str, weight_dtype: torch.dtype) -> None:
    tensors = load_file(moe_compressed[scheme] / "model.safetensors")
    unquantized = load_file(moe_bf16 / "model.safetensors")
    for layer in range(SPEC.num_hidden_layers):
        mlp = f"model.layers.{layer}.mlp"
        assert torch.equal(tensors[f"{mlp}.gate.weight"], unquantized[f"{mlp}.gate.weight"])  # router as built
        for expert in range(SPEC.num_experts):
            for name, shape in EXPERT_SHAPES.items():
                prefix = f"{mlp}.experts.{expert}.{name}"
                weight, scale = tensors[f"{prefix}.weight"], tensors[f"{prefix}.weight_scale"]
                assert (weight.dtype, tuple(weight.shape), tuple(scale.shape)) == (weight_dtype, shape, (shape[0], 1))
                # the expert's own weights (not another expert's, not gate and up swapped):
                # within a quantization step (int8) or e4m3's relative precision (fp8)
                original = unquantized[f"{prefix}.weight"].float()
                error = (weight.float() * scale.float() - original).abs()
                assert bool((error <= scale.float() + original.abs() / 8).all()), prefix
    config = json.loads((moe_compressed[scheme] / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    assert sorted(config["ignore"]) == sorted(["lm_head", *(f"model.layers.{i}.mlp.gate"
                                                             for i in range(SPEC.num_hidden_layers))])
    assert moe_compressed[scheme].name.startswith(f"moe-{scheme}-")


def test_schemes_a_moe_spec_refuses() -> None:
    with pytest.raises(ValueError, match="TinyMoESpec checkpoints are bfloat16: use scheme 'bf16'"):
        build_key("fp16", SPEC)
    with pytest.raises(ValueError, match="TinyModelSpec checkpoints are float16: use scheme 'fp16'"):
        build_key("bf16", TinyModelSpec())
    with pytest.raises(ValueError, match="num_experts_per_tok 5 exceeds num_experts 4"):
        TinyMoESpec(num_experts_per_tok=5)
    with pytest.raises(ValueError, match="TinyMoESpec.num_experts must be positive"):
        TinyMoESpec(num_experts=0)
