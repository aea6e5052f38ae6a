"""`--quantization rdna_w8a8`: compressed-tensors passthrough and online int8."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from vllm.model_executor.layers.linear import ReplicatedLinear, UnquantizedLinearMethod
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
    CompressedTensorsConfig,
    CompressedTensorsLinearMethod,
)
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

from vllm_rdna_w8a8.quantization import LazyRdnaW8A8Config
from vllm_rdna_w8a8.quantization.rdna_w8a8 import (
    OnlineInt8LinearMethod,
    RdnaW8A8Config,
    quantize_weight_per_channel,
)


@pytest.mark.parametrize(("hf_method", "user", "expected"), [
    ("compressed-tensors", "rdna_w8a8", "rdna_w8a8"),
    ("compressed-tensors", None, None),  # default: upstream compressed-tensors
    ("compressed-tensors", "compressed-tensors", None),
    ("gptq", "rdna_w8a8", None),  # vLLM then reports the mismatch itself
])
def test_override_only_when_asked_for_on_compressed_tensors(hf_method, user, expected) -> None:
    cfg = {"quant_method": hf_method}
    assert LazyRdnaW8A8Config.override_quantization_method(cfg, user) == expected
    assert RdnaW8A8Config.override_quantization_method(cfg, user) == expected


def test_checkpoint_parsing_is_upstreams(w8a8_int8) -> None:
    ours = LazyRdnaW8A8Config.from_config(copy.deepcopy(w8a8_int8))
    upstream = CompressedTensorsConfig.from_config(w8a8_int8)
    assert type(ours) is RdnaW8A8Config and not ours.online
    assert ours.get_name() == "rdna_w8a8"
    assert ours.target_scheme_map == upstream.target_scheme_map
    assert (ours.ignore, ours.quant_format, ours.kv_cache_scheme) == (
        upstream.ignore, upstream.quant_format, upstream.kv_cache_scheme)


def test_w8a8_int8_linear_goes_through_int8_kernel_selection(ours_on_cpu, w8a8_int8) -> None:
    config = LazyRdnaW8A8Config.from_config(w8a8_int8)
    layer = ReplicatedLinear(64, 32, bias=False, quant_config=config, prefix="model.layers.0.mlp.down_proj")
    assert isinstance(layer.quant_method, CompressedTensorsLinearMethod)
    assert type(layer.scheme.kernel).__name__ == "RdnaHipInt8ScaledMMLinearKernel"


def test_upstream_kernel_where_ours_is_not_supported(w8a8_int8) -> None:
    config = LazyRdnaW8A8Config.from_config(w8a8_int8)
    layer = ReplicatedLinear(64, 32, bias=False, quant_config=config, prefix="model.layers.0.mlp.down_proj")
    assert type(layer.scheme.kernel).__name__ == "CPUInt8ScaledMMLinearKernel"


def test_ignore_list_and_lm_head_stay_unquantized(w8a8_int8) -> None:
    config = LazyRdnaW8A8Config.from_config(w8a8_int8)
    layer = ReplicatedLinear(64, 32, bias=False, quant_config=config, prefix="model.layers.0.mlp.up_proj")
    assert isinstance(layer.quant_method, UnquantizedLinearMethod)
    lm_head = ParallelLMHead.__new__(ParallelLMHead)
    torch.nn.Module.__init__(lm_head)
    assert config.get_quant_method(lm_head, "lm_head") is None


W4A16 = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32, "dynamic": False}
FP8_W8A8 = ({"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel", "dynamic": False},
            {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token", "dynamic": True})
FP8_TENSOR_STATIC = ({**FP8_W8A8[0], "strategy": "tensor"},
                     {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor", "dynamic": False})
FP8_BLOCK = ({"num_bits": 8, "type": "float", "symmetric": True, "strategy": "block", "dynamic": False,
              "block_structure": [128, 128]},
             {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "group", "group_size": 128,
              "dynamic": True})


@pytest.mark.parametrize(("fmt", "weights", "activations", "scheme", "reason"), [
    ("pack-quantized", W4A16, None, "CompressedTensorsWNA16", "are not W8A8 int8 or fp8"),
    ("float-quantized", *FP8_BLOCK, "CompressedTensorsW8A8Fp8",
     "are block-scaled W8A8 fp8 (vLLM's block-fp8 kernel list, which we do not head)"),
    # Routed to the fp8 kernel list, which we head: nothing to log.
    ("float-quantized", *FP8_W8A8, None, None),
    ("float-quantized", *FP8_TENSOR_STATIC, None, None),
])
def test_other_schemes_fall_through_to_upstream_with_one_log_line(plugin_messages, monkeypatch, fmt, weights, activations,
                                                                   scheme, reason) -> None:
    from vllm.model_executor.layers.quantization.compressed_tensors.schemes import compressed_tensors_w8a8_fp8

    # The fp8 scheme reads the model dtype from the engine's config, absent in a unit test.
    engine_config = SimpleNamespace(model_config=SimpleNamespace(dtype=torch.float16))
    monkeypatch.setattr(compressed_tensors_w8a8_fp8, "get_current_vllm_config", lambda: engine_config)
    group = {"targets": ["Linear"], "weights": weights}
    if activations:
        group["input_activations"] = activations
    config = LazyRdnaW8A8Config.from_config(
        {"quant_method": "compressed-tensors", "format": fmt, "config_groups": {"group_0": group}})
    for prefix in ("model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"):
        layer = ReplicatedLinear.__new__(ReplicatedLinear)
        torch.nn.Module.__init__(layer)
        method = config.get_quant_method(layer, prefix)
        assert isinstance(method, CompressedTensorsLinearMethod)
        assert type(layer.scheme).__name__ == (scheme or "CompressedTensorsW8A8Fp8")
    expected = [] if scheme is None else [
        f"rdna_w8a8: {scheme} layers (first: model.layers.0.mlp.down_proj) {reason}, served by upstream kernels"]
    assert plugin_messages() == expected


@pytest.mark.parametrize("fp8_scheme", [FP8_W8A8, FP8_TENSOR_STATIC], ids=["channel-token", "tensor-static"])
def test_fp8_w8a8_layers_get_our_fp8_kernel_and_no_upstream_line(ours_on_cpu, plugin_messages, monkeypatch,
                                                                 fp8_scheme) -> None:
    """What an fp8 checkpoint under --quantization rdna_w8a8 does where our class is usable:
    vLLM's fp8 kernel selection picks it (K=344 included), and nothing claims otherwise."""
    from vllm.config import CompilationConfig, VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.quantization.compressed_tensors.schemes import compressed_tensors_w8a8_fp8

    engine_config = SimpleNamespace(model_config=SimpleNamespace(dtype=torch.float16))
    monkeypatch.setattr(compressed_tensors_w8a8_fp8, "get_current_vllm_config", lambda: engine_config)
    weights, activations = fp8_scheme
    config = LazyRdnaW8A8Config.from_config({
        "quant_method": "compressed-tensors", "format": "float-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": activations}}})
    with set_current_vllm_config(VllmConfig(compilation_config=CompilationConfig(custom_ops=["none"]))):
        layer = ReplicatedLinear(344, 32, bias=False, quant_config=config, prefix="model.layers.0.mlp.down_proj")
    assert type(layer.scheme.fp8_linear).__name__ == "RdnaHipFp8ScaledMMLinearKernel"
    assert plugin_messages() == []


def test_unquantized_checkpoint_gets_online_int8() -> None:
    config = LazyRdnaW8A8Config()  # what vLLM does without a quantization_config
    assert type(config) is RdnaW8A8Config and config.online
    assert LazyRdnaW8A8Config.get_config_filenames() == []
    layer = ReplicatedLinear(64, 32, bias=False, quant_config=config, prefix="model.layers.0.mlp.down_proj")
    assert isinstance(layer.quant_method, OnlineInt8LinearMethod)
    lm_head = ParallelLMHead.__new__(ParallelLMHead)
    torch.nn.Module.__init__(lm_head)
    assert config.get_quant_method(lm_head, "lm_head") is None


def test_per_channel_weight_quantization() -> None:
    weight = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]], dtype=torch.float16)
    quantized, scales = quantize_weight_per_channel(weight)
    assert scales.shape == (3, 1) and scales.dtype == torch.float32
    assert scales[:, 0].tolist() == pytest.approx([1 / 127, 0.0, 3 / 127])
    assert quantized.tolist() == [[64, -127, 32], [0, 0, 0], [127, 64, -32]]  # 63.5 -> 64, 31.75 -> 32


def _online_layer(seed: int) -> tuple[ReplicatedLinear, torch.Tensor]:
    layer = ReplicatedLinear(48, 24, bias=True, quant_config=LazyRdnaW8A8Config(),
                             prefix="model.layers.0.mlp.down_proj")
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(24, 48, generator=generator) * 0.1).to(torch.float16)
    weight[3] = 0  # a zero output channel
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(torch.randn(24, generator=generator).to(torch.float16))
    return layer, weight


def test_online_layer_on_our_kernel_matches_float64(ours_on_cpu) -> None:
    layer, weight = _online_layer(seed=5)
    assert type(layer.quant_method.kernel).__name__ == "RdnaHipInt8ScaledMMLinearKernel"
    layer.quant_method.process_weights_after_loading(layer)
    x = torch.randn(6, 48, generator=torch.Generator().manual_seed(6)).to(torch.float16)
    out, _ = layer(x)
    want = x.double() @ weight.double().T + layer.bias.double()
    assert torch.isfinite(out).all()
    # int8 weights and activations: about 1% of the output's scale.
    torch.testing.assert_close(out.double(), want, rtol=0, atol=0.02 * want.abs().max().item())


def test_online_layer_elsewhere_hands_vllms_kernel_our_int8_weights(monkeypatch) -> None:
    layer, weight = _online_layer(seed=5)
    kernel = layer.quant_method.kernel
    assert type(kernel).__name__ == "CPUInt8ScaledMMLinearKernel"
    handed_over = {}
    monkeypatch.setattr(kernel, "process_weights_after_loading",
                        lambda module: handed_over.update(weight=module.weight.detach().clone(),
                                                          scale=module.weight_scale.detach().clone()))
    layer.quant_method.process_weights_after_loading(layer)
    quantized, scales = quantize_weight_per_channel(weight)
    assert torch.equal(handed_over["weight"], quantized) and torch.equal(handed_over["scale"], scales)
    # (Its outputs are not compared with float64 here: vLLM's oneDNN int8 path on this
    # AVX2 CPU saturates u8*s8 pair sums at int16 for |w| near 127; see tests/scaled_mm.)
