"""vLLM's W8A8 linear layers on our gfx11 HIP kernels.

- `RdnaHipInt8ScaledMMLinearKernel` (int8): weight layout after
  `process_weights_after_loading` in `weights.py` (K padded to 16, row stride off gfx11's
  cache-aliasing strides); `apply_weights` is one op: at decode M (<= 16) one launch that
  quantizes the activations inside the GEMM, else our activation quantizer, then the GEMM,
  with scale / zero-point / bias fused in both. A layer with K > 131056 (`MAX_INT8_LAYER_K`:
  longer int32 sums could overflow) goes to the class vLLM picks without ours, when its weight
  is loaded: vLLM's int8 layer config, all `can_implement` sees, has no shape.
- `RdnaHipFp8ScaledMMLinearKernel` (fp8 e4m3fn): vLLM's scheme prepares the weight
  (requantized to one scale for fused per-tensor shards, seen as [K, N]) and vLLM's base
  class quantizes the activations (QuantFP8); we run the GEMM with the scale / bias
  epilogue fused. The weight is re-stored once (`process_weights_after_loading`) where K
  is not a multiple of 16 (zero padding) or its row stride would alias on gfx11 (a
  128-byte pad, `weights.store_weight`); the quantized activations are padded per call
  only where K is not a multiple of 16 (one extra copy, only for such layers).

Both are selected by vLLM (first in its lists, see `registry.py`) when `is_supported`
finds ROCm gfx11 (or the emulated gfx11 backend) with a loadable code object for the
device's exact target.
"""

from __future__ import annotations

import logging

import torch
from vllm.model_executor.kernels.linear.scaled_mm.ScaledMMLinearKernel import (
    FP8ScaledMMLinearKernel,
    FP8ScaledMMLinearLayerConfig,
    Int8ScaledMMLinearKernel,
    Int8ScaledMMLinearLayerConfig,
)
from vllm.model_executor.utils import replace_parameter

from vllm_rdna_w8a8.ops.custom_ops import fp8_scaled_mm, int8_quant_scaled_mm
from vllm_rdna_w8a8.ops.validation import ACTIVATION_DTYPES, K_ALIGNMENT, MAX_INT8_K, OUTPUT_DTYPES
from vllm_rdna_w8a8.scaled_mm import registry, support, weights

logger = logging.getLogger("vllm.rdna_w8a8")

# The longest K of an int8 layer: padded to 16, it must stay within what the GEMMs' int32
# sums hold (the ops refuse more).
MAX_INT8_LAYER_K = MAX_INT8_K // K_ALIGNMENT * K_ALIGNMENT


def int8_layer_k_problem(k: int) -> str | None:
    """Why our int8 kernels cannot serve a layer with K input columns, or None."""
    if k > MAX_INT8_LAYER_K:
        return (f"requires K <= {MAX_INT8_LAYER_K} (K padded to {K_ALIGNMENT} within {MAX_INT8_K}, the largest "
                f"K whose int8 sums always fit the int32 accumulator), the layer has K={k}")
    return None


class RdnaHipInt8ScaledMMLinearKernel(Int8ScaledMMLinearKernel):
    # Upstream's class for a layer whose K we cannot serve (see process_weights_after_loading).
    upstream: Int8ScaledMMLinearKernel | None = None
    _upstream_logged: set[tuple[str, str]] = set()

    @classmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        return support.hip_kernels_usable()

    @classmethod
    def can_implement(cls, c: Int8ScaledMMLinearLayerConfig) -> tuple[bool, str | None]:
        # Every int8 variant (static/dynamic, symmetric/asymmetric, per-tensor/per-channel,
        # fused shards) is implemented; the activation dtype is the one limit here. vLLM builds
        # layers under the model dtype as torch's default dtype. K, the other limit, is not in
        # vLLM's int8 layer config (0.32, 0.33): process_weights_after_loading applies it.
        dtype = torch.get_default_dtype()
        if dtype not in ACTIVATION_DTYPES:
            return False, f"requires float16 or bfloat16 activations, the model dtype is {dtype}"
        return True, None

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        w_name, w_scale_name, i_scale_name, i_zp_name, azp_adj_name = self.layer_param_names
        weight = getattr(layer, w_name).data
        too_long = int8_layer_k_problem(weight.shape[1])
        if too_long:
            # The layer's parameters are still the checkpoint's: upstream's class prepares them
            # and serves the layer, as if ours had declined it at selection.
            self.upstream = registry.upstream_int8_kernel(self.config)(self.config, self.layer_param_names)
            self._log_upstream(too_long, type(self.upstream).__name__)
            self.upstream.process_weights_after_loading(layer)
            return
        name = weights.layer_name(layer)
        weight_scale = getattr(layer, w_scale_name).data
        weights.check_scales("weight scale", weight_scale, name, divided_by=False)
        replace_parameter(layer, w_name, weights.store_weight(weight))
        replace_parameter(
            layer, w_scale_name, weights.channel_scales(weight_scale, layer.logical_widths, self.config.is_channelwise)
        )
        static_zero_point = None
        if self.config.is_static_input_scheme:
            input_scale = getattr(layer, i_scale_name).data
            weights.check_scales("static input scale", input_scale, name, divided_by=True)
            zero_point = None if self.config.input_symmetric else getattr(layer, i_zp_name).data
            scale, static_zero_point = weights.static_input_params(input_scale, zero_point)
            replace_parameter(layer, i_scale_name, scale)
            replace_parameter(layer, i_zp_name, static_zero_point)
        else:
            replace_parameter(layer, i_scale_name, None)
            replace_parameter(layer, i_zp_name, None)
        azp_adj = None
        if not self.config.input_symmetric:
            azp_adj = weights.azp_adjustment(weight, static_zero_point)
        replace_parameter(layer, azp_adj_name, azp_adj)

    @classmethod
    def _log_upstream(cls, reason: str, upstream: str) -> None:
        """One line per distinct reason and upstream class, not one per layer."""
        if (reason, upstream) not in cls._upstream_logged:
            cls._upstream_logged.add((reason, upstream))
            logger.info("rdna_w8a8: %s %s; such int8 layers stay on %s", cls.__name__, reason, upstream)

    def apply_weights(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.upstream is not None:
            return self.upstream.apply_weights(layer, x, bias)
        weight, weight_scale, input_scale, input_zero_point, azp_adj = self._get_layer_params(layer)
        # vLLM passes [tokens, K] rows: no reshape (each costs about a microsecond) unless needed.
        rows = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        if rows.stride(-1) != 1:
            rows = rows.contiguous()
        # A static zero point is folded into azp_adj (and quantizes x); a dynamic one is per token.
        out = int8_quant_scaled_mm(
            rows, weight, input_scale, input_zero_point, azp_adj is None, weight_scale, x.dtype,
            azp_adj, bias,
        )
        return out if x.dim() == 2 else out.reshape(*x.shape[:-1], weight.shape[0])


class RdnaHipFp8ScaledMMLinearKernel(FP8ScaledMMLinearKernel):
    @classmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        return support.hip_kernels_usable("f8")

    @classmethod
    def can_implement(cls, c: FP8ScaledMMLinearLayerConfig) -> tuple[bool, str | None]:
        weight_key, activation_key = c.weight_quant_key, c.activation_quant_key
        if weight_key.dtype != torch.float8_e4m3fn or activation_key.dtype != torch.float8_e4m3fn:
            return False, "requires float8_e4m3fn weights and activations"
        activation_group = activation_key.scale.group_shape
        if not (activation_group.is_per_tensor() or activation_group.is_per_token()):
            return False, "requires per-tensor or per-token activation scales"
        weight_group = weight_key.scale.group_shape
        if not weight_key.scale.static or not (weight_group.is_per_tensor() or weight_group.is_per_channel()):
            return False, "requires static per-tensor or per-channel weight scales"
        if c.out_dtype not in OUTPUT_DTYPES:
            return False, f"requires a float16 or bfloat16 output, got {c.out_dtype}"
        return True, None

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        # vLLM's scheme has prepared the parameters: a static input scale is now one value (the
        # shards' largest), a per-tensor weight scale too, the shards re-quantized by dividing by it.
        w_name, w_scale_name, i_scale_name, _ = self.layer_param_names
        name = weights.layer_name(layer)
        per_tensor_weights = self.config.weight_quant_key.scale.group_shape.is_per_tensor()
        weights.check_scales("weight scale", getattr(layer, w_scale_name).data, name, divided_by=per_tensor_weights)
        input_scale = getattr(layer, i_scale_name, None)
        if self.config.activation_quant_key.scale.static and input_scale is not None:
            weights.check_scales("static input scale", input_scale.data, name, divided_by=True)
        weight_kn = getattr(layer, w_name)
        weight_nk = weight_kn.data.t()
        stored = weights.store_weight(weight_nk)
        if stored.data_ptr() != weight_nk.data_ptr():  # K or the row stride padded
            weight_kn_padded = stored.t()
            # Keep the attributes vLLM's scheme put on its parameter (0.32: plain input_dim /
            # output_dim tags), and only those it holds itself: on a vLLM parameter class
            # (0.33) input_dim is a read-only property over _input_dim, which replace_parameter
            # could not set back.
            for name, value in vars(weight_kn).items():
                setattr(weight_kn_padded, name, value)
            replace_parameter(layer, w_name, weight_kn_padded)

    def apply_scaled_mm(
        self,
        *,
        A: torch.Tensor,
        B: torch.Tensor,
        out_dtype: torch.dtype,
        As: torch.Tensor,
        Bs: torch.Tensor,
        bias: torch.Tensor | None,
        output_shape: list,
    ) -> torch.Tensor:
        # B is vLLM's [K, N] view of the [N, K] weight: its transpose is our B operand.
        if A.shape[1] != B.shape[0]:
            A = weights.pad_k(A)  # the weight's K was padded at load time
        out = fp8_scaled_mm(A, B.t(), As.reshape(-1), Bs.reshape(-1), out_dtype, bias)
        return out.view(*output_shape)
