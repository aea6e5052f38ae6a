"""The linear-layer GEMM shapes of decoder models under tensor parallelism.

A W8A8 linear computes out[M, N] = x[M, K] @ W[N, K]^T. Per decoder layer vLLM has
four: qkv_proj and gate_up_proj (fused, column-parallel: N is sharded) and o_proj and
down_proj (row-parallel: K is sharded). Sharding follows vLLM's QKVParallelLinear:
query heads split over the ranks; KV heads split too, or are replicated (one per
rank) when there are fewer KV heads than ranks.
"""

from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class ModelDims:
    """The config.json values that fix a decoder's linear shapes."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int


@dataclass(frozen=True)
class LinearShape:
    layer: str  # qkv_proj, o_proj, gate_up_proj, down_proj
    n: int
    k: int


# From each model's public config.json on the Hugging Face hub (hidden_size,
# intermediate_size, num_attention_heads, num_key_value_heads, head_dim or
# hidden_size / num_attention_heads).
KNOWN_MODELS: dict[str, ModelDims] = {
    dims.name: dims
    for dims in (
        ModelDims("meta-llama/Meta-Llama-3-8B", 4096, 14336, 32, 8, 128),
        ModelDims("meta-llama/Meta-Llama-3-70B", 8192, 28672, 64, 8, 128),
        ModelDims("Qwen/Qwen2.5-7B", 3584, 18944, 28, 4, 128),
        ModelDims("Qwen/Qwen2.5-14B", 5120, 13824, 40, 8, 128),
        ModelDims("Qwen/Qwen2.5-32B", 5120, 27648, 40, 8, 128),
        ModelDims("mistralai/Mistral-7B-v0.3", 4096, 14336, 32, 8, 128),
        ModelDims("google/gemma-2-9b", 3584, 14336, 16, 8, 256),
        ModelDims("microsoft/Phi-3-mini-4k-instruct", 3072, 8192, 32, 32, 96),
    )
}
TABLE_TP_SIZES = (1, 2, 4)


def _short_name(name: str) -> str:
    return name.rsplit("/", 1)[-1].lower()


def _positive_int(config: Mapping[str, Any], key: str, name: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {key} must be a positive integer, got {reprlib.repr(value)}")
    return value


def dims_from_config(config: Mapping[str, Any], name: str) -> ModelDims:
    """ModelDims from a Hugging Face config.json mapping (text_config for multimodal models).
    Every value is checked before it is used; optional keys (num_key_value_heads, head_dim)
    may be absent or null."""
    if isinstance(config.get("text_config"), Mapping) and "hidden_size" not in config:
        config = config["text_config"]
    missing = [key for key in ("hidden_size", "intermediate_size", "num_attention_heads") if key not in config]
    if missing:
        raise ValueError(f"{name}: config has no {', '.join(missing)}; is it a decoder model's config.json?")
    hidden, heads = _positive_int(config, "hidden_size", name), _positive_int(config, "num_attention_heads", name)
    if config.get("head_dim") is None and hidden % heads:
        raise ValueError(f"{name}: hidden_size={hidden} is not a multiple of num_attention_heads={heads} "
                         f"and the config gives no head_dim")
    return ModelDims(
        name, hidden, _positive_int(config, "intermediate_size", name), heads,
        heads if config.get("num_key_value_heads") is None else _positive_int(config, "num_key_value_heads", name),
        hidden // heads if config.get("head_dim") is None else _positive_int(config, "head_dim", name),
    )


def resolve_model(spec: str) -> ModelDims:
    """A known model (full or short name, e.g. 'Meta-Llama-3-8B'), a config.json, or a
    directory holding one."""
    for dims in KNOWN_MODELS.values():
        if spec.lower() in (dims.name.lower(), _short_name(dims.name)):
            return dims
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_bytes().decode("utf-8"))
        except RecursionError:
            raise ValueError(f"cannot read model config {path}: JSON nested too deeply") from None
        except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
            raise ValueError(f"cannot read model config {path}: {error}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path}: a config.json must hold a JSON object")
        return dims_from_config(config, str(path))
    known = ", ".join(_short_name(name) for name in KNOWN_MODELS)
    raise ValueError(f"model {spec!r} is neither a known model ({known}) nor a config.json or a directory with one")


def linear_shapes(dims: ModelDims, tp: int) -> list[LinearShape]:
    """The four linear GEMM shapes of one rank at tensor-parallel size `tp`."""
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ValueError(f"tensor-parallel size must be a positive int, got {tp!r}")
    for what, count in (("num_attention_heads", dims.num_attention_heads),
                        ("intermediate_size", dims.intermediate_size)):
        if count % tp:
            raise ValueError(f"{dims.name}: {what}={count} is not divisible by tp={tp}")
    kv = dims.num_key_value_heads
    if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
        raise ValueError(f"{dims.name}: num_key_value_heads={kv} can be neither split nor replicated over tp={tp}")
    q_heads = dims.num_attention_heads // tp
    kv_heads = max(1, kv // tp)
    return [
        LinearShape("qkv_proj", (q_heads + 2 * kv_heads) * dims.head_dim, dims.hidden_size),
        LinearShape("o_proj", dims.hidden_size, q_heads * dims.head_dim),
        LinearShape("gate_up_proj", 2 * dims.intermediate_size // tp, dims.hidden_size),
        LinearShape("down_proj", dims.hidden_size, dims.intermediate_size // tp),
    ]


@dataclass(frozen=True)
class MoeDims:
    """The config.json values that fix a mixture-of-experts layer's expert GEMM shapes."""

    name: str
    hidden_size: int
    moe_intermediate_size: int  # one expert's intermediate size
    num_experts: int
    experts_per_token: int  # top-k (routed experts per token)
    # A shared expert every token passes through (Qwen2-MoE style): a dense MLP on the dense
    # kernels, not part of the grouped launch; 0 where the model has none.
    shared_expert_intermediate_size: int = 0


# Sources (text of public config.json files and model cards, found with the project's search
# tool; not downloaded from the hub):
# - Qwen/Qwen3-30B-A3B: num_experts 128 and 8 activated from its model card (mirrored as
#   unsloth/Qwen3-30B-A3B-bnb-4bit); hidden_size 2048, moe_intermediate_size 768, num_experts 128,
#   num_experts_per_tok 8 in the config.json of Qwen3-Coder-30B-A3B (same qwen3_moe architecture;
#   huggingface.co/RTP-LLM/Qwen3-Coder-30B-A3B-Instruct-RTPurbo) and in MindSpeed-RL's
#   qwen3_30b_a3b.yaml (hidden_size 2048, moe_ffn_hidden_size 768, num_experts 128, topk 8).
#   The exact config.json of Qwen/Qwen3-30B-A3B itself was not among the stored pages.
# - mistralai/Mixtral-8x7B-Instruct-v0.1 config.json (training configs of the base v0.1 give the
#   same values): hidden_size 4096, intermediate_size 14336 (per expert), num_local_experts 8,
#   num_experts_per_tok 2.
# - openai/gpt-oss-20b config.json: hidden_size 2880, intermediate_size 2880 (per expert),
#   num_local_experts 32, num_experts_per_tok 4 (the checkpoint stores experts in MXFP4; a W8A8
#   version has these shapes). Its w13 rows interleave gate and up and carry a bias.
# - Qwen/Qwen3.6-35B-A3B: its config.json text was NOT found (searched the stored pages and code
#   for `moe_intermediate_size` / `shared_expert_intermediate_size` with the model's name). The
#   values come from its model card text as mirrored by third parties that agree with each other
#   (MERA's submission page quoting the card, chaobro.com, nebelwolfi.xyz): hidden dimension 2048,
#   40 layers (10 x (3 x (Gated DeltaNet -> MoE) + 1 x (Gated Attention -> MoE))), 256 experts,
#   8 routed + 1 shared expert activated, expert intermediate dimension 512; and from radixark's
#   miles recipe for it (--moe-shared-expert-intermediate-size 512). Its attention (Gated DeltaNet
#   and gated attention) has no ModelDims form here, so only its MLP shapes are in the tables.
KNOWN_MOE_MODELS: dict[str, MoeDims] = {
    dims.name: dims
    for dims in (
        MoeDims("Qwen/Qwen3-30B-A3B", 2048, 768, 128, 8),
        MoeDims("mistralai/Mixtral-8x7B-v0.1", 4096, 14336, 8, 2),
        MoeDims("openai/gpt-oss-20b", 2880, 2880, 32, 4),
        MoeDims("Qwen/Qwen3.6-35B-A3B", 2048, 512, 256, 8, shared_expert_intermediate_size=512),
    )
}
MOE_TABLE_TP_SIZES = (1, 2)


def resolve_moe_model(spec: str) -> MoeDims:
    """A known MoE model by full or short name (e.g. 'Qwen3-30B-A3B')."""
    for dims in KNOWN_MOE_MODELS.values():
        if spec.lower() in (dims.name.lower(), _short_name(dims.name)):
            return dims
    known = ", ".join(_short_name(name) for name in KNOWN_MOE_MODELS)
    raise ValueError(f"model {spec!r} is not a known MoE model ({known})")


def expert_shapes(dims: MoeDims, tp: int) -> list[LinearShape]:
    """One expert's GEMM shapes on one rank at tensor-parallel size `tp`, as vLLM's FusedMoE
    shards them (every rank holds every expert, the intermediate size split over the ranks):
    w13, gate and up fused ([2I/tp, H]), and w2 ([H, I/tp])."""
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ValueError(f"tensor-parallel size must be a positive int, got {tp!r}")
    if dims.moe_intermediate_size % tp:
        raise ValueError(f"{dims.name}: moe_intermediate_size={dims.moe_intermediate_size} is not divisible by tp={tp}")
    per_rank = dims.moe_intermediate_size // tp
    return [LinearShape("experts.w13", 2 * per_rank, dims.hidden_size),
            LinearShape("experts.w2", dims.hidden_size, per_rank)]


def shared_expert_shapes(dims: MoeDims, tp: int) -> list[LinearShape]:
    """The shared expert's dense GEMM shapes on one rank (vLLM builds it as a dense MLP:
    gate_up column-parallel [2S/tp, H], down row-parallel [H, S/tp]); [] without one."""
    size = dims.shared_expert_intermediate_size
    if not size:
        return []
    if size % tp:
        raise ValueError(f"{dims.name}: shared_expert_intermediate_size={size} is not divisible by tp={tp}")
    return [LinearShape("shared_expert.gate_up_proj", 2 * size // tp, dims.hidden_size),
            LinearShape("shared_expert.down_proj", dims.hidden_size, size // tp)]


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _expected_active(num_experts: int, experts_per_token: int, tokens: int) -> float:
    return num_experts * (1 - (1 - experts_per_token / num_experts) ** tokens)


def expected_active_experts(dims: MoeDims, tokens: int) -> float:
    """Experts that receive at least one of `tokens` tokens, expected under uniform routing:
    E (1 - (1 - k/E)^T). An assumption about the router, not a property of the model."""
    _check_positive("token count", tokens)
    return _expected_active(dims.num_experts, dims.experts_per_token, tokens)


@dataclass(frozen=True)
class RoutedLoad:
    """The work of one grouped expert GEMM launch as the dispatch sees it before the routing is
    read: `active_experts` experts with `tokens_per_expert` rows each."""

    active_experts: int
    tokens_per_expert: int


def routed_load(num_experts: int, experts_per_token: int, tokens: int) -> RoutedLoad:
    """The launch of `tokens` tokens, each routed to `experts_per_token` of `num_experts` experts,
    under uniform routing (`expected_active_experts`, rounded to whole experts): the slots
    T x top_k spread evenly over the active experts, rounded up. The dispatch keys its MoE pick
    by `tokens_per_expert` (a grouped launch knows T, top_k and E, not the routing: reading
    the routing back would synchronise with the GPU)."""
    for name, value in (("num_experts", num_experts), ("experts_per_token", experts_per_token),
                        ("token count", tokens)):
        _check_positive(name, value)
    if experts_per_token > num_experts:
        raise ValueError(f"experts_per_token={experts_per_token} exceeds num_experts={num_experts}")
    slots = tokens * experts_per_token
    active = min(num_experts, slots, max(1, round(_expected_active(num_experts, experts_per_token, tokens))))
    return RoutedLoad(active, -(-slots // active))


def table_shapes() -> list[tuple[int, int]]:
    """Every distinct (N, K) of the dense GEMMs: the known models' linear layers at TP 1, 2 and 4
    and the known MoE models' shared experts at TP 1 and 2 (the dense kinds' table keys)."""
    shapes = {(shape.n, shape.k) for dims in KNOWN_MODELS.values()
              for tp in TABLE_TP_SIZES for shape in linear_shapes(dims, tp)}
    shapes |= {(shape.n, shape.k) for dims in KNOWN_MOE_MODELS.values()
               for tp in MOE_TABLE_TP_SIZES for shape in shared_expert_shapes(dims, tp)}
    return sorted(shapes)


def moe_table_shapes() -> dict[tuple[int, int], MoeDims]:
    """Every distinct expert GEMM (N, K) of the known MoE models at TP 1 and 2 (the MoE kinds'
    table keys, M being the tokens per expert) with the model it comes from: its routing
    (E, top-k) fixes how many experts a launch at a given tokens per expert touches. Raises if
    two models with different routing share an (N, K): one table entry could not serve both."""
    shapes: dict[tuple[int, int], MoeDims] = {}
    for dims in KNOWN_MOE_MODELS.values():
        for tp in MOE_TABLE_TP_SIZES:
            for shape in expert_shapes(dims, tp):
                other = shapes.setdefault((shape.n, shape.k), dims)
                if (other.num_experts, other.experts_per_token) != (dims.num_experts, dims.experts_per_token):
                    raise ValueError(f"expert shape N={shape.n}, K={shape.k} of {dims.name} and {other.name} "
                                     f"has two routings; the MoE table keys cannot tell them apart")
    return dict(sorted(shapes.items()))
