"""The W8A8 int8 MoE layer on our HIP kernels: `int8_moe`, with moe/reference.int8_moe's
signature and result bit for bit (the HIP implementation of moe/op.py's op). It lives in
moe/, not ops/, because it builds on the MoE reference (moe -> ops, never back).

Per call, without reading anything back to the host (no synchronisation):
1. the (token, slot) pairs sorted by expert with torch ops, each expert's run padded to
   the GEMM tile's BLOCK_M (`expert_blocks`: sorted_slots, block_experts; the grid is an
   upper bound whose surplus workgroups exit at once);
2. x quantized per token (w8a8_quant_i8_*), once: every slot of a token reads the same row;
3. gate_up [M * top_k, 2I] = one grouped GEMM launch (w8a8_i8_moe_<dtype>_gemm_<tag>,
   kernels/moe_gemm.hip) over all experts, one output row per slot;
4. act = reference.silu_and_mul(gate_up) (torch; float32, one rounding), quantized per
   slot (w8a8_quant_i8_*);
5. down [M * top_k, H] = the second grouped GEMM launch;
6. reference.combine: the top-k weighted sum in float32 in slot order (torch).
Each step is the reference's arithmetic on the same values, so the result has its bits.

Weight layout (`prepare_int8_moe_weights`, called once at load by the experts class): each
[E, N, K] int8 weight as a view of a buffer whose rows are padded with zeros to K_pad (K
rounded up to 16; plus 128 bytes where K_pad is a multiple of 2048, as the dense layers'
`scaled_mm.weights.weight_row_stride`, against cache-channel aliasing), experts one after
another. The view keeps the logical shape [E, N, K], so the reference and the op's fake
accept it as they accept the checkpoint's tensor. `int8_moe` reads any weight whose
experts are contiguous, rows 16-byte aligned and readable up to K_pad in place (the
quantized activations are zero past K, so whatever the padding holds adds nothing); other
weights are re-stored so on every call (a copy).

Routing ids are checked (range, no expert twice per token) on CPU tensors only: on a GPU
that check would read them back to the host on every layer call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vllm_rdna_w8a8.dispatch import pick_gemm_config
from vllm_rdna_w8a8.dispatch.perf_model import cache_aliasing_pad
from vllm_rdna_w8a8.dispatch.tile_configs import TileConfig
from vllm_rdna_w8a8.moe import reference as moe_reference
from vllm_rdna_w8a8.ops.hip_backend import (
    A_SCALE_PER_TOKEN,
    ALIGNMENT_BYTES,
    B_SCALE_PER_CHANNEL,
    _check_aligned,
    _check_rows,
    _device_and_stream,
    _kernel,
    _target,
    scaled_int8_quant,
)
from vllm_rdna_w8a8.ops.validation import K_ALIGNMENT, MAX_INT8_K, padded_k
from vllm_rdna_w8a8.runtime.kernel_args import MOE_GEMM_KERNEL_ARGS, kinds

_MOE_ARG_KINDS = kinds(MOE_GEMM_KERNEL_ARGS)
PADDING_SLOT = -1  # sorted_slots entry of a padding row
NO_EXPERT = -1  # block_experts entry of a row block past the last expert's rows


def moe_kernel_name(config: TileConfig, activation_dtype: torch.dtype) -> str:
    """`w8a8_i8_moe_<f16|bf16>_gemm_<tag>` (kernels/moe_gemm.hip)."""
    return f"w8a8_i8_moe_{'bf16' if activation_dtype == torch.bfloat16 else 'f16'}_gemm_{config.tag}"


def weight_row_stride(k: int) -> int:
    """Bytes between the rows of a stored expert weight with K columns."""
    k_pad = padded_k(k)
    return k_pad + cache_aliasing_pad(k_pad)


def store_expert_weight(weight: torch.Tensor) -> torch.Tensor:
    """[E, N, K] int8 -> the same values as a view of an [E, N, weight_row_stride(K)] buffer
    with zero padding columns (the module docstring's layout)."""
    if not isinstance(weight, torch.Tensor) or weight.dtype != torch.int8 or weight.dim() != 3:
        raise ValueError(f"expected an [E, N, K] int8 expert weight, got {_describe(weight)}")
    k = weight.shape[2]
    stored = torch.nn.functional.pad(weight, (0, weight_row_stride(k) - k))
    return stored[:, :, :k]


def prepare_int8_moe_weights(w13: torch.Tensor, w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w13 [E, 2I, H], w2 [E, H, I]) int8 -> the same in the layout `int8_moe` reads in place."""
    return store_expert_weight(w13), store_expert_weight(w2)


def _readable_in_place(weight: torch.Tensor) -> bool:
    """Experts contiguous, K contiguous, rows 16-byte aligned and readable up to K_pad."""
    experts, n, k = weight.shape
    row_stride = weight.stride(1)
    last_byte = weight.storage_offset() + (experts * n - 1) * row_stride + padded_k(k)
    return (weight.stride(2) == 1 and row_stride % ALIGNMENT_BYTES == 0 and row_stride >= padded_k(k)
            and weight.stride(0) == n * row_stride and weight.data_ptr() % ALIGNMENT_BYTES == 0
            and last_byte <= weight.untyped_storage().nbytes())


@dataclass(frozen=True)
class ExpertBlocks:
    """The routing of a grouped GEMM launch with row blocks of `block_m` (kernels/moe_gemm.hip):
    sorted_slots [blocks * block_m] int32, the slot (token * top_k + j) of each padded row or
    PADDING_SLOT; block_experts [blocks] int32, the expert of each row block or NO_EXPERT."""

    sorted_slots: torch.Tensor
    block_experts: torch.Tensor
    blocks: int
    block_m: int


def expert_blocks(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> ExpertBlocks:
    """The slots sorted by expert as moe.reference.sort_by_expert (stable: token order within
    an expert), each expert's run padded to a multiple of `block_m`, in torch ops that read
    nothing back to the host. The number of blocks is the bound the shapes give: at most
    min(E, slots) experts have slots, each wastes at most block_m - 1 padding rows."""
    flat = topk_ids.reshape(-1).to(torch.int64)
    slots = flat.numel()
    device = flat.device
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device).index_add_(0, flat, torch.ones_like(flat))
    padded_counts = (counts + block_m - 1) // block_m * block_m
    padded_ends = torch.cumsum(padded_counts, 0)
    order = torch.sort(flat, stable=True).indices
    expert_of = flat[order]
    rank_in_expert = torch.arange(slots, device=device) - (torch.cumsum(counts, 0) - counts)[expert_of]
    blocks = (slots + min(num_experts, slots) * (block_m - 1)) // block_m
    sorted_slots = torch.full((blocks * block_m,), PADDING_SLOT, dtype=torch.int32, device=device)
    sorted_slots[(padded_ends - padded_counts)[expert_of] + rank_in_expert] = order.to(torch.int32)
    block_starts = torch.arange(blocks, dtype=torch.int64, device=device) * block_m
    expert_of_block = torch.searchsorted(padded_ends, block_starts, right=True)
    block_experts = torch.where(expert_of_block < num_experts, expert_of_block, NO_EXPERT).to(torch.int32)
    return ExpertBlocks(sorted_slots, block_experts, blocks, block_m)


def int8_moe(
    x: torch.Tensor,
    w13: torch.Tensor,
    w13_scale: torch.Tensor,
    w2: torch.Tensor,
    w2_scale: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
) -> torch.Tensor:
    """Same contract as `moe.reference.int8_moe`: x [M, H] fp16/bf16; w13 [E, 2I, H] int8
    (gate rows, then up rows) with per-channel scales [E, 2I] float32; w2 [E, H, I] int8 with
    scales [E, H]; topk_weights [M, top_k], topk_ids [M, top_k] int32/int64 -> [M, H]."""
    moe_reference.check_int8_moe_args(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids)
    _check_hip_args(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids)
    tokens, hidden = x.shape
    if tokens == 0:
        return x.new_empty((0, hidden))
    routings: dict[int, ExpertBlocks] = {}  # by BLOCK_M, shared by the two GEMMs
    q, x_scale, _ = scaled_int8_quant(x, None, None, True, padded_k(hidden))
    gate_up = grouped_int8_gemm(q, x_scale, w13, w13_scale, topk_ids, topk_ids.shape[1], x.dtype, routings)
    act = moe_reference.silu_and_mul(gate_up)
    q_act, act_scale, _ = scaled_int8_quant(act, None, None, True, padded_k(act.shape[1]))
    down = grouped_int8_gemm(q_act, act_scale, w2, w2_scale, topk_ids, 1, x.dtype, routings)
    return moe_reference.combine(down, topk_weights)


def grouped_int8_gemm(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    topk_ids: torch.Tensor,
    slots_per_a_row: int,
    out_dtype: torch.dtype,
    routings: dict[int, ExpertBlocks] | None = None,
) -> torch.Tensor:
    """One launch of w8a8_i8_moe_<dtype>_gemm_<tag>: for every slot s = token * top_k + j of
    topk_ids [M, top_k], out[s] = a_scale[r] * (weight_scale[e] * (a[r] . weight[e])) with
    r = s // slots_per_a_row and e = topk_ids[token, j], rounded to out_dtype -> [M * top_k, N].
    a [rows, K_pad] int8 (zero past K), a_scale [rows] float32, weight [E, N, K] int8,
    weight_scale [E, N] float32. `routings` caches `expert_blocks` by BLOCK_M across calls."""
    device_index, stream = _device_and_stream(a)
    num_experts, n, k = weight.shape
    slots = topk_ids.numel()
    k_pad = a.shape[1]
    if a.dtype != torch.int8 or weight.dtype != torch.int8 or a_scale.dtype != torch.float32:
        raise TypeError(f"a and weight must be int8 and a_scale float32, got {a.dtype}, {weight.dtype} "
                        f"and {a_scale.dtype}")
    if weight_scale.dtype != torch.float32 or tuple(weight_scale.shape) != (num_experts, n):
        raise ValueError(f"weight_scale must be float32 [{num_experts}, {n}] (per expert and channel), "
                         f"got {weight_scale.dtype} {list(weight_scale.shape)}")
    if k_pad != padded_k(k) or (slots - 1) // slots_per_a_row >= a.shape[0] or a_scale.numel() != a.shape[0]:
        raise ValueError(f"a {list(a.shape)} with a_scale {list(a_scale.shape)} does not serve {slots} slots "
                         f"({slots_per_a_row} per row) against weight {list(weight.shape)}: a needs "
                         f"{padded_k(k)} columns, one row per {slots_per_a_row} slots and a scale per row")
    out = torch.empty((slots, n), dtype=out_dtype, device=a.device)
    if slots == 0:
        return out
    weight = weight if _readable_in_place(weight) else store_expert_weight(weight)
    weight_scale, a_scale = weight_scale.contiguous(), a_scale.contiguous()  # alive through the launch
    # Tokens per expert if the router spread them evenly: the table's M for the tile.
    config = pick_gemm_config(_target(device_index), -(-slots // num_experts), n, k_pad, "i8")
    routings = {} if routings is None else routings
    if config.block_m not in routings:
        routings[config.block_m] = expert_blocks(topk_ids, num_experts, config.block_m)
    routing = routings[config.block_m]
    lda = _check_rows("a", a, K_ALIGNMENT)
    _check_aligned("a", a)
    _kernel(device_index, moe_kernel_name(config, out_dtype)).launch_values(
        (routing.blocks * -(-n // config.block_n), 1, 1),
        (config.threads, 1, 1),
        _MOE_ARG_KINDS,
        (a.data_ptr(), weight.data_ptr(), out.data_ptr(), a_scale.data_ptr(), weight_scale.data_ptr(),
         routing.sorted_slots.data_ptr(), routing.block_experts.data_ptr(), routing.blocks, slots,
         slots_per_a_row, n, k_pad, lda, weight.stride(1), n, A_SCALE_PER_TOKEN | B_SCALE_PER_CHANNEL),
        stream,
    )
    return out


def _check_hip_args(x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor,
                    w2_scale: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> None:
    """What the kernels need beyond the reference's shape checks."""
    tensors = {"w13": w13, "w13_scale": w13_scale, "w2": w2, "w2_scale": w2_scale,
               "topk_weights": topk_weights, "topk_ids": topk_ids}
    for name, tensor in tensors.items():
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device}, the activations on {x.device}")
    for name, scale in (("w13_scale", w13_scale), ("w2_scale", w2_scale)):
        if scale.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {str(scale.dtype).removeprefix('torch.')}")
    if not topk_weights.is_floating_point():
        raise TypeError(f"topk_weights must be a floating-point tensor, got {topk_weights.dtype}")
    for name, k in (("H (x's columns)", x.shape[1]), ("I (w2's columns)", w2.shape[2])):
        if padded_k(k) > MAX_INT8_K:
            raise ValueError(f"{name} = {k} exceeds {MAX_INT8_K}, the largest K whose int8 sums always fit "
                             f"the int32 accumulator")
    if topk_ids.device.type == "cpu":
        moe_reference.sort_by_expert(topk_ids, w13.shape[0])  # raises on ids out of range or repeated


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    return type(value).__name__
