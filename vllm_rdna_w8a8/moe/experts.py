"""gfx11 W8A8 experts for vLLM's modular MoE kernel: `RdnaW8A8Int8Experts` and
`RdnaW8A8Fp8Experts` (their shared part: `RdnaW8A8Experts`).

Shaped like upstream's RDNA3 W4A16 experts (`fused_moe/experts/rdna3_moe.py`,
`Rdna3WNA16Experts`): standard activation format, one call per layer that does the
routing, both grouped GEMMs, the SwiGLU and the top-k combine (so the finalize step's
reduction is a no-op), and input quantization inside (the prepare step hands over the
fp16/bf16 activations). The call is our op `rdna_w8a8::int8_moe` or `rdna_w8a8::fp8_moe`
(moe/op.py): our HIP kernels on gfx11, the plain-torch reference where
VLLM_RDNA_W8A8_OPS=reference.

Schemes: int8, symmetric per-channel weights with dynamic symmetric per-token activations
(vLLM's `kInt8StaticChannelSym` x `kInt8DynamicTokenSym`, the one int8 MoE scheme its
methods accept); fp8 (e4m3fn), per-channel weights with dynamic per-token activations or
per-tensor weights with a static per-tensor activation scale (the two non-block fp8 MoE
schemes vLLM's compressed-tensors and Quark methods accept). SiLU-gated experts, no
biases, no expert parallelism.
"""

from __future__ import annotations

import torch
import vllm.model_executor.layers.fused_moe.modular_kernel as mk
from vllm.model_executor.layers.fused_moe.activation import MoEActivation
from vllm.model_executor.layers.fused_moe.config import FusedMoEConfig, FusedMoEParallelConfig
from vllm.model_executor.layers.fused_moe.topk_weight_and_reduce import TopKWeightAndReduceNoOP
from vllm.model_executor.layers.quantization.utils.quant_utils import (
    QuantKey,
    kFp8DynamicTokenSym,
    kFp8StaticChannelSym,
    kFp8StaticTensorSym,
    kInt8DynamicTokenSym,
    kInt8StaticChannelSym,
)
from vllm.model_executor.utils import replace_parameter

from vllm_rdna_w8a8 import settings
from vllm_rdna_w8a8.moe import op as moe_ops

# The op computes exactly these: anything else on the layer's config stays upstream.
UNSUPPORTED_LAYER_OPTIONS = ("has_bias", "swiglu_limit", "swiglu_alpha", "swiglu_beta")
INT8_SCHEMES = ((kInt8StaticChannelSym, kInt8DynamicTokenSym),)
FP8_SCHEMES = ((kFp8StaticChannelSym, kFp8DynamicTokenSym), (kFp8StaticTensorSym, kFp8StaticTensorSym))


def experts_usable() -> tuple[bool, str | None]:
    """(ok, reason): gfx11 (ROCm or the emulated backend) and an implementation of the op
    for it: the reference when VLLM_RDNA_W8A8_OPS=reference, else our HIP kernels, every
    one of which loads (checked now: a load failing in vLLM's profile run would stop the
    engine instead of leaving the experts on upstream's method)."""
    from vllm_rdna_w8a8.scaled_mm.support import MOE_KIND, hip_kernels_usable

    usable, reason = hip_kernels_usable(MOE_KIND)
    if not usable:
        return False, reason
    if settings.ops_backend() != "reference" and not moe_ops.hip_available():
        return False, f"our MoE HIP kernels are not in this build ({moe_ops.HIP_MODULE} is missing)"
    return True, None


def unsupported_layer_option(moe_config: FusedMoEConfig) -> str | None:
    """The first option of the layer the experts do not compute, or None."""
    for option in UNSUPPORTED_LAYER_OPTIONS:
        if getattr(moe_config, option, None):
            return option
    return None


class RdnaW8A8Experts(mk.FusedMoEExpertsModular):
    """What our int8 and fp8 experts share; a subclass names its `schemes` and calls its
    op in `run_op`."""

    schemes: tuple[tuple[QuantKey, QuantKey], ...] = ()

    @property
    def expects_unquantized_inputs(self) -> bool:
        return True  # the op quantizes per token itself (fused where the kernel does)

    @staticmethod
    def activation_format() -> mk.FusedMoEActivationFormat:
        return mk.FusedMoEActivationFormat.Standard

    @staticmethod
    def is_supported_config(
        cls: type[mk.FusedMoEExperts],
        moe_config: FusedMoEConfig,
        weight_key: QuantKey | None,
        activation_key: QuantKey | None,
        activation_format: mk.FusedMoEActivationFormat,
    ) -> tuple[bool, str | None]:
        supported, reason = mk.FusedMoEExperts.is_supported_config(
            cls, moe_config, weight_key, activation_key, activation_format
        )
        if not supported:
            return supported, reason
        option = unsupported_layer_option(moe_config)
        if option is not None:
            return False, f"kernel does not support {option}"
        return True, None

    @staticmethod
    def _supports_current_device() -> bool:
        return experts_usable()[0]

    @staticmethod
    def _supports_no_act_and_mul() -> bool:
        return False

    @classmethod
    def _supports_quant_scheme(cls, weight_key: QuantKey | None, activation_key: QuantKey | None) -> bool:
        return (weight_key, activation_key) in cls.schemes

    @staticmethod
    def _supports_activation(activation: MoEActivation) -> bool:
        return activation == MoEActivation.SILU

    @staticmethod
    def _supports_parallel_config(moe_parallel_config: FusedMoEParallelConfig) -> bool:
        return not moe_parallel_config.use_ep  # every expert local: no expert map

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        """The weights in the layout the op's implementation reads."""
        w13, w2 = moe_ops.prepare_moe_weights(layer.w13_weight.data, layer.w2_weight.data)
        replace_parameter(layer, "w13_weight", w13)
        replace_parameter(layer, "w2_weight", w2)

    def workspace_shapes(
        self,
        M: int,
        N: int,
        K: int,
        topk: int,
        global_num_experts: int,
        local_num_experts: int,
        expert_tokens_meta: mk.ExpertTokensMetadata | None,
        activation: MoEActivation,
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return (0,), (0,), (M, K)  # the op allocates its own intermediates

    def finalize_weight_and_reduce_impl(self) -> mk.TopKWeightAndReduce:
        return TopKWeightAndReduceNoOP()  # the op combines the top-k slots itself

    def apply(
        self,
        output: torch.Tensor,
        hidden_states: torch.Tensor,
        w1: torch.Tensor,
        w2: torch.Tensor,
        topk_weights: torch.Tensor,
        topk_ids: torch.Tensor,
        activation: MoEActivation,
        global_num_experts: int,
        expert_map: torch.Tensor | None,
        a1q_scale: torch.Tensor | None,
        a2_scale: torch.Tensor | None,
        workspace13: torch.Tensor,
        workspace2: torch.Tensor,
        expert_tokens_meta: mk.ExpertTokensMetadata | None,
        apply_router_weight_on_input: bool,
    ) -> None:
        if expert_map is not None:
            raise NotImplementedError(f"{type(self).__name__} serves layers without expert parallelism only")
        if apply_router_weight_on_input:
            # the prepare step already scaled the input by the (top-1) routing weight
            topk_weights = torch.ones_like(topk_weights)
        output.copy_(self.run_op(hidden_states, w1, w2, topk_weights, topk_ids))

    def run_op(self, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
               topk_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class RdnaW8A8Int8Experts(RdnaW8A8Experts):
    """W8A8 int8 experts on `rdna_w8a8::int8_moe` (gfx11)."""

    schemes = INT8_SCHEMES

    def run_op(self, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
               topk_ids: torch.Tensor) -> torch.Tensor:
        return moe_ops.int8_moe(x, w13, self.w1_scale, w2, self.w2_scale, topk_weights, topk_ids)


class RdnaW8A8Fp8Experts(RdnaW8A8Experts):
    """W8A8 fp8 experts on `rdna_w8a8::fp8_moe` (gfx11): weight scales [E, N] or [E, 1], the
    static activation scales of the quant config (a1, a2; None when dynamic)."""

    schemes = FP8_SCHEMES

    def run_op(self, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
               topk_ids: torch.Tensor) -> torch.Tensor:
        return moe_ops.fp8_moe(x, w13, self.w1_scale, w2, self.w2_scale, topk_weights, topk_ids,
                               self.a1_scale, self.a2_scale)
