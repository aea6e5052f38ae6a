"""Weight preparation for our kernels, as plain functions any provider can call.

Checkpoint layout in (vLLM's compressed-tensors int8 scheme): weight [N, K] int8,
weight_scale [N, 1] (per channel) or [shards] (per tensor, one per fused shard), static
input_scale [1 or shards] and int8 input_zero_point. Our layout out:

- weight           [N, K_pad] int8, K padded with zero columns up to a multiple of 16
                   (torch Linear layout: K contiguous, the kernels' B), row stride K_pad,
                   or K_pad + 128 bytes where K_pad is a multiple of 2048 (`store_weight`);
- weight_scale     [N] float32 (per-tensor scales expanded to every channel of their
                   shard, as upstream does for fused modules);
- input_scale      [1] float32 for static activation scales, else None;
- input_zero_point [1] int32 for static asymmetric activations, else None;
- azp_adj          [N] int32 for asymmetric activations: the column sums of the weight,
                   times the static zero point when there is one (folded in, as upstream),
                   else None.

fp8 (compressed-tensors W8A8 fp8, prepared by vLLM into a [K, N] view of an [N, K]
weight): when K is not a multiple of 16, or K_pad is a multiple of 2048, our class
re-stores it the same way (`store_weight`, float8_e4m3fn zero is byte 0) and keeps vLLM's
[K_pad, N] view of it; the quantized activations are padded to K_pad before the GEMM
(`pad_k`, contiguous).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vllm_rdna_w8a8.dispatch.perf_model import cache_aliasing_pad
from vllm_rdna_w8a8.ops.validation import padded_k

_INT8 = torch.iinfo(torch.int8)
_INT32 = torch.iinfo(torch.int32)


_PADDABLE = (torch.int8, torch.float8_e4m3fn)


def _padded_rows(operand: torch.Tensor, row_stride: Callable[[int], int]) -> torch.Tensor:
    """[R, K] int8 or float8_e4m3fn -> [R, K_pad] with zero columns K..K_pad-1, rows
    `row_stride(K)` elements (= bytes) apart.

    Zero columns on both GEMM operands add exact zeros to every dot product.
    """
    if operand.dtype not in _PADDABLE or operand.dim() != 2:
        raise ValueError(
            f"expected an [R, K] int8 or float8_e4m3fn operand, got {operand.dtype} {list(operand.shape)}"
        )
    k = operand.shape[1]
    stride = row_stride(k)
    if stride == k:
        return operand.contiguous()
    # Padding on the bytes: both dtypes are one byte and their zero is byte 0x00.
    rows = torch.nn.functional.pad(operand.view(torch.uint8), (0, stride - k)).view(operand.dtype)
    return rows[:, : padded_k(k)]


def pad_k(operand: torch.Tensor) -> torch.Tensor:
    """[R, K] int8 or float8_e4m3fn -> contiguous [R, K_pad] with zero padding columns
    (the activations: the GEMM's A operand)."""
    return _padded_rows(operand, padded_k)


def weight_row_stride(k: int) -> int:
    """Row stride, in elements (= bytes), of a weight with K columns as we store it: K_pad,
    plus one 128-byte cache line where K_pad is a multiple of 2048 bytes.

    The extra line is vLLM 0.33's rule for unquantized weights on gfx11
    (`maybe_pad_weight_avoid_cache_aliasing`, vllm/model_executor/layers/utils.py): such a
    stride makes the rows a GEMM loads together collide on the same L2/MALL channels
    (`perf_model.cache_aliasing_pad`). Our classes run only on gfx11 (and its emulation),
    and every kernel reads B through its row stride (ldb): K itself and the results are
    unchanged, only about 128 / K_pad (3% at K = 4096) more weight memory.
    """
    k_pad = padded_k(k)
    return k_pad + cache_aliasing_pad(k_pad)


def store_weight(weight: torch.Tensor) -> torch.Tensor:
    """[N, K] int8 or float8_e4m3fn weight -> [N, K_pad] as our kernels read it: zero
    columns K..K_pad-1, rows `weight_row_stride(K)` apart (a view when that exceeds K_pad)."""
    return _padded_rows(weight, weight_row_stride)


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


def layer_name(layer: torch.nn.Module) -> str | None:
    """The layer's name in the checkpoint, where vLLM keeps it: `prefix` (linear layers),
    `layer_name` (MoE expert layers)."""
    return getattr(layer, "prefix", None) or getattr(layer, "layer_name", None)


def check_scales(what: str, scale: torch.Tensor, layer: str | None, *, divided_by: bool) -> None:
    """Refuse checkpoint scales that would make NaN or inf outputs, naming the layer and the
    first bad value: NaN or inf anywhere, and zero or negative where a value is divided by the
    scale (`divided_by`: a static activation scale quantizes x / scale; a per-tensor fp8 weight
    scale re-quantizes merged shards). Elsewhere zero is allowed, as upstream loads it: a zero
    weight scale multiplies its channel's sums, which gives 0 (an all-zero channel)."""
    values = scale.detach().float().squeeze()  # [N, 1] or [E, N, 1] scales: named by channel (and expert)
    bad = ~torch.isfinite(values)
    if divided_by:
        bad |= values <= 0
    if bad.any():
        index = tuple(int(i) for i in bad.nonzero()[0])
        position = f"[{', '.join(map(str, index))}]" if index else ""
        rule = "finite and > 0 (values are divided by it)" if divided_by else "finite"
        where = f"layer {layer}: " if layer else ""
        raise ValueError(f"{where}the checkpoint's {what}{position} is {values[index].item():.7g}; it must be {rule}")


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
    """[N] int32 azp_adj, upstream's (vLLM's Triton/CUTLASS int8 classes): the sum over K of
    the [N, K] weight, times the static zero point if any (folded in).

    Formed in int64 and refused unless it fits the int32 the kernels read, where upstream's
    int32 product would wrap. It always fits for what vLLM loads: a zero point rebuilt from
    int8 checkpoint zero points by `static_input_params` lies in [-128, 127] (every shard's
    range holds 0), so |azp_adj| <= 128 * 128 * K, below 2**31 for every K the int8 GEMMs
    take (`validation.MAX_INT8_K`). A zero or non-finite input scale is what breaks it (its
    zero point converts to -2**31).
    """
    column_sums = weight.sum(dim=1, dtype=torch.int64)
    zero_point = None if static_zero_point is None else int(static_zero_point.reshape(()))
    adjustment = column_sums if zero_point is None else column_sums * zero_point
    outside = ((adjustment < _INT32.min) | (adjustment > _INT32.max)).nonzero()
    if len(outside):
        n = int(outside[0])
        factors = "" if zero_point is None else f" times the static input zero point {zero_point}"
        raise ValueError(f"azp_adj[{n}] = {int(adjustment[n])} (the weight's column sum {int(column_sums[n])}"
                         f"{factors}) does not fit the int32 the kernels read")
    return adjustment.to(torch.int32).contiguous()
