"""A tiny Qwen3-MoE W8A8 checkpoint (int8 or fp8) run in plain torch, without vLLM: the
baseline of the MoE end-to-end tests (vLLM-CPU has no int8 MoE path on machines without
AMX, and its fp8 MoE computes with bfloat16 activations: W8A8 fp8 needs AMX-FP8).

transformers' Qwen3-MoE holds the checkpoint's unquantized tensors (embeddings, norms, q/k
norms, lm_head, routers); its quantized layers are replaced by the W8A8 math read straight
from the checkpoint's weights and scales (per channel: compressed-tensors [N, 1], Quark
[N]; per tensor: Quark's `fp8`, one scale per Linear, with a static input scale):
- int8 (per-channel weights, dynamic per-token activations): the attention projections by
  `ops.reference.int8_quant_scaled_mm`, each MoE block by `moe.reference.int8_moe`;
- fp8 e4m3: activations quantized as vLLM's QuantFP8 does (`moe.reference.quantize_fp8`:
  dynamic per token, or the static per-tensor input scale), the GEMM summed exactly in
  float64 (`ops.reference.fp8_scaled_mm`), the MoE blocks by `moe.reference.fp8_moe`.
  Per-tensor shards that vLLM fuses (q/k/v into qkv_proj, each expert's gate/up into w13)
  take vLLM's loading: one weight scale, the shards' largest, the other shards requantized
  to it (`requantize_to_max_scale`), and one input scale, the largest (for the experts:
  over all experts of the layer).
Every MoE block is routed as vLLM-CPU's router does (`vllm_cpu_routing`). The forward around those layers
(`vllm_cpu_logits`) rounds where vLLM-CPU rounds, not where transformers does, since this
tiny model's bfloat16 router logits nearly tie and one ulp moves a token to another expert:
- each RMSNorm after a residual add normalises the float32 sum (vLLM's fused add + RMSNorm;
  transformers normalises the sum rounded to bfloat16);
- RoPE: float32 angles (transformers' model cast to bfloat16 rounds its inverse frequencies),
  cos and sin rounded to bfloat16 (vLLM's cache), the rotation in float32, rounded once;
- attention in float32, rounded once (vLLM-CPU's attention kernel).
With transformers' own forward, the Quark checkpoint's step 0 of 'Hello, world!' differed from
vLLM's by 0.4 nats (layer 0 routed its first token to another expert: router logits 0.003
apart) and later steps beyond the near-tie rule; with this one, layer 0's attention, routing
and MoE output equal vLLM's bit for bit (checked on that prompt).
With tensor parallelism (`tensor_parallel` ranks) the row-parallel layers (o_proj, the
experts' w2 over the intermediate size) run per rank on their slice, activations quantized
per rank, and the ranks' outputs are summed as vLLM-CPU's all-reduce does (`all_reduce`);
the column-parallel ones compute the same values as at TP=1. At TP=2 this equals vLLM's
logprobs bit for bit on the reference ops (checked for the int8, Quark fp8 and ptpc_fp8
checkpoints).
Greedy decoding; the result has the shape of an engine run's (tests/e2e/engine_runner.py)
so the same comparison helpers apply.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from vllm_rdna_w8a8.moe import reference as moe_reference
from vllm_rdna_w8a8.ops import reference as dense_reference
from vllm_rdna_w8a8.ops.validation import padded_k

QKV_PROJECTIONS = ("q_proj", "k_proj", "v_proj")  # fused by vLLM into qkv_proj


QUANTIZED_DTYPES = (torch.int8, torch.float8_e4m3fn)


@dataclasses.dataclass
class QuantizedWeight:
    """A quantized Linear of the checkpoint: weight [N, K] int8 or float8_e4m3fn, float32
    scales [N] (per channel) or [1] (per tensor), the static input scale [1] or None."""

    weight: torch.Tensor
    scale: torch.Tensor
    input_scale: torch.Tensor | None

    @classmethod
    def read(cls, tensors: dict[str, torch.Tensor], name: str) -> QuantizedWeight:
        weight, scale = tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"]
        assert weight.dtype in QUANTIZED_DTYPES, f"{name} is not int8 or fp8 ({weight.dtype})"
        input_scale = tensors.get(f"{name}.input_scale")
        assert input_scale is None or weight.dtype == torch.float8_e4m3fn, f"{name}: static int8 is not handled here"
        return cls(weight, scale.float().reshape(-1), None if input_scale is None else input_scale.float().reshape(1))


def requantize_to_max_scale(shards: list[QuantizedWeight]) -> list[QuantizedWeight]:
    """Per-tensor fp8 shards of one fused layer as vLLM loads them (`requantize_with_max_scale`,
    `process_fp8_weight_tensor_strategy_moe`, and the input scales' maximum): each shard
    dequantized with its scale (in float32; vLLM's float16 gives the same fp8 values on these
    checkpoints) and quantized again with the largest scale (QuantFP8's static arithmetic);
    per-channel shards unchanged."""
    if any(shard.scale.numel() != 1 for shard in shards):
        return shards
    scale = torch.stack([shard.scale for shard in shards]).max().reshape(1)
    input_scales = [shard.input_scale for shard in shards if shard.input_scale is not None]
    input_scale = torch.stack(input_scales).max().reshape(1) if input_scales else None
    return [QuantizedWeight(moe_reference.quantize_fp8(shard.weight.float() * shard.scale, scale)[0], scale,
                            input_scale) for shard in shards]


class W8A8Linear(torch.nn.Module):
    """y = the W8A8 GEMM of x quantized (int8: per token; fp8: per token, or with the static
    input scale) with the quantized weight. `row_parallel` ranks (vLLM's RowParallelLinear
    at that tensor parallelism): each rank's K slice of x quantized and multiplied on its own,
    the ranks' outputs summed as vLLM's all-reduce does (`all_reduce`)."""

    def __init__(self, quantized: QuantizedWeight, row_parallel: int = 1) -> None:
        super().__init__()
        self.weights = quantized.weight.chunk(row_parallel, dim=1)
        self.scale, self.input_scale = quantized.scale, quantized.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = all_reduce([self._gemm(part, weight)
                          for part, weight in zip(rows.chunk(len(self.weights), dim=1), self.weights, strict=True)])
        return out.reshape(*x.shape[:-1], -1)

    def _gemm(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if weight.dtype == torch.int8:
            k = weight.shape[1]
            weight = torch.nn.functional.pad(weight, (0, padded_k(k) - k))
            return dense_reference.int8_quant_scaled_mm(rows, weight, None, None, True, self.scale, rows.dtype)
        q, row_scale = moe_reference.quantize_fp8(rows, self.input_scale)
        return dense_reference.fp8_scaled_mm(q, weight, row_scale, self.scale, rows.dtype)


def all_reduce(partials: list[torch.Tensor]) -> torch.Tensor:
    """The ranks' outputs (the activation dtype) summed in float32 in rank order and rounded
    once, as vLLM-CPU's all-reduce of bfloat16 tensors does (for two ranks: a bfloat16
    addition); one rank: its output."""
    if len(partials) == 1:
        return partials[0]
    total = torch.zeros_like(partials[0], dtype=torch.float32)
    for partial in partials:
        total += partial.float()
    return total.to(partials[0].dtype)


def vllm_cpu_routing(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM-CPU 0.32's softmax top-k with renormalisation (fused_moe/router/cpu_router.py,
    `_softmax_topk`): torch.topk over the logits (unsorted; its order breaks ties), softmax
    over the chosen logits in their dtype. `moe.reference.route` differs on tied logits
    (lower expert first) and in rounding (float32 softmax over all experts), and the tiny
    model's bfloat16 router logits do tie."""
    logits, ids = torch.topk(router_logits, k=top_k, dim=-1, sorted=False)
    return torch.softmax(logits, dim=-1).to(torch.float32), ids.to(torch.int32)


class W8A8MoeBlock(torch.nn.Module):
    """Router logits (a bfloat16 Linear, as vLLM's GateLinear on the CPU) -> vLLM-CPU's
    routing -> int8_moe or fp8_moe. With `tensor_parallel` ranks, as vLLM shards the experts:
    each rank holds its slice of the intermediate size (its gate and up rows, its w2 columns),
    computes the whole layer on it (the intermediate activations quantized per rank) and the
    ranks' outputs are all-reduced."""

    def __init__(self, tensors: dict[str, torch.Tensor], prefix: str, num_experts: int, top_k: int,
                 tensor_parallel: int = 1) -> None:
        super().__init__()
        self.router = tensors[f"{prefix}.gate.weight"]
        self.top_k = top_k
        self.tensor_parallel = tensor_parallel
        experts = [f"{prefix}.experts.{expert}" for expert in range(num_experts)]
        gate_up = [requantize_to_max_scale([QuantizedWeight.read(tensors, f"{expert}.{name}")
                                            for name in ("gate_proj", "up_proj")]) for expert in experts]
        down = [QuantizedWeight.read(tensors, f"{expert}.down_proj") for expert in experts]
        self.w13 = torch.stack([torch.cat([gate.weight, up.weight]) for gate, up in gate_up])
        # per channel: the gate rows' scales, then the up rows'; per tensor: the one both share
        self.w13_scale = torch.stack([gate.scale if gate.scale.numel() == 1 else torch.cat([gate.scale, up.scale])
                                      for gate, up in gate_up])
        self.w2 = torch.stack([d.weight for d in down])
        self.w2_scale = torch.stack([d.scale for d in down])
        # static fp8: one input scale per GEMM stage, the largest of the layer's experts (as vLLM)
        self.input_scales = (_largest([shard.input_scale for pair in gate_up for shard in pair]),
                             _largest([d.input_scale for d in down]))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        rows = hidden.reshape(-1, hidden.shape[-1])
        weights, ids = vllm_cpu_routing(torch.nn.functional.linear(rows, self.router), self.top_k)
        return all_reduce([self._rank_output(rows, weights, ids, rank)
                           for rank in range(self.tensor_parallel)]).reshape(hidden.shape)

    def _rank_output(self, rows: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, rank: int) -> torch.Tensor:
        """The layer on rank `rank`'s slice of the intermediate size."""
        intermediate = self.w2.shape[2] // self.tensor_parallel
        columns = slice(rank * intermediate, (rank + 1) * intermediate)
        gate_up_rows = torch.cat([torch.arange(self.w2.shape[2])[columns],
                                  self.w2.shape[2] + torch.arange(self.w2.shape[2])[columns]])
        w13 = self.w13[:, gate_up_rows]
        w13_scale = self.w13_scale if self.w13_scale.shape[1] == 1 else self.w13_scale[:, gate_up_rows]
        w2 = self.w2[:, :, columns].contiguous()
        if w13.dtype == torch.int8:
            return moe_reference.int8_moe(rows, w13, w13_scale, w2, self.w2_scale, weights, ids)
        return moe_reference.fp8_moe(rows, w13, w13_scale, w2, self.w2_scale, weights, ids, *self.input_scales)


def _largest(scales: list[torch.Tensor | None]) -> torch.Tensor | None:
    """The largest of the static input scales ([1]), None when dynamic."""
    if scales[0] is None:
        return None
    return torch.stack(scales).max().reshape(1)


def add_rms_norm(norm: torch.nn.Module, x: torch.Tensor,
                 residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's rms_norm (residual None) / fused_add_rms_norm, native (vllm/ir/ops/layernorm.py):
    (the RMSNorm of x + residual summed in float32, the sum rounded to x's dtype: the stream)."""
    total = x.float() if residual is None else x.float() + residual.float()
    normalised = total * torch.rsqrt(total.pow(2).mean(dim=-1, keepdim=True) + norm.variance_epsilon)
    return normalised.to(x.dtype) * norm.weight, total.to(x.dtype)


def rope_cos_sin(config: Any, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's default-RoPE cache rows for positions 0..tokens-1: float32 angles, cos and sin
    [tokens, head_dim / 2] rounded to bfloat16."""
    assert config.rope_parameters["rope_type"] == "default", config.rope_parameters
    dim = config.head_dim
    inverse_frequencies = 1.0 / (config.rope_parameters["rope_theta"]
                                 ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    angles = torch.arange(tokens, dtype=torch.float)[:, None] * inverse_frequencies
    return angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """[tokens, heads, head_dim] rotated (neox halves) in float32, rounded once to x's dtype."""
    first, second = x.float().chunk(2, dim=-1)
    cos, sin = cos[:, None, :].float(), sin[:, None, :].float()
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1).to(x.dtype)


def vllm_cpu_attention(attention: Any, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """[tokens, H] -> [tokens, H]: transformers' Qwen3-MoE attention block's projections and
    q/k norms, causal attention over every token in float32 (grouped KV heads repeated)."""
    tokens, head_dim = hidden.shape[0], attention.head_dim
    query = apply_rope(attention.q_norm(attention.q_proj(hidden).view(tokens, -1, head_dim)), cos, sin)
    key = apply_rope(attention.k_norm(attention.k_proj(hidden).view(tokens, -1, head_dim)), cos, sin)
    value = attention.v_proj(hidden).view(tokens, -1, head_dim)
    groups = query.shape[1] // key.shape[1]
    query, key, value = (x.float().transpose(0, 1) for x in (query, key, value))
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(groups, dim=0), value.repeat_interleave(groups, dim=0), is_causal=True,
        scale=attention.scaling)
    return attention.o_proj(out.transpose(0, 1).reshape(tokens, -1).to(hidden.dtype))


def vllm_cpu_logits(model: Any, token_ids: list[int]) -> torch.Tensor:
    """The prompt's logits [tokens, vocab] (no cache), with vLLM-CPU's roundings (module docstring)."""
    inner = model.model
    hidden = inner.embed_tokens(torch.tensor(token_ids))
    cos, sin = rope_cos_sin(model.config, len(token_ids))
    residual = None
    for layer in inner.layers:
        normed, residual = add_rms_norm(layer.input_layernorm, hidden, residual)
        hidden = vllm_cpu_attention(layer.self_attn, normed, cos, sin)
        normed, residual = add_rms_norm(layer.post_attention_layernorm, hidden, residual)
        hidden = layer.mlp(normed)
    normed, _ = add_rms_norm(inner.norm, hidden, residual)
    return model.lm_head(normed)


def load_model(checkpoint: Path, tensor_parallel: int = 1) -> Any:
    """transformers' Qwen3-MoE with the checkpoint's tensors and W8A8 layers, the row-parallel
    ones (o_proj, the experts' w2) split as vLLM splits them at `tensor_parallel`."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig.from_pretrained(checkpoint)
    config.quantization_config = None
    assert config.norm_topk_prob, "the plain-torch MoE block renormalises the top-k weights"
    model = Qwen3MoeForCausalLM(config).to(torch.bfloat16).eval()
    tensors = load_file(checkpoint / "model.safetensors")
    unquantized = {name: tensor for name, tensor in tensors.items() if tensor.dtype == torch.bfloat16}
    model.load_state_dict(unquantized, strict=False)  # embeddings, norms, lm_head (routers: below)
    for index, layer in enumerate(model.model.layers):
        prefix = f"model.layers.{index}"
        qkv = requantize_to_max_scale([QuantizedWeight.read(tensors, f"{prefix}.self_attn.{name}")
                                       for name in QKV_PROJECTIONS])
        for name, quantized in zip(QKV_PROJECTIONS, qkv):
            setattr(layer.self_attn, name, W8A8Linear(quantized))
        layer.self_attn.o_proj = W8A8Linear(QuantizedWeight.read(tensors, f"{prefix}.self_attn.o_proj"),
                                            tensor_parallel)
        layer.mlp = W8A8MoeBlock(tensors, f"{prefix}.mlp", config.num_experts, config.num_experts_per_tok,
                                 tensor_parallel)
    return model


def greedy_run(checkpoint: Path, prompts: list[str], max_tokens: int, top_logprobs: int,
               tensor_parallel: int = 1) -> dict[str, Any]:
    """Greedy tokens and top logprobs per step, as an engine run at `tensor_parallel` reports them."""
    from transformers import AutoTokenizer

    model = load_model(checkpoint, tensor_parallel)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    outputs = []
    with torch.no_grad():
        for prompt in prompts:
            prompt_ids = tokenizer(prompt)["input_ids"]
            ids, steps = list(prompt_ids), []
            for _ in range(max_tokens):
                logits = vllm_cpu_logits(model, ids)[-1].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                top = torch.topk(logprobs, top_logprobs)
                steps.append({str(token): float(value) for value, token in zip(top.values, top.indices.tolist())})
                ids.append(int(torch.argmax(logits)))
            outputs.append({"prompt": prompt, "prompt_token_ids": prompt_ids, "token_ids": ids[len(prompt_ids):],
                            "logprobs": steps})
    return {"outputs": outputs}
