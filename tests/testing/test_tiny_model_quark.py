"""The tiny AMD Quark checkpoints (schemes quark-*), built by amd-quark: the format vLLM's
Quark parser reads, and the exported quantization configs that tests/quantization uses
as data still being what amd-quark writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vllm_rdna_w8a8.testing.tiny_model import QUARK_SCHEMES, TinyModelSpec, build_key, build_tiny_model

pytestmark = pytest.mark.slow  # importing amd-quark alone takes about 30 s

EXPORTED_CONFIGS = Path(__file__).parents[1] / "quantization" / "quark_configs"
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# scheme -> (weight dtype, per-channel weight scales, static input scale)
FORMAT = {
    "quark-int8": (torch.int8, False, True),
    "quark-int8-dynamic": (torch.int8, True, False),
    "quark-fp8": (torch.float8_e4m3fn, False, True),
    "quark-ptpc-fp8": (torch.float8_e4m3fn, True, False),
}


def _quantization_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())["quantization_config"]


@pytest.mark.parametrize("scheme", sorted(QUARK_SCHEMES))
def test_exported_config_is_the_committed_test_data(quark_models: dict[str, Path], scheme: str) -> None:
    """If amd-quark changes what it writes, regenerate tests/quantization/quark_configs/."""
    exported = _quantization_config(quark_models[scheme])
    committed = json.loads((EXPORTED_CONFIGS / f"{scheme}.json").read_text())
    assert exported["quant_method"] == "quark"
    assert exported == committed


@pytest.mark.parametrize("scheme", sorted(QUARK_SCHEMES))
def test_tensors_in_quarks_format(quark_models: dict[str, Path], scheme: str) -> None:
    weight_dtype, per_channel, static_input = FORMAT[scheme]
    tensors = load_file(quark_models[scheme] / "model.safetensors")
    for layer in range(TinyModelSpec().num_hidden_layers):
        for name in PROJECTIONS:
            prefix = f"model.layers.{layer}.{name}"
            weight, scale = tensors[f"{prefix}.weight"], tensors[f"{prefix}.weight_scale"]
            assert weight.dtype == weight_dtype, prefix
            assert tuple(scale.shape) == ((weight.shape[0],) if per_channel else ()), prefix
            assert scale.float().gt(0).all(), prefix
            assert (f"{prefix}.input_scale" in tensors) == static_input, prefix
    assert tensors["lm_head.weight"].dtype == torch.float16


def test_int8_weights_dequantize_to_the_fp16_weights(quark_models: dict[str, Path]) -> None:
    from vllm_rdna_w8a8.testing.tiny_model import build_random_model

    dense = dict(build_random_model().named_parameters())
    name = "model.layers.1.mlp.down_proj"
    original = dense[f"{name}.weight"].detach().double()
    tensors = load_file(quark_models["quark-int8-dynamic"] / "model.safetensors")
    scale = tensors[f"{name}.weight_scale"].double().unsqueeze(1)
    # round to nearest of w / scale; Quark's scales are stored in fp16 (relative error 2^-11)
    steps = original / scale
    assert (tensors[f"{name}.weight"].double() - steps).abs().le(0.5 + steps.abs() * 2**-10).all()


def test_only_quark_builds_depend_on_amd_quark() -> None:
    for scheme in ("fp16", "int8", "fp8"):
        assert "amd-quark" not in build_key(scheme, TinyModelSpec())["libraries"]
    for scheme in QUARK_SCHEMES:
        assert "amd-quark" in build_key(scheme, TinyModelSpec())["libraries"]


@pytest.fixture(scope="module")
def quark_moe_models() -> dict[str, Path]:
    from vllm_rdna_w8a8.testing.tiny_model import TinyMoESpec

    return {scheme: build_tiny_model(scheme, spec=TinyMoESpec()) for scheme in QUARK_SCHEMES}


@pytest.mark.parametrize("scheme", sorted(QUARK_SCHEMES))
def test_moe_experts_quantized_per_expert_router_excluded(quark_moe_models: dict[str, Path], scheme: str) -> None:
    from vllm_rdna_w8a8.testing.tiny_model import TinyMoESpec

    spec = TinyMoESpec()
    weight_dtype, per_channel, static_input = FORMAT[scheme]
    tensors = load_file(quark_moe_models[scheme] / "model.safetensors")
    for layer in range(spec.num_hidden_layers):
        mlp = f"model.layers.{layer}.mlp"
        assert tensors[f"{mlp}.gate.weight"].dtype == torch.bfloat16
        for expert in range(spec.num_experts):
            for name in ("gate_proj", "up_proj", "down_proj"):
                prefix = f"{mlp}.experts.{expert}.{name}"
                weight, scale = tensors[f"{prefix}.weight"], tensors[f"{prefix}.weight_scale"]
                assert weight.dtype == weight_dtype, prefix
                assert tuple(scale.shape) == ((weight.shape[0],) if per_channel else ()), prefix
                assert (f"{prefix}.input_scale" in tensors) == static_input, prefix
    assert tensors["lm_head.weight"].dtype == torch.bfloat16
    exclude = _quantization_config(quark_moe_models[scheme])["exclude"]
    assert sorted(exclude) == sorted(["lm_head", *(f"model.layers.{i}.mlp.gate" for i in range(spec.num_hidden_layers))])


@pytest.mark.parametrize("scheme", sorted(QUARK_SCHEMES))
def test_vllm_gives_the_moe_checkpoint_quarks_w8a8_moe_method_under_rdna_w8a8(quark_moe_models: dict[str, Path],
                                                                              scheme: str) -> None:
    from vllm.model_executor.layers.fused_moe import RoutedExperts
    from vllm.model_executor.layers.linear import ReplicatedLinear, UnquantizedLinearMethod

    from vllm_rdna_w8a8.quantization import LazyRdnaW8A8Config

    config = LazyRdnaW8A8Config.from_config(_quantization_config(quark_moe_models[scheme]))
    _, _, experts_method = config.get_quant_method_target("model.layers.0.mlp.experts", RoutedExperts)
    expected = "QuarkW8A8Int8MoEMethod" if FORMAT[scheme][0] == torch.int8 else "QuarkW8A8Fp8MoEMethod"
    assert experts_method.__name__ == expected
    _, _, router_method = config.get_quant_method_target("model.layers.0.mlp.gate", ReplicatedLinear)
    assert router_method is UnquantizedLinearMethod
