"""A tiny Qwen3-MoE W8A8 int8 checkpoint run in plain torch, without vLLM: the baseline of
the MoE end-to-end tests (vLLM-CPU has no int8 MoE path on machines without AMX).

transformers' Qwen3-MoE holds the checkpoint's unquantized tensors (embeddings, norms, q/k
norms, lm_head, routers); its quantized layers are replaced by the int8 W8A8 math
read straight from the checkpoint's int8 weights and per-channel scales (compressed-tensors
[N, 1] or Quark [N]): the attention projections by `ops.reference.int8_quant_scaled_mm`
(dynamic per-token activations), each MoE block by `moe.reference.int8_moe`, routed as
vLLM-CPU's router does (`vllm_cpu_routing`). The forward around those layers
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
Greedy decoding; the result has the shape of an engine run's (tests/e2e/engine_runner.py)
so the same comparison helpers apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from vllm_rdna_w8a8.moe import reference as moe_reference
from vllm_rdna_w8a8.ops import reference as dense_reference
from vllm_rdna_w8a8.ops.validation import padded_k

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _int8_weight(tensors: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 [N, K], float32 scales [N]) of the quantized Linear `name`."""
    weight, scale = tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"]
    assert weight.dtype == torch.int8, f"{name} is not int8 ({weight.dtype})"
    return weight, scale.float().reshape(-1)


class Int8Linear(torch.nn.Module):
    """y = the W8A8 int8 GEMM of x quantized per token with the int8 weight."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        k = weight.shape[1]
        self.weight = torch.nn.functional.pad(weight, (0, padded_k(k) - k))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = dense_reference.int8_quant_scaled_mm(rows, self.weight, None, None, True, self.scale, x.dtype)
        return out.reshape(*x.shape[:-1], -1)


def vllm_cpu_routing(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM-CPU 0.32's softmax top-k with renormalisation (fused_moe/router/cpu_router.py,
    `_softmax_topk`): torch.topk over the logits (unsorted; its order breaks ties), softmax
    over the chosen logits in their dtype. `moe.reference.route` differs on tied logits
    (lower expert first) and in rounding (float32 softmax over all experts), and the tiny
    model's bfloat16 router logits do tie."""
    logits, ids = torch.topk(router_logits, k=top_k, dim=-1, sorted=False)
    return torch.softmax(logits, dim=-1).to(torch.float32), ids.to(torch.int32)


class Int8MoeBlock(torch.nn.Module):
    """Router logits (a bfloat16 Linear, as vLLM's GateLinear on the CPU) -> vLLM-CPU's
    routing -> int8_moe."""

    def __init__(self, tensors: dict[str, torch.Tensor], prefix: str, num_experts: int, top_k: int) -> None:
        super().__init__()
        self.router = tensors[f"{prefix}.gate.weight"]
        self.top_k = top_k
        experts = [f"{prefix}.experts.{expert}" for expert in range(num_experts)]
        gate, up, down = ([_int8_weight(tensors, f"{expert}.{name}") for expert in experts]
                          for name in ("gate_proj", "up_proj", "down_proj"))
        self.w13 = torch.stack([torch.cat([g[0], u[0]]) for g, u in zip(gate, up)])
        self.w13_scale = torch.stack([torch.cat([g[1], u[1]]) for g, u in zip(gate, up)])
        self.w2 = torch.stack([d[0] for d in down])
        self.w2_scale = torch.stack([d[1] for d in down])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        rows = hidden.reshape(-1, hidden.shape[-1])
        weights, ids = vllm_cpu_routing(torch.nn.functional.linear(rows, self.router), self.top_k)
        out = moe_reference.int8_moe(rows, self.w13, self.w13_scale, self.w2, self.w2_scale, weights, ids)
        return out.reshape(hidden.shape)


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


def load_model(checkpoint: Path) -> Any:
    """transformers' Qwen3-MoE with the checkpoint's tensors and int8 layers."""
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
        for name in ATTENTION_PROJECTIONS:
            setattr(layer.self_attn, name, Int8Linear(*_int8_weight(tensors, f"{prefix}.self_attn.{name}")))
        layer.mlp = Int8MoeBlock(tensors, f"{prefix}.mlp", config.num_experts, config.num_experts_per_tok)
    return model


def greedy_run(checkpoint: Path, prompts: list[str], max_tokens: int, top_logprobs: int) -> dict[str, Any]:
    """Greedy tokens and top logprobs per step, as an engine run reports them."""
    from transformers import AutoTokenizer

    model = load_model(checkpoint)
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
