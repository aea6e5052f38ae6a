"""Weight preparation for our kernels, as plain functions any provider can call.

Checkpoint layout in (vLLM's compressed-tensors int8 scheme): weight [N, K] int8,
weight_scale [N, 1] (per channel) or [shards] (per tensor, one per fused shard), static
input_scale [1 or shards] and int8 input_zero_point. Our layout out:

- weight           [N, K_pad] int8, contiguous, K padded with zero columns up to a
                   multiple of 16 (torch Linear layout: K contiguous, the kernels' B);
- weight_scale     [N] float32 (per-tensor scales expanded to every channel of their
                   shard, as upstream does for fused modules);
- input_scale      [1] float32 for static activation scales, else None;
- input_zero_point [1] int32 for static asymmetric activations, else None;
- azp_adj          [N] int32 for asymmetric activations: the column sums of the weight,
                   times the static zero point when there is one (folded in, as upstream),
                   else None.

fp8 (compressed-tensors W8A8 fp8, prepared by vLLM into a [K, N] view of an [N, K]
weight): when K is not a multiple of 16 our class re-stores it as the [K_pad, N] view of
a contiguous [N, K_pad] float8_e4m3fn tensor with zero columns (e4m3fn zero is byte 0),
and pads the quantized activations to K_pad the same way before the GEMM.
"""

from __future__ import annotations

import torch

from vllm_rdna_w8a8.ops.validation import padded_k

_INT8 = torch.iinfo(torch.int8)


_PADDABLE = (torch.int8, torch.float8_e4m3fn)


def pad_k(operand: torch.Tensor) -> torch.Tensor:
    """[R, K] int8 or float8_e4m3fn -> contiguous [R, K_pad] with zero padding columns.

    Zero columns on both GEMM operands add exact zeros to every dot product.
    """
    if operand.dtype not in _PADDABLE or operand.dim() != 2:
        raise ValueError(
            f"expected an [R, K] int8 or float8_e4m3fn operand, got {operand.dtype} {list(operand.shape)}"
        )
    k = operand.shape[1]
    k_pad = padded_k(k)
    if k_pad == k:
        return operand.contiguous()
    # Padding on the bytes: both dtypes are one byte and their zero is byte 0x00.
    return torch.nn.functional.pad(operand.view(torch.uint8), (0, k_pad - k)).view(operand.dtype)


def channel_scales(weight_scale: torch.Tensor, logical_widths: list[int], is_channelwise: bool) -> torch.Tensor:
    """The weight scale as [N] float32: per-channel as is, per-tensor repeated per shard."""
    if is_channelwise:
        return weight_scale.reshape(-1).to(torch.float32).contiguous()
    shard_scales = weight_scale.reshape(-1).to(torch.float32)
    if shard_scales.numel() == 1:
        shard_scales = shard_scales.expand(len(logical_widths))
    if shard_scales.numel() != len(logical_widths):
        raise ValueError(
            f"{shard_scales.numel()} per-tensor weight scales for {len(logical_widths)} shards"
        )
    widths = torch.tensor(logical_widths, device=shard_scales.device)
    return shard_scales.repeat_interleave(widths).contiguous()


def static_input_params(
    input_scale: torch.Tensor, input_zero_point: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One static (scale [1], zero point [1] int32 or None) for the whole layer.

    Symmetric: the largest shard scale. Asymmetric: the range covered by every shard,
    rebuilt as one scale and zero point with upstream's (Triton/CUTLASS) formula,
    including its truncating conversion of the zero point.
    """
    if input_zero_point is None:
        return input_scale.max().reshape(1).to(torch.float32), None
    zero_points = input_zero_point.to(torch.int32)
    range_max = (input_scale * (_INT8.max - zero_points)).max()
    range_min = (input_scale * (_INT8.min - zero_points)).min()
    scale = (range_max - range_min) / (_INT8.max - _INT8.min)
    zero_point = (_INT8.min - range_min / scale).to(torch.int32)
    return scale.reshape(1).to(torch.float32), zero_point.reshape(1)


def azp_adjustment(weight: torch.Tensor, static_zero_point: torch.Tensor | None) -> torch.Tensor:
    """[N] int32: sum over K of the [N, K] weight, times the static zero point if any."""
    column_sums = weight.sum(dim=1, dtype=torch.int32)
    if static_zero_point is not None:
        column_sums = column_sums * static_zero_point.reshape(()).to(torch.int32)
    return column_sums.contiguous()
