"""The MoE methods `--quantization rdna_w8a8` gives int8 W8A8 expert layers on gfx11:
upstream's compressed-tensors and Quark int8 MoE methods (their checkpoint parameters,
loading and `apply`), with our experts (`RdnaW8A8Int8Experts`) in the modular kernel in
place of the backend vLLM's int8 MoE oracle would choose (Triton on ROCm; on the CPU
only AMX machines have one).

Both take the one int8 MoE scheme vLLM accepts, symmetric per-channel weights with
dynamic symmetric per-token activations; `quantization/rdna_w8a8.py` decides when.
"""

from __future__ import annotations

import torch
import vllm.model_executor.layers.fused_moe.modular_kernel as mk
from compressed_tensors.quantization import QuantizationArgs
from vllm.model_executor.layers.fused_moe.all2all_utils import maybe_make_prepare_finalize
from vllm.model_executor.layers.fused_moe.config import (
    FusedMoEConfig,
    FusedMoEQuantConfig,
    int8_w8a8_moe_quant_config,
)
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe import (
    CompressedTensorsMoEMethod,
)
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe.compressed_tensors_moe_w8a8_int8 import (  # noqa: E501
    CompressedTensorsW8A8Int8MoEMethod,
)
from vllm.model_executor.layers.quantization.quark.quark_moe import QuarkMoEMethod, QuarkW8A8Int8MoEMethod
from vllm.model_executor.layers.quantization.utils.quant_utils import kInt8DynamicTokenSym, kInt8StaticChannelSym
from vllm.model_executor.utils import replace_parameter

from vllm_rdna_w8a8.moe.experts import RdnaW8A8Int8Experts

# Quark loads these for asymmetric schemes; symmetric int8 has none to apply.
QUARK_ZERO_POINTS = ("w13_input_zero_point", "w2_input_zero_point", "w13_weight_zero_point", "w2_weight_zero_point")


class RdnaW8A8Int8MoEMixin:
    """Mixed in before an upstream int8 MoE method: after loading, the per-channel
    scales as [E, N] float32 and a modular kernel of our experts."""

    experts_cls = RdnaW8A8Int8Experts
    moe: FusedMoEConfig
    moe_quant_config: FusedMoEQuantConfig | None
    moe_kernel: mk.FusedMoEKernel | None

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        for name in QUARK_ZERO_POINTS:
            if hasattr(layer, name):
                delattr(layer, name)
        for name in ("w13_weight_scale", "w2_weight_scale"):  # [E, N, 1] (compressed-tensors) or [E, N]
            scale = getattr(layer, name).data
            replace_parameter(layer, name, scale.reshape(scale.shape[0], -1).float().contiguous())
        self.moe_quant_config = self.get_fused_moe_quant_config(layer)
        prepare_finalize = maybe_make_prepare_finalize(
            moe=self.moe,
            quant_config=self.moe_quant_config,
            routing_tables=layer._expert_routing_tables(),
            allow_new_interface=True,
        )
        experts = RdnaW8A8Int8Experts(moe_config=self.moe, quant_config=self.moe_quant_config)
        self.moe_kernel = mk.FusedMoEKernel(prepare_finalize, experts)
        experts.process_weights_after_loading(layer)

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
