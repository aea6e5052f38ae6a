"""The W8A8 MoE layers on our HIP kernels: `int8_moe` and `fp8_moe`, with the signatures of
moe/reference.int8_moe / fp8_moe (the HIP implementation of moe/op.py's op). int8 gives the
reference's result bit for bit (but for the rare SiLU case `silu_and_mul_quant` names); fp8
agrees to the kernel's float32 sums (the reference sums exactly in float64), bit for bit
wherever the float32 sums are exact. It lives in moe/, not ops/, because it builds on the
MoE reference (moe -> ops, never back).

Per call, without reading anything back to the host (no synchronisation):
1. the (token, slot) pairs sorted by expert with torch ops, each expert's run padded to
   the GEMM tile's BLOCK_M (`expert_blocks`: sorted_slots, block_experts; the grid is an
   upper bound whose surplus workgroups exit at once);
2. x quantized once (every slot of a token reads the same row): int8 per token with
   w8a8_quant_i8_*; fp8 with reference.quantize_fp8 (torch ops: vLLM's QuantFP8, dynamic per
   token or the static per-tensor scale; there is no HIP fp8 quantization kernel, the dense
   fp8 layers leave it to vLLM's QuantFP8 too), zero-padded to K_pad;
3. gate_up [M * top_k, 2I] = one grouped GEMM launch (w8a8_{i8,f8}_moe_<dtype>_gemm_<tag>,
   kernels/moe_gemm.hip) over all experts, one output row per slot;
4. act = silu(gate) * up in float32, rounded once to the activation dtype, quantized per
   slot: int8 in one launch (`silu_and_mul_quant`, w8a8_silu_mul_quant_i8_*: the bits of
   reference.silu_and_mul then w8a8_quant_i8_*, without writing act); fp8 as
   reference.silu_and_mul (torch) then quantized as in step 2 (or with the second stage's
   static scale);
5. down [M * top_k, H] = the second grouped GEMM launch;
6. reference.combine: the top-k weighted sum in float32 in slot order (torch).
Each step is the reference's arithmetic on the same values (the fp8 GEMM sums in float32).

Weight layout (`prepare_int8_moe_weights`, called once at load by the experts class;
`store_expert_weight` for fp8 alike): each [E, N, K] int8 / float8_e4m3fn weight as a view of a
buffer whose rows are padded with zeros to K_pad (K rounded up to 16; plus 128 bytes where K_pad
is a multiple of 2048, as the dense layers' `scaled_mm.weights.weight_row_stride`, against
cache-channel aliasing), experts one after another. The view keeps the logical shape [E, N, K],
so the reference and the op's fake accept it as they accept the checkpoint's tensor. The layers
read any weight whose experts are contiguous, rows 16-byte aligned and readable up to K_pad in
place (the quantized activations are zero past K, so whatever the padding holds adds nothing);
other weights are re-stored so on every call (a copy).

Routing ids are checked (range, no expert twice per token) on CPU tensors only
(`HOST_CHECKED_DEVICES`): on a GPU that check would read them back to the host on every layer
call. There a bad id is harmless instead of an error: no buffer is indexed out of bounds
(`expert_blocks` computes an id outside [0, E) as the nearest expert, so every expert and slot
the kernels read lies in range), and an id outside [0, E) adds nothing to its token (its
top-k weight is taken as 0, as upstream's fused MoE writes zeros for expert -1, an expert on
another rank). A token routed twice to one expert gets that expert's output once per slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vllm_rdna_w8a8.dispatch import pick_moe_config
from vllm_rdna_w8a8.dispatch.perf_model import cache_aliasing_pad
from vllm_rdna_w8a8.dispatch.tile_configs import TileConfig
from vllm_rdna_w8a8.moe import reference as moe_reference
from vllm_rdna_w8a8.ops.hip_backend import (
    A_SCALE_PER_TOKEN,
    ALIGNMENT_BYTES,
    B_SCALE_PER_CHANNEL,
    QUANT_BLOCK_THREADS,
    _check_aligned,
    _check_rows,
    _device_and_stream,
    _kernel,
    _target,
    scaled_int8_quant,
)
from vllm_rdna_w8a8.ops.validation import K_ALIGNMENT, MAX_INT8_K, padded_k
from vllm_rdna_w8a8.runtime.kernel_args import MOE_GEMM_KERNEL_ARGS, SILU_MUL_QUANT_KERNEL_ARGS, kinds

_MOE_ARG_KINDS = kinds(MOE_GEMM_KERNEL_ARGS)
_SILU_MUL_QUANT_ARG_KINDS = kinds(SILU_MUL_QUANT_KERNEL_ARGS)
_SILU_MUL_QUANT_KERNELS = {torch.float16: "w8a8_silu_mul_quant_i8_f16", torch.bfloat16: "w8a8_silu_mul_quant_i8_bf16"}
_KIND_OF_OPERAND = {torch.int8: "i8", torch.float8_e4m3fn: "f8"}  # the kernels' operand kinds
PADDING_SLOT = -1  # sorted_slots entry of a padding row
NO_EXPERT = -1  # block_experts entry of a row block past the last expert's rows
# Where the routing ids are checked on the host: reading them back costs nothing there.
HOST_CHECKED_DEVICES = ("cpu",)


def moe_kernel_name(config: TileConfig, activation_dtype: torch.dtype, kind: str = "i8") -> str:
    """`w8a8_<i8|f8>_moe_<f16|bf16>_gemm_<tag>` (kernels/moe_gemm.hip)."""
    return config.moe_kernel_name("bf16" if activation_dtype == torch.bfloat16 else "f16", kind)


def weight_row_stride(k: int) -> int:
    """Bytes between the rows of a stored expert weight with K columns."""
    k_pad = padded_k(k)
    return k_pad + cache_aliasing_pad(k_pad)


def store_expert_weight(weight: torch.Tensor) -> torch.Tensor:
    """[E, N, K] int8 or float8_e4m3fn -> the same values as a view of an
    [E, N, weight_row_stride(K)] buffer with zero padding columns (the module docstring's
    layout)."""
    if not isinstance(weight, torch.Tensor) or weight.dtype not in _KIND_OF_OPERAND or weight.dim() != 3:
        raise ValueError(f"expected an [E, N, K] int8 or float8_e4m3fn expert weight, got {_describe(weight)}")
    k = weight.shape[2]
    stored = torch.nn.functional.pad(weight, (0, weight_row_stride(k) - k))
    return stored[:, :, :k]


def prepare_int8_moe_weights(w13: torch.Tensor, w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w13 [E, 2I, H], w2 [E, H, I]) int8 -> the same in the layout `int8_moe` reads in place."""
    return store_expert_weight(w13), store_expert_weight(w2)


def _readable_in_place(weight: torch.Tensor) -> bool:
    """Experts contiguous, K contiguous, rows 16-byte aligned and readable up to K_pad; fp8
    only without padding columns (K % 16 == 0): a padding byte may be an e4m3fn NaN, and
    0 * NaN is NaN, where int8 padding adds nothing whatever it holds."""
    experts, n, k = weight.shape
    if weight.dtype == torch.float8_e4m3fn and k != padded_k(k):
        return False
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
    min(E, slots) experts have slots, each wastes at most block_m - 1 padding rows. An id
    outside [0, E) counts as the nearest expert: nothing indexes past the buffers (unchecked
    on a GPU: see the module docstring)."""
    flat = topk_ids.reshape(-1).to(torch.int64).clamp(0, num_experts - 1)
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

    q, x_scale, _ = scaled_int8_quant(x, None, None, True, padded_k(x.shape[1]))
    return _swiglu_moe(x, (q, x_scale), (w13, w2), (w13_scale, w2_scale), topk_weights, topk_ids,
                       silu_and_mul_quant)


def silu_and_mul_quant(gate_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gate_up [rows, 2I] fp16/bf16 with contiguous rows -> (q [rows, I_pad] int8, zero past I;
    scale [rows] float32): the bits of scaled_int8_quant(reference.silu_and_mul(gate_up), dynamic
    symmetric) in one launch of w8a8_silu_mul_quant_i8_<dtype> (kernels/quant_int8.hip). Its silu
    is torch's vectorised CPU loop bit for bit; where the reference's torch silu takes its scalar
    loop (a row's last I % 32 columns on AVX-512) the float32 silu can differ in the last bit,
    which rarely moves act's rounding (kernels/common/silu_mul.h)."""
    if gate_up.dim() != 2 or gate_up.dtype not in _SILU_MUL_QUANT_KERNELS or gate_up.shape[1] % 2:
        raise ValueError(f"gate_up must be a [rows, 2I] float16/bfloat16 tensor with an even number of "
                         f"columns, got {_describe(gate_up)}")
    rows, intermediate = gate_up.shape[0], gate_up.shape[1] // 2
    ld_gate_up = _check_rows("gate_up", gate_up)
    q = torch.empty((rows, padded_k(intermediate)), dtype=torch.int8, device=gate_up.device)
    scale = torch.empty((rows,), dtype=torch.float32, device=gate_up.device)
    if rows == 0:
        return q, scale
    device_index, stream = _device_and_stream(gate_up)
    _kernel(device_index, _SILU_MUL_QUANT_KERNELS[gate_up.dtype]).launch_values(
        (rows, 1, 1),
        (QUANT_BLOCK_THREADS, 1, 1),
        _SILU_MUL_QUANT_ARG_KINDS,
        (gate_up.data_ptr(), q.data_ptr(), scale.data_ptr(), rows, intermediate, ld_gate_up, q.shape[1]),
        stream,
    )
    return q, scale


def fp8_moe(
    x: torch.Tensor,
    w13: torch.Tensor,
    w13_scale: torch.Tensor,
    w2: torch.Tensor,
    w2_scale: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    a13_scale: torch.Tensor | None = None,
    a2_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as `moe.reference.fp8_moe`: float8_e4m3fn weights with float32 scales
    [E, N] (per channel) or [E, 1] (per tensor); `a13_scale` / `a2_scale` the static
    per-tensor activation scales [1] of the two GEMM stages, None for dynamic per-token ones.
    Equal to the reference up to the kernels' float32 sums (exact where those are)."""
    moe_reference.check_fp8_moe_args(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids)
    static_scales = (_static_scale("a13_scale", a13_scale), _static_scale("a2_scale", a2_scale))
    given = {name: scale for name, scale in zip(("a13_scale", "a2_scale"), static_scales) if scale is not None}
    _check_hip_args(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, given)

    def quantize(rows: torch.Tensor, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        q, scale = moe_reference.quantize_fp8(rows, static_scales[stage])
        k = rows.shape[1]
        return torch.nn.functional.pad(q, (0, padded_k(k) - k)), scale

    return _swiglu_moe(x, quantize(x, 0), (w13, w2), (w13_scale, w2_scale), topk_weights, topk_ids,
                       lambda gate_up: quantize(moe_reference.silu_and_mul(gate_up), 1))


def _swiglu_moe(x: torch.Tensor, quantized_x: tuple[torch.Tensor, torch.Tensor],
                weights: tuple[torch.Tensor, torch.Tensor], scales: tuple[torch.Tensor, torch.Tensor],
                topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                activation: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Steps 3-6 of the module docstring for checked arguments: `quantized_x` (step 2: x
    quantized and zero-padded to K_pad, its scales [M] or [1]); `activation(gate_up)` (step 4)
    -> act quantized and zero-padded to K_pad, its scales [slots] or [1]."""
    tokens, hidden = x.shape
    if tokens == 0:
        return x.new_empty((0, hidden))
    # Ids outside [0, E), unchecked on a GPU, add nothing (expert_blocks computes them as the
    # nearest expert; the module docstring).
    topk_weights = torch.where((topk_ids >= 0) & (topk_ids < weights[0].shape[0]), topk_weights, 0)
    routings: dict[int, ExpertBlocks] = {}  # by BLOCK_M, shared by the two GEMMs
    q, x_scale = quantized_x
    gate_up = grouped_gemm(q, x_scale, weights[0], scales[0], topk_ids, topk_ids.shape[1], x.dtype, routings)
    q_act, act_scale = activation(gate_up)
    down = grouped_gemm(q_act, act_scale, weights[1], scales[1], topk_ids, 1, x.dtype, routings)
    return moe_reference.combine(down, topk_weights)


def grouped_gemm(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    topk_ids: torch.Tensor,
    slots_per_a_row: int,
    out_dtype: torch.dtype,
    routings: dict[int, ExpertBlocks] | None = None,
) -> torch.Tensor:
    """One launch of w8a8_<i8|f8>_moe_<dtype>_gemm_<tag>: for every slot s = token * top_k + j
    of topk_ids [M, top_k], out[s] = a_scale[r] * (weight_scale[e] * (a[r] . weight[e])) with
    r = s // slots_per_a_row and e = topk_ids[token, j], rounded to out_dtype -> [M * top_k, N].
    a [rows, K_pad] (zero past K) and weight [E, N, K] both int8 or both float8_e4m3fn;
    a_scale float32 [rows] (per row) or [1] (per tensor); weight_scale float32 [E, N] (per
    channel) or [E, 1] (per tensor). `routings` caches `expert_blocks` by BLOCK_M across calls."""
    device_index, stream = _device_and_stream(a)
    num_experts, n, k = weight.shape
    slots = topk_ids.numel()
    rows, k_pad = a.shape
    kind = _KIND_OF_OPERAND.get(weight.dtype)
    if kind is None or a.dtype != weight.dtype or a_scale.dtype != torch.float32:
        raise TypeError(f"a and weight must both be int8 or both float8_e4m3fn and a_scale float32, got "
                        f"{a.dtype}, {weight.dtype} and {a_scale.dtype}")
    if weight_scale.dtype != torch.float32 or tuple(weight_scale.shape) not in ((num_experts, n), (num_experts, 1)):
        raise ValueError(f"weight_scale must be float32 [{num_experts}, {n}] (per expert and channel) or "
                         f"[{num_experts}, 1] (per expert), got {weight_scale.dtype} {list(weight_scale.shape)}")
    if k_pad != padded_k(k) or (slots - 1) // slots_per_a_row >= rows or a_scale.numel() not in (1, rows):
        raise ValueError(f"a {list(a.shape)} with a_scale {list(a_scale.shape)} does not serve {slots} slots "
                         f"({slots_per_a_row} per row) against weight {list(weight.shape)}: a needs "
                         f"{padded_k(k)} columns, one row per {slots_per_a_row} slots and a scale per row "
                         f"or one for all")
    out = torch.empty((slots, n), dtype=out_dtype, device=a.device)
    if slots == 0:
        return out
    weight = weight if _readable_in_place(weight) else store_expert_weight(weight)
    weight_scale, a_scale = weight_scale.contiguous(), a_scale.contiguous()  # alive through the launch
    # Picked per tokens per expert under uniform routing (the routing itself stays on the GPU).
    config = pick_moe_config(_target(device_index), topk_ids.shape[0], topk_ids.shape[1], num_experts, n, k_pad, kind)
    routings = {} if routings is None else routings
    if config.block_m not in routings:
        routings[config.block_m] = expert_blocks(topk_ids, num_experts, config.block_m)
    routing = routings[config.block_m]
    lda = _check_rows("a", a, K_ALIGNMENT)
    _check_aligned("a", a)
    flags = ((A_SCALE_PER_TOKEN if a_scale.numel() == rows else 0)
             | (B_SCALE_PER_CHANNEL if weight_scale.shape[1] == n else 0))
    _kernel(device_index, moe_kernel_name(config, out_dtype, kind)).launch_values(
        (routing.blocks * -(-n // config.block_n), 1, 1),
        (config.threads, 1, 1),
        _MOE_ARG_KINDS,
        (a.data_ptr(), weight.data_ptr(), out.data_ptr(), a_scale.data_ptr(), weight_scale.data_ptr(),
         routing.sorted_slots.data_ptr(), routing.block_experts.data_ptr(), routing.blocks, slots,
         slots_per_a_row, n, k_pad, lda, weight.stride(1), n, flags),
        stream,
    )
    return out


def _static_scale(name: str, scale: torch.Tensor | None) -> torch.Tensor | None:
    """A static per-tensor activation scale as the kernels read it: float32 [1]."""
    if scale is None:
        return None
    if not isinstance(scale, torch.Tensor) or not scale.is_floating_point() or scale.numel() != 1:
        raise ValueError(f"{name} must be None (dynamic per-token scales) or a floating-point tensor with one "
                         f"element (a static per-tensor scale), got {_describe(scale)}")
    return scale.reshape(1).float()


def _check_hip_args(x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor,
                    w2_scale: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                    static_scales: dict[str, torch.Tensor] | None = None) -> None:
    """What the kernels need beyond the reference's shape checks; `static_scales`: fp8's
    static activation scales given, by argument name."""
    tensors = {"w13": w13, "w13_scale": w13_scale, "w2": w2, "w2_scale": w2_scale,
               "topk_weights": topk_weights, "topk_ids": topk_ids, **(static_scales or {})}
    for name, tensor in tensors.items():
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device}, the activations on {x.device}")
    for name, scale in (("w13_scale", w13_scale), ("w2_scale", w2_scale)):
        if scale.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {str(scale.dtype).removeprefix('torch.')}")
    if not topk_weights.is_floating_point():
        raise TypeError(f"topk_weights must be a floating-point tensor, got {topk_weights.dtype}")
    for name, k in (("H (x's columns)", x.shape[1]), ("I (w2's columns)", w2.shape[2])):
        if w13.dtype == torch.int8 and padded_k(k) > MAX_INT8_K:
            raise ValueError(f"{name} = {k} exceeds {MAX_INT8_K}, the largest K whose int8 sums always fit "
                             f"the int32 accumulator")
    if topk_ids.device.type in HOST_CHECKED_DEVICES:
        moe_reference.sort_by_expert(topk_ids, w13.shape[0])  # raises on ids out of range or repeated


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    return type(value).__name__
