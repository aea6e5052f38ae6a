from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_rdna_w8a8.dispatch.model_shapes import (
    KNOWN_MODELS,
    KNOWN_MOE_MODELS,
    LinearShape,
    MoeDims,
    RoutedLoad,
    expected_active_experts,
    expert_shapes,
    linear_shapes,
    moe_table_shapes,
    resolve_model,
    routed_load,
    shared_expert_shapes,
    table_shapes,
)


def test_llama3_8b_shapes() -> None:
    dims = resolve_model("Meta-Llama-3-8B")
    assert linear_shapes(dims, 1) == [
        LinearShape("qkv_proj", 6144, 4096), LinearShape("o_proj", 4096, 4096),
        LinearShape("gate_up_proj", 28672, 4096), LinearShape("down_proj", 4096, 14336)]
    assert linear_shapes(dims, 2) == [
        LinearShape("qkv_proj", 3072, 4096), LinearShape("o_proj", 4096, 2048),
        LinearShape("gate_up_proj", 14336, 4096), LinearShape("down_proj", 4096, 7168)]


def test_head_dim_and_kv_sharding() -> None:
    gemma = linear_shapes(resolve_model("google/gemma-2-9b"), 1)
    assert gemma[0] == LinearShape("qkv_proj", (16 + 16) * 256, 3584)  # head_dim 256 != hidden / heads
    assert gemma[1] == LinearShape("o_proj", 3584, 4096)
    assert linear_shapes(resolve_model("Meta-Llama-3-70B"), 4)[0].n == (16 + 2 * 2) * 128


def test_kv_heads_replicated_when_fewer_than_ranks(tmp_path: Path) -> None:
    config = {"hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 16,
              "num_key_value_heads": 2}
    (tmp_path / "config.json").write_text(json.dumps(config))
    dims = resolve_model(str(tmp_path))
    assert dims.head_dim == 128
    assert linear_shapes(dims, 4)[0].n == (4 + 2 * 1) * 128


def test_every_table_shape_is_k_aligned() -> None:
    assert all(k % 16 == 0 for _, k in table_shapes())
    assert (6144, 4096) in table_shapes()
    assert len(KNOWN_MODELS) == 8


@pytest.mark.parametrize(
    ("spec", "tp", "message"),
    [
        ("Meta-Llama-3-8B", 3, "num_attention_heads=32 is not divisible by tp=3"),
        ("Meta-Llama-3-8B", 0, "positive int"),
        ("no-such-model", 1, "neither a known model"),
    ],
)
def test_bad_model_or_tp(spec: str, tp: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        linear_shapes(resolve_model(spec), tp)


def test_bad_config_files(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{broken")
    with pytest.raises(ValueError, match="cannot read model config"):
        resolve_model(str(path))
    path.write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ValueError, match="no intermediate_size, num_attention_heads"):
        resolve_model(str(path))
    path.write_text(json.dumps({"hidden_size": 64, "intermediate_size": -2, "num_attention_heads": 2}))
    with pytest.raises(ValueError, match="intermediate_size must be a positive integer"):
        resolve_model(str(path))


LLAMA_LIKE = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}
# Issue 11: each ended in ZeroDivisionError / TypeError / RecursionError.
MALFORMED_CONFIGS = {
    "zero attention heads": ({**LLAMA_LIKE, "num_attention_heads": 0},
                             "num_attention_heads must be a positive integer, got 0"),
    "string for a number": ({**LLAMA_LIKE, "num_attention_heads": "4"},
                            "num_attention_heads must be a positive integer, got '4'"),
    "string hidden size": ({**LLAMA_LIKE, "hidden_size": "64"}, "hidden_size must be a positive integer, got '64'"),
    "zero kv heads": ({**LLAMA_LIKE, "num_key_value_heads": 0}, "num_key_value_heads must be a positive integer"),
    "list head_dim": ({**LLAMA_LIKE, "head_dim": [16]}, r"head_dim must be a positive integer, got \[16\]"),
    "uneven heads": ({**LLAMA_LIKE, "num_attention_heads": 3},
                     "hidden_size=64 is not a multiple of num_attention_heads=3 and the config gives no head_dim"),
}


@pytest.mark.parametrize("problem", sorted(MALFORMED_CONFIGS))
def test_malformed_config_values_are_one_line_naming_the_field(tmp_path: Path, problem: str) -> None:
    config, message = MALFORMED_CONFIGS[problem]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"^{tmp_path / 'config.json'}: {message}"):
        resolve_model(str(tmp_path))


def test_deeply_nested_or_undecodable_config_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"hidden_size": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ValueError, match=f"cannot read model config {path}: JSON nested too deeply"):
        resolve_model(str(path))
    path.write_bytes(b'{"hidden_size": "\xff"}')
    with pytest.raises(ValueError, match=f"cannot read model config {path}: 'utf-8' codec can't decode"):
        resolve_model(str(path))


def test_null_optional_keys_take_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA_LIKE, "num_key_value_heads": None, "head_dim": None}))
    dims = resolve_model(str(path))
    assert (dims.num_key_value_heads, dims.head_dim) == (4, 16)


def test_moe_expert_shapes_shard_the_intermediate_size() -> None:
    qwen = KNOWN_MOE_MODELS["Qwen/Qwen3-30B-A3B"]
    assert expert_shapes(qwen, 1) == [LinearShape("experts.w13", 1536, 2048), LinearShape("experts.w2", 2048, 768)]
    assert expert_shapes(qwen, 2) == [LinearShape("experts.w13", 768, 2048), LinearShape("experts.w2", 2048, 384)]
    gpt_oss = KNOWN_MOE_MODELS["openai/gpt-oss-20b"]
    assert expert_shapes(gpt_oss, 2) == [LinearShape("experts.w13", 2880, 2880), LinearShape("experts.w2", 2880, 1440)]
    with pytest.raises(ValueError, match="moe_intermediate_size=768 is not divisible by tp=5"):
        expert_shapes(qwen, 5)
    # every expert shape is a MoE key of the shipped tables (M: the tokens per expert), with its
    # model's routing
    for dims in KNOWN_MOE_MODELS.values():
        for tp in (1, 2):
            for shape in expert_shapes(dims, tp):
                found = moe_table_shapes()[(shape.n, shape.k)]
                assert (found.num_experts, found.experts_per_token) == (dims.num_experts, dims.experts_per_token)


def test_qwen3_6_experts_and_shared_expert() -> None:
    """256 experts, top-8, expert intermediate 512, hidden 2048; the shared expert (intermediate
    512) is a dense MLP: its gate_up [1024, 2048] and down [2048, 512] are dense table keys."""
    qwen36 = KNOWN_MOE_MODELS["Qwen/Qwen3.6-35B-A3B"]
    assert (qwen36.hidden_size, qwen36.num_experts, qwen36.experts_per_token) == (2048, 256, 8)
    assert expert_shapes(qwen36, 1) == [LinearShape("experts.w13", 1024, 2048), LinearShape("experts.w2", 2048, 512)]
    assert shared_expert_shapes(qwen36, 1) == [LinearShape("shared_expert.gate_up_proj", 1024, 2048),
                                               LinearShape("shared_expert.down_proj", 2048, 512)]
    assert shared_expert_shapes(qwen36, 2) == [LinearShape("shared_expert.gate_up_proj", 512, 2048),
                                               LinearShape("shared_expert.down_proj", 2048, 256)]
    assert shared_expert_shapes(KNOWN_MOE_MODELS["Qwen/Qwen3-30B-A3B"], 1) == []
    for tp in (1, 2):
        assert {(s.n, s.k) for s in shared_expert_shapes(qwen36, tp)} <= set(table_shapes())


def test_moe_table_shapes_refuse_one_shape_with_two_routings(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm_rdna_w8a8.dispatch import model_shapes

    clash = MoeDims("clash", 2048, 768, 64, 4)  # Qwen3-30B-A3B's expert shapes, another routing
    monkeypatch.setitem(model_shapes.KNOWN_MOE_MODELS, clash.name, clash)
    with pytest.raises(ValueError, match="has two routings"):
        moe_table_shapes()


def test_routed_load_spreads_the_slots_over_the_expected_active_experts() -> None:
    assert routed_load(128, 8, 1) == RoutedLoad(8, 1)  # one token: its 8 experts, one row each
    assert routed_load(128, 8, 16) == RoutedLoad(82, 2)  # 128 slots over round(82.4) experts
    assert routed_load(128, 8, 4096) == RoutedLoad(128, 256)
    assert routed_load(8, 2, 1) == RoutedLoad(2, 1)
    for bad, message in (((128, 8, 0), "token count must be a positive int"),
                         ((4, 8, 1), "experts_per_token=8 exceeds num_experts=4"),
                         ((128, True, 1), "experts_per_token must be a positive int")):
        with pytest.raises(ValueError, match=message):
            routed_load(*bad)


def test_expected_active_experts_under_uniform_routing() -> None:
    qwen = KNOWN_MOE_MODELS["Qwen/Qwen3-30B-A3B"]
    assert expected_active_experts(qwen, 1) == pytest.approx(8)  # one token: its top-8
    assert expected_active_experts(qwen, 16) == pytest.approx(128 * (1 - (120 / 128) ** 16))  # 82.4
    assert expected_active_experts(qwen, 4096) == pytest.approx(128)
    with pytest.raises(ValueError, match="token count must be a positive int, got 0"):
        expected_active_experts(qwen, 0)
