"""What `--quantization rdna_w8a8` builds.

- compressed-tensors checkpoint: `RdnaW8A8Config`, exactly upstream
  `CompressedTensorsConfig` (subclassed, nothing reimplemented): parsing, ignore lists,
  fused modules, lm_head, KV-cache scales.
- AMD Quark checkpoint (`quant_method: quark`): `RdnaW8A8QuarkConfig`, exactly upstream
  `QuarkConfig` in the same way (exclude lists, per-layer configs, KV-cache scales).
- In both, W8A8 int8 and (per-tensor / per-channel) fp8 linear layers ask vLLM for a
  scaled-mm kernel, which on gfx11 is ours. Other schemes (W4A16, block fp8, MXFP4, ...)
  stay on upstream's kernels; each such scheme is named once in the log.
- MoE expert layers: int8 W8A8 ones (per-channel weights, dynamic per-token
  activations) and fp8 W8A8 ones (per-channel weights with dynamic per-token
  activations, or per-tensor weights with static per-tensor activations) get our experts
  (`moe/methods.py`: upstream's int8 / fp8 MoE method of the format with
  `RdnaW8A8Int8Experts` / `RdnaW8A8Fp8Experts` in its modular kernel) where they can serve
  (gfx11, the op implemented, a layer they compute); all others (block fp8, dynamic
  per-tensor fp8, W4A16, ...) keep upstream's MoE method. The log names the experts class
  once, with the reason when it is not ours.
- no quantization_config (fp16/bf16 checkpoint; vLLM calls the class with no
  arguments): every linear layer is quantized at load time to int8 W8A8, symmetric
  per-channel weights and dynamic per-token activations, through the same int8 kernel
  selection (our kernel on gfx11, vLLM's CPU kernel on the CPU, Triton elsewhere).
  MoE experts stay in the model dtype (logged).

vLLM's default compressed-tensors and Quark methods are left alone for MoE layers: their
int8 and fp8 MoE backends come from fixed lists in `fused_moe/oracle/int8.py` and
`oracle/fp8.py` with no registration hook, so our experts serve only under `--quantization rdna_w8a8`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from compressed_tensors.config import CompressionFormat
from vllm.model_executor.kernels.linear import init_int8_linear_kernel
from compressed_tensors.quantization import QuantizationArgs, QuantizationType
from vllm.model_executor.layers.fused_moe import RoutedExperts
from vllm.model_executor.layers.linear import LinearBase, LinearMethodBase
from vllm.model_executor.layers.quantization.base_config import QuantizeMethodBase
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
    CompressedTensorsConfig,
)
from compressed_tensors.quantization import QuantizationStrategy
from vllm.model_executor.layers.quantization.compressed_tensors.schemes import (
    CompressedTensorsScheme,
    CompressedTensorsW8A8Fp8,
    CompressedTensorsW8A8Int8,
)
from vllm.model_executor.layers.quantization.quark.quark import QuarkConfig
from vllm.model_executor.layers.quantization.utils.quant_utils import (
    QuantKey,
    kFp8DynamicTokenSym,
    kFp8StaticChannelSym,
    kFp8StaticTensorSym,
    kInt8DynamicTokenSym,
    kInt8StaticChannelSym,
)
from vllm.model_executor.layers.quantization.quark.schemes import (
    QuarkScheme,
    QuarkW8A8Fp8,
    QuarkW8A8Fp8PerBlock,
    QuarkW8A8Int8,
)
from vllm.model_executor.utils import replace_parameter
from vllm.model_executor.parameter import ModelWeightParameter
from vllm.model_executor.utils import set_weight_attrs

from vllm_rdna_w8a8.quantization import QUANTIZATION_NAME, accepts_checkpoint

logger = logging.getLogger("vllm.rdna_w8a8")



def why_upstream(scheme: CompressedTensorsScheme | QuarkScheme) -> str | None:
    """None for schemes (compressed-tensors or Quark) whose linear layers ask the kernel
    lists we head (ours first on gfx11): W8A8 int8 (the int8 list) and per-tensor /
    per-channel W8A8 fp8 (the fp8 list). Otherwise the reason they stay on upstream's
    kernels, for the log."""
    block_fp8 = isinstance(scheme, QuarkW8A8Fp8PerBlock) or (
        isinstance(scheme, CompressedTensorsW8A8Fp8) and scheme.strategy == QuantizationStrategy.BLOCK
    )
    if block_fp8:
        return "are block-scaled W8A8 fp8 (vLLM's block-fp8 kernel list, which we do not head)"
    if isinstance(scheme, (CompressedTensorsW8A8Int8, QuarkW8A8Int8, CompressedTensorsW8A8Fp8, QuarkW8A8Fp8)):
        return None
    return "are not W8A8 int8 or fp8"


def moe_route(method: QuantizeMethodBase | None, why_not_ours: str | None) -> str:
    """What serves a MoE expert layer under rdna_w8a8, for the log: the experts class
    (ours, or upstream's with the reason ours do not serve)."""
    if method is None:
        return "stay unquantized on upstream's MoE path (online int8 covers linear layers only)"
    experts = getattr(method, "experts_cls", None)
    with_experts = f" with {experts.__name__}" if experts is not None else ""
    if why_not_ours is None:
        return f"are served by our {experts.__name__} ({type(method).__name__})"
    return f"are served by upstream's {type(method).__name__}{with_experts}; not our experts: {why_not_ours}"


def our_experts_class(scheme: tuple[QuantKey | None, QuantKey | None]) -> type | None:
    """Our experts class that computes the checkpoint's `scheme` (weight key, activation
    key), or None."""
    from vllm_rdna_w8a8.moe.experts import RdnaW8A8Fp8Experts, RdnaW8A8Int8Experts

    for experts in (RdnaW8A8Int8Experts, RdnaW8A8Fp8Experts):
        if scheme in experts.schemes:
            return experts
    return None


def why_not_our_experts(layer: RoutedExperts, scheme: tuple[QuantKey | None, QuantKey | None]) -> str | None:
    """None when our experts can serve `layer` with the checkpoint's `scheme` (weight key,
    activation key); otherwise why not, for the log."""
    from vllm_rdna_w8a8.moe.experts import experts_usable

    experts = our_experts_class(scheme)
    if experts is None:
        return ("they take int8 W8A8 with per-channel weights and dynamic per-token activations, or fp8 W8A8 "
                "with per-channel weights and dynamic per-token activations or per-tensor weights and static "
                "per-tensor activations")
    usable, reason = experts_usable()
    if not usable:
        return reason
    supported, reason = experts.is_supported_config(experts, layer.moe_config, *scheme, experts.activation_format())
    return None if supported else reason


# compressed-tensors (type, strategy) -> the keys of the schemes our experts compute
_CT_WEIGHT_KEYS = {
    (QuantizationType.INT, QuantizationStrategy.CHANNEL): kInt8StaticChannelSym,
    (QuantizationType.FLOAT, QuantizationStrategy.CHANNEL): kFp8StaticChannelSym,
    (QuantizationType.FLOAT, QuantizationStrategy.TENSOR): kFp8StaticTensorSym,
}
_CT_INPUT_KEYS = {  # (type, strategy, dynamic)
    (QuantizationType.INT, QuantizationStrategy.TOKEN, True): kInt8DynamicTokenSym,
    (QuantizationType.FLOAT, QuantizationStrategy.TOKEN, True): kFp8DynamicTokenSym,
    (QuantizationType.FLOAT, QuantizationStrategy.TENSOR, False): kFp8StaticTensorSym,
}


def compressed_tensors_keys(weights: QuantizationArgs | None,
                            inputs: QuantizationArgs | None) -> tuple[QuantKey | None, QuantKey | None]:
    """The keys of a compressed-tensors scheme's weights and inputs where our experts
    compute them (symmetric 8-bit, static weights), None elsewhere."""
    def symmetric_8_bit(args: QuantizationArgs | None) -> bool:
        return args is not None and args.num_bits == 8 and args.symmetric

    weight_key = _CT_WEIGHT_KEYS.get((weights.type, weights.strategy)) if (
        symmetric_8_bit(weights) and not weights.dynamic) else None
    input_key = _CT_INPUT_KEYS.get((inputs.type, inputs.strategy, bool(inputs.dynamic))) if (
        symmetric_8_bit(inputs)) else None
    return weight_key, input_key


def quantize_weight_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (int8 [N, K], float32 scales [N, 1]): symmetric, absmax / 127.

    A row of zeros gets scale 0 and zeros (never NaN).
    """
    values = weight.float()
    scales = values.abs().amax(dim=1, keepdim=True) / 127.0
    safe = torch.where(scales == 0, torch.ones_like(scales), scales)
    quantized = (values / safe).round().clamp(-127, 127).to(torch.int8)
    return quantized, scales


class OnlineInt8LinearMethod(LinearMethodBase):
    """Loads an fp16/bf16 linear layer, then quantizes it to int8 W8A8 (per-channel
    weights, dynamic per-token activations) for vLLM's int8 kernel selection."""

    def create_weights(
        self,
        layer: torch.nn.Module,
        input_size_per_partition: int,
        output_partition_sizes: list[int],
        input_size: int,
        output_size: int,
        params_dtype: torch.dtype,
        **extra_weight_attrs: Any,
    ) -> None:
        layer.logical_widths = output_partition_sizes
        self.kernel = init_int8_linear_kernel(
            is_channelwise=True,
            is_static_input_scheme=False,
            input_symmetric=True,
            module_name=type(self).__name__,
        )
        weight_loader = extra_weight_attrs.pop("weight_loader")
        weight = ModelWeightParameter(
            data=torch.empty(sum(output_partition_sizes), input_size_per_partition, dtype=params_dtype),
            input_dim=1,
            output_dim=0,
            weight_loader=weight_loader,
        )
        layer.register_parameter("weight", weight)
        set_weight_attrs(weight, extra_weight_attrs)
        # The kernels read these by name; dynamic symmetric activations need none.
        for name in ("weight_scale", "input_scale", "input_zero_point", "azp_adj"):
            layer.register_parameter(name, None)

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        quantized, scales = quantize_weight_per_channel(layer.weight.data)
        replace_parameter(layer, "weight", quantized)
        layer.weight_scale = torch.nn.Parameter(scales, requires_grad=False)
        self.kernel.process_weights_after_loading(layer)

    def apply(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.kernel.apply_weights(layer, x, bias)


class RdnaW8A8Routing:
    """What rdna_w8a8 adds to a checkpoint format's upstream config (mixed in before it):
    the method's name, the claim on that format's checkpoints, and one log line per kind
    of layer that our kernels do not serve."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._routes_logged: set[tuple[str, str]] = set()

    def get_name(self) -> str:
        return QUANTIZATION_NAME

    @classmethod
    def override_quantization_method(
        cls, hf_quant_cfg: dict[str, Any], user_quant: str | None, hf_config: Any = None
    ) -> str | None:
        return QUANTIZATION_NAME if accepts_checkpoint(hf_quant_cfg, user_quant) else None

    def get_quant_method(self, layer: torch.nn.Module, prefix: str) -> QuantizeMethodBase | None:
        if isinstance(layer, RoutedExperts):
            return self._experts_method(layer, prefix)
        method = super().get_quant_method(layer, prefix)  # type: ignore[misc]
        self._log_linear_route(layer, prefix)
        return method

    def _experts_method(self, layer: RoutedExperts, prefix: str) -> QuantizeMethodBase | None:
        """Our int8 experts' method where they can serve the layer, else upstream's."""
        scheme = self._moe_scheme(layer, prefix)
        why_not = why_not_our_experts(layer, scheme) if scheme is not None else "the layer is not quantized"
        if why_not is None:
            method = self._our_experts_method(layer, prefix, scheme)
        else:
            method = super().get_quant_method(layer, prefix)  # type: ignore[misc]
        self._log_once("MoE expert", moe_route(method, why_not), prefix)
        return method

    def _moe_scheme(self, layer: RoutedExperts, prefix: str) -> tuple[QuantKey | None, QuantKey | None] | None:
        """The checkpoint's (weight key, activation key) for the experts; None: unquantized."""
        raise NotImplementedError

    def _our_experts_method(self, layer: RoutedExperts, prefix: str,
                            scheme: tuple[QuantKey, QuantKey]) -> QuantizeMethodBase:
        """The method of our experts for `scheme` (one `our_experts_class` serves)."""
        raise NotImplementedError

    def _log_linear_route(self, layer: torch.nn.Module, prefix: str) -> None:
        scheme = getattr(layer, "scheme", None)
        if isinstance(layer, LinearBase) and scheme is not None:
            reason = why_upstream(scheme)
            if reason is not None:
                self._log_once(type(scheme).__name__, f"{reason}, served by upstream kernels", prefix)

    def _log_once(self, kind: str, what: str, prefix: str) -> None:
        if (kind, what) not in self._routes_logged:
            self._routes_logged.add((kind, what))
            logger.info("rdna_w8a8: %s layers (first: %s) %s", kind, prefix, what)


class RdnaW8A8Config(RdnaW8A8Routing, CompressedTensorsConfig):
    """Compressed-tensors checkpoints, and online int8 for unquantized ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.online = not args and not kwargs
        if self.online:
            super().__init__(target_scheme_map={}, ignore=[], quant_format=CompressionFormat.int_quantized.value)
        else:
            super().__init__(*args, **kwargs)

    def get_quant_method(self, layer: torch.nn.Module, prefix: str) -> QuantizeMethodBase | None:
        if not self.online:
            return super().get_quant_method(layer, prefix)
        if isinstance(layer, RoutedExperts):
            self._log_once("MoE expert", moe_route(None, None), prefix)
        return OnlineInt8LinearMethod() if isinstance(layer, LinearBase) else None

    def _moe_scheme(self, layer: RoutedExperts, prefix: str) -> tuple[QuantKey | None, QuantKey | None] | None:
        # As upstream's CompressedTensorsMoEMethod.get_moe_method finds it (gate, up and
        # down of expert 0; upstream refuses projections that disagree).
        self._add_fused_moe_to_target_scheme_map()
        projections = (layer.ckpt_gate_proj_name, layer.ckpt_up_proj_name, layer.ckpt_down_proj_name)
        schemes = [self.get_scheme_dict(layer, f"{prefix}.0.{name}") for name in projections]
        if schemes[0] is None:
            return None
        if any(scheme != schemes[0] for scheme in schemes):
            return (None, None)
        return compressed_tensors_keys(schemes[0].get("weights"), schemes[0].get("input_activations"))

    def _our_experts_method(self, layer: RoutedExperts, prefix: str,
                            scheme: tuple[QuantKey, QuantKey]) -> QuantizeMethodBase:
        from vllm_rdna_w8a8.moe.experts import RdnaW8A8Int8Experts
        from vllm_rdna_w8a8.moe.methods import (
            RdnaW8A8CompressedTensorsFp8MoEMethod,
            RdnaW8A8CompressedTensorsInt8MoEMethod,
        )

        args = self.get_scheme_dict(layer, f"{prefix}.0.{layer.ckpt_gate_proj_name}")
        if our_experts_class(scheme) is RdnaW8A8Int8Experts:
            return RdnaW8A8CompressedTensorsInt8MoEMethod(args["weights"], args["input_activations"],
                                                          layer.moe_config)
        return RdnaW8A8CompressedTensorsFp8MoEMethod(args["weights"], args["input_activations"],
                                                     layer.moe_config, scheme)


class RdnaW8A8QuarkConfig(RdnaW8A8Routing, QuarkConfig):
    """AMD Quark checkpoints (`quant_method: quark`): upstream's Quark parsing and
    schemes; its W8A8 schemes ask the same kernel lists as compressed-tensors."""

    def _moe_scheme(self, layer: RoutedExperts, prefix: str) -> tuple[QuantKey | None, QuantKey | None] | None:
        weight_key, activation_key, _ = self.get_quant_method_target(prefix, type(layer))
        return None if weight_key is None else (weight_key, activation_key)

    def _our_experts_method(self, layer: RoutedExperts, prefix: str,
                            scheme: tuple[QuantKey, QuantKey]) -> QuantizeMethodBase:
        from vllm_rdna_w8a8.moe.experts import RdnaW8A8Int8Experts
        from vllm_rdna_w8a8.moe.methods import RdnaW8A8QuarkFp8MoEMethod, RdnaW8A8QuarkInt8MoEMethod

        if our_experts_class(scheme) is RdnaW8A8Int8Experts:
            return RdnaW8A8QuarkInt8MoEMethod(layer.moe_config)
        return RdnaW8A8QuarkFp8MoEMethod(layer.moe_config, scheme)
