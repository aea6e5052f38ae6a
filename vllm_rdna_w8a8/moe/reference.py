"""The exact math of a W8A8 MoE layer (SwiGLU experts) in plain torch, int8 and fp8.

int8: the one int8 MoE scheme vLLM accepts, symmetric per-channel int8 weights and
dynamic symmetric per-token int8 activations. fp8 (e4m3fn): per-tensor or per-channel
weight scales, activations dynamic per token or static per tensor (one scale per GEMM
stage, shared by the experts, as vLLM's fp8 MoE methods keep it), quantized as vLLM's
QuantFP8 does (scale = max(absmax / 448, 1 / (448 * 512)), x * (1 / scale) clamped to
+-448, rounded to e4m3fn). For M tokens of width H routed to top_k of E experts of
intermediate size I:

1. route: softmax over the router logits in float32, the top_k experts per token (equal
   probabilities: the lower expert index first; torch.topk leaves ties unspecified),
   weights renormalised to sum 1 when asked (Qwen3-MoE, Mixtral);
2. sort: the M * top_k (token, slot) pairs ordered by expert, stable in token order,
   with per-expert offsets: the layout the grouped GEMM walks, one expert's rows after
   another; an expert no token chose has an empty range;
3. per expert e, over its rows: gate_up = W8A8 GEMM of the token's quantized x with
   w13[e] [2I, H] (per-token quantization: the same q whatever the expert), scale
   epilogue, in the activation dtype; act = silu(gate) * up in float32, rounded to the
   activation dtype; down = W8A8 GEMM of act (quantized again) with w2[e] [H, I];
4. combine: out[token] = sum over its slots of topk_weight * down, in float32 in slot
   order, rounded once to the activation dtype.

Each int8 GEMM and quantization is `ops.reference` (bit-compatible with our dense
kernels; K zero-padded to 16 as the dense layers do); the fp8 GEMM is `ops.reference`'s
(exact float64 sums, where a kernel sums in float32).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from vllm_rdna_w8a8.ops import reference as dense
from vllm_rdna_w8a8.ops.validation import ACTIVATION_DTYPES, padded_k

FP8_MAX = torch.finfo(torch.float8_e4m3fn).max
FP8_MIN_SCALE = 1.0 / (FP8_MAX * 512.0)
# (rows [n, K] in the activation dtype, one expert's weight [N, K] and its scales, stage
# 0: w13 / 1: w2) -> [n, N] in the activation dtype
ExpertLinear = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class ExpertSort:
    """`slots` [M * top_k]: flat (token * top_k + j) indices grouped by expert;
    expert e's slots are slots[offsets[e]:offsets[e + 1]]."""

    slots: torch.Tensor
    offsets: torch.Tensor

    def token_of(self, top_k: int) -> torch.Tensor:
        return self.slots // top_k


def route(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, E] logits -> (weights [M, top_k] float32, expert ids [M, top_k] int32)."""
    if not isinstance(router_logits, torch.Tensor) or router_logits.dim() != 2:
        raise ValueError(f"router_logits must be an [M, E] tensor, got {_shape(router_logits)}")
    num_experts = router_logits.shape[1]
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be in [1, {num_experts}] (the number of experts), got {top_k}")
    probabilities = torch.softmax(router_logits.float(), dim=-1)
    ordered, order = torch.sort(probabilities, dim=-1, descending=True, stable=True)
    weights, ids = ordered[:, :top_k], order[:, :top_k]
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids.to(torch.int32)


def sort_by_expert(topk_ids: torch.Tensor, num_experts: int) -> ExpertSort:
    """Group the (token, slot) pairs by expert, keeping token order within an expert."""
    if topk_ids.dim() != 2 or topk_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"topk_ids must be an [M, top_k] int32/int64 tensor, got {_shape(topk_ids)} {topk_ids.dtype}")
    flat = topk_ids.reshape(-1).to(torch.int64)
    if flat.numel() and (flat.min() < 0 or flat.max() >= num_experts):
        raise ValueError(f"topk_ids must lie in [0, {num_experts}), got values in [{flat.min()}, {flat.max()}]")
    if topk_ids.shape[0] and any(len(set(row)) != len(row) for row in topk_ids.tolist()):
        raise ValueError("topk_ids must not route a token to the same expert twice")
    slots = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=num_experts)
    offsets = torch.zeros(num_experts + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(counts, dim=0)
    return ExpertSort(slots, offsets)


def int8_moe(
    x: torch.Tensor,
    w13: torch.Tensor,
    w13_scale: torch.Tensor,
    w2: torch.Tensor,
    w2_scale: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
) -> torch.Tensor:
    """x [M, H] fp16/bf16; w13 [E, 2I, H] int8 (gate rows, then up rows) with scales
    [E, 2I]; w2 [E, H, I] int8 with scales [E, H]; routing from `route` -> [M, H]."""
    check_int8_moe_args(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids)

    def linear(rows: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, stage: int) -> torch.Tensor:
        return dense.int8_quant_scaled_mm(rows, _pad_k(weight), None, None, True, scale, x.dtype)

    return swiglu_moe(x, (w13, w2), (w13_scale, w2_scale), topk_weights, topk_ids, linear)


def check_int8_moe_args(x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor,
                        w2_scale: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> None:
    """`int8_moe`'s argument checks (shapes and dtypes; ValueError naming the argument),
    shared with the op's fake and its HIP implementation."""
    _check_moe_args(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, torch.int8, per_tensor_ok=False)


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
    """As `int8_moe` with float8_e4m3fn weights, scales [E, N] (per channel) or [E, 1]
    (per tensor); `a13_scale` / `a2_scale`: static per-tensor activation scales [1] of the
    two GEMM stages, None for dynamic per-token ones."""
    check_fp8_moe_args(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids)
    static_scales = (a13_scale, a2_scale)

    def linear(rows: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, stage: int) -> torch.Tensor:
        q, row_scale = quantize_fp8(rows, static_scales[stage])
        return dense.fp8_scaled_mm(q, weight, row_scale, scale, x.dtype)

    return swiglu_moe(x, (w13, w2), (w13_scale, w2_scale), topk_weights, topk_ids, linear)


def check_fp8_moe_args(x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor,
                       w2_scale: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> None:
    """`fp8_moe`'s argument checks (as `check_int8_moe_args`), shared with its HIP implementation."""
    _check_moe_args(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, torch.float8_e4m3fn,
                    per_tensor_ok=True)


def quantize_fp8(x: torch.Tensor, static_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's QuantFP8 (native path): -> (q float8_e4m3fn, scale [M] dynamic or the static [1])."""
    values = x.float()
    if static_scale is None:
        scale = (values.abs().amax(dim=1) / FP8_MAX).clamp(min=FP8_MIN_SCALE)
    else:
        scale = static_scale.reshape(1).float()
    q = (values * scale.reshape(-1, 1).reciprocal()).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def swiglu_moe(x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor], scales: tuple[torch.Tensor, torch.Tensor],
               topk_weights: torch.Tensor, topk_ids: torch.Tensor, linear: ExpertLinear) -> torch.Tensor:
    """Steps 2-4 of the module docstring for routed tokens: `weights` (w13 [E, 2I, H],
    w2 [E, H, I]) and their `scales`, `linear` the scheme's W8A8 GEMM (quantization
    included)."""
    num_experts, hidden_out = weights[0].shape[0], weights[1].shape[1]
    top_k = topk_ids.shape[1]
    order = sort_by_expert(topk_ids, num_experts)
    down_per_slot = torch.zeros((topk_ids.numel(), hidden_out), dtype=x.dtype)
    for expert in range(num_experts):
        slots = order.slots[order.offsets[expert]:order.offsets[expert + 1]]
        if not slots.numel():
            continue  # no token chose this expert
        gate_up = linear(x[slots // top_k], weights[0][expert], scales[0][expert], 0)
        down_per_slot[slots] = linear(silu_and_mul(gate_up), weights[1][expert], scales[1][expert], 1)
    return combine(down_per_slot, topk_weights)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """[n, 2I] gate and up halves -> silu(gate) * up [n, I] in float32, rounded once to
    gate_up's dtype.

    Computed on the halves of one float32 copy (rows 2I apart), which torch's CPU loop walks
    row by row, so every value depends on its column only: torch's float32 silu differs in
    the last bit between its vectorised body and its scalar tail, and over a contiguous
    [n * I] buffer the tail would move with n. The grouped GEMMs (moe/hip_backend.py) call this
    on all slots at once and get the bits of the per-expert rows here.
    """
    intermediate = gate_up.shape[1] // 2
    values = gate_up.float()
    return (torch.nn.functional.silu(values[:, :intermediate]) * values[:, intermediate:]).to(gate_up.dtype)


def combine(down_per_slot: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
    """Step 4: down_per_slot [M * top_k, H] (row token * top_k + j, the activation dtype)
    -> [M, H], sum over j of topk_weights[token, j] * down in float32 in slot order,
    rounded once to the activation dtype."""
    (tokens, top_k), hidden = topk_weights.shape, down_per_slot.shape[1]
    weighted = down_per_slot.float().reshape(tokens, top_k, hidden) * topk_weights.float().unsqueeze(-1)
    out = torch.zeros((tokens, hidden), dtype=torch.float32, device=down_per_slot.device)
    for slot in range(top_k):  # slot order, one float32 addition each
        out += weighted[:, slot]
    return out.to(down_per_slot.dtype)


def _pad_k(weight: torch.Tensor) -> torch.Tensor:
    k = weight.shape[1]
    if k == padded_k(k):
        return weight
    return torch.nn.functional.pad(weight, (0, padded_k(k) - k))


def _shape(value: object) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _check_moe_args(x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor,
                    w2_scale: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                    weight_dtype: torch.dtype, per_tensor_ok: bool) -> None:
    if x.dim() != 2 or x.dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"x must be an [M, H] float16/bfloat16 tensor, got {_shape(x)} {x.dtype}")
    if w13.dim() != 3 or w2.dim() != 3 or w13.dtype != weight_dtype or w2.dtype != weight_dtype:
        raise ValueError(f"w13 and w2 must be [E, N, K] {str(weight_dtype).removeprefix('torch.')} tensors, "
                         f"got {_shape(w13)} {w13.dtype} and {_shape(w2)} {w2.dtype}")
    num_experts, two_i, hidden = w13.shape
    if two_i % 2:
        raise ValueError(f"w13 must hold gate and up rows (an even N), got N = {two_i}")
    intermediate = two_i // 2
    if hidden != x.shape[1] or tuple(w2.shape) != (num_experts, hidden, intermediate):
        raise ValueError(f"shapes disagree: x {_shape(x)}, w13 {_shape(w13)} (expected [E, 2I, {x.shape[1]}]), "
                         f"w2 {_shape(w2)} (expected [{num_experts}, {hidden}, {intermediate}])")
    for name, scale, rows in (("w13_scale", w13_scale, two_i), ("w2_scale", w2_scale, hidden)):
        allowed = [(num_experts, rows), (num_experts, 1)] if per_tensor_ok else [(num_experts, rows)]
        if tuple(scale.shape) not in allowed:
            shapes = " or ".join(f"[{e}, {n}]" for e, n in allowed)
            raise ValueError(f"{name} must have shape {shapes} (per expert: per channel or per tensor), "
                             f"got {_shape(scale)}")
    if topk_ids.dim() != 2 or tuple(topk_weights.shape) != tuple(topk_ids.shape) or topk_ids.shape[0] != x.shape[0]:
        raise ValueError(f"topk_weights and topk_ids must both be [{x.shape[0]}, top_k], "
                         f"got {_shape(topk_weights)} and {_shape(topk_ids)}")
