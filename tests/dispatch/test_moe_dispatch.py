"""The grouped expert GEMM in the performance model (`perf_model.predict_grouped`) and the MoE
dispatch (`dispatch.pick_moe_config`), which moe/hip_backend.grouped_gemm asks for its tile.
Predictions only: nothing here is a measurement."""

from __future__ import annotations

import pytest
import torch

from vllm_rdna_w8a8 import dispatch
from vllm_rdna_w8a8.dispatch import perf_model
from vllm_rdna_w8a8.dispatch.model_shapes import KNOWN_MOE_MODELS, RoutedLoad
from vllm_rdna_w8a8.dispatch.tile_configs import load_tile_configs
from vllm_rdna_w8a8.tune import generate_tables

# Qwen3-30B-A3B's w13 expert weight at TP 1 (128 experts, top-8).
N, K = 1536, 2048


@pytest.fixture(scope="module")
def configs_by_tag() -> dict[str, dispatch.TileConfig]:
    return {config.tag: config for config in load_tile_configs()}


@pytest.mark.parametrize("target", ["gfx1100", "gfx1151"])
@pytest.mark.parametrize("active_experts", [8, 64, 128])
def test_grouped_launch_reads_the_weights_of_every_active_expert(target: str, active_experts: int) -> None:
    """Decode (one row per expert): whatever the tile, the launch reads active_experts x N x K weight
    bytes, so no prediction may beat that many bytes at the paper DRAM bandwidth (charging one
    expert's weights would predict ~1/active_experts of it)."""
    weight_floor_us = active_experts * N * K / perf_model.dram_bytes_per_s(target) * 1e6
    for config in load_tile_configs():
        prediction = perf_model.predict_grouped(target, config, active_experts, 1, N, K, "i8_moe")
        assert prediction is not None and prediction.time_us >= weight_floor_us, (config.tag, prediction)


def test_one_expert_is_the_dense_gemm_but_for_the_moe_kernels_loop(configs_by_tag: dict) -> None:
    """With one active expert the grouped launch is the dense [t, N, K] GEMM: same bytes, tiles,
    padding and DRAM and L2 terms; only the compiled main loop (the MoE kernel's) may differ."""
    for tag in ("m16n16k512_w1x1x4", "m64n64k64_w2x2x1", "m128n128k64_w2x2x1"):
        for tokens in (1, 40, 300):
            grouped = perf_model.predict_grouped("gfx1151", configs_by_tag[tag], 1, tokens, N, K, "i8_moe")
            dense = perf_model.predict("gfx1151", configs_by_tag[tag], tokens, N, K, "i8")
            assert (grouped.tiles, grouped.padding_waste) == (dense.tiles, dense.padding_waste)
            assert grouped.dram_us == pytest.approx(dense.dram_us) and grouped.l2_us == pytest.approx(dense.l2_us)
            assert grouped.issue_source == "isa_mix"  # the w8a8_i8_moe_* loop from main_loop_mix.json


def test_each_experts_rows_are_padded_to_block_m(configs_by_tag: dict) -> None:
    """8 experts with 3 rows each on a 64-row tile: 8 row blocks (not the one block 24 rows of a
    single GEMM would fill), each 3/64 useful, x 24 column tiles."""
    config = configs_by_tag["m64n64k64_w2x2x1"]
    prediction = perf_model.predict_grouped("gfx1151", config, 8, 3, N, K, "i8_moe")
    assert prediction.tiles == 8 * 1 * (N // 64)
    assert prediction.padding_waste == pytest.approx(1 - 3 / 64)
    # More experts at the same rows per expert: a larger grid, and never a shorter launch.
    wider = perf_model.predict_grouped("gfx1151", config, 64, 3, N, K, "i8_moe")
    assert wider.tiles == 8 * prediction.tiles and wider.time_us >= prediction.time_us


def test_grouped_rereads_are_per_expert(configs_by_tag: dict) -> None:
    """A 16-row decode tile reads an expert's weights once per 16 of its rows: 8 experts with 32
    rows each read each expert's [N, K] once again, 8 x N x K bytes, none more."""
    config = configs_by_tag["m16n16k512_w1x1x4"]
    charges = perf_model.reread_bytes("gfx1151", config, 32, N, K, experts=8)
    a_again = (N // 16 - 1) * 8 * 32 * K
    assert sum(charges.values()) == pytest.approx(8 * N * K + a_again)


def test_the_grouped_models_pick_changes_with_tokens_per_expert() -> None:
    configs = load_tile_configs()
    for target in ("gfx1100", "gfx1151"):
        for kind in ("i8_moe", "f8_moe"):
            decode = perf_model.rank_grouped_configs(target, configs, 8, 1, N, K, kind)[0].config
            prefill = perf_model.rank_grouped_configs(target, configs, 128, 256, N, K, kind)[0].config
            assert decode.is_decode and not prefill.is_decode, (target, kind, decode.tag, prefill.tag)


def test_pick_moe_config_is_keyed_by_tokens_per_expert() -> None:
    """64 tokens of top-8: over 128 experts about 5 rows per expert (a decode tile), over 8
    experts 64 rows each (a prefill tile): same N, K and token count, different picks."""
    dispatch.clear_dispatch_caches()
    assert dispatch.pick_moe_config("gfx1151", 1, 8, 128, N, K).is_decode
    assert not dispatch.pick_moe_config("gfx1151", 4096, 8, 128, N, K).is_decode
    assert dispatch.pick_moe_config("gfx1151", 64, 8, 128, N, K).is_decode
    assert not dispatch.pick_moe_config("gfx1151", 64, 8, 8, N, K).is_decode
    # A shape no table holds: the grouped model decides, on the expected load.
    chosen = dispatch.pick_moe_config("gfx1151", 64, 8, 128, 320, 640, "f8")
    load = RoutedLoad(126, 5)
    assert chosen == perf_model.rank_grouped_configs("gfx1151", load_tile_configs(), load.active_experts,
                                                     load.tokens_per_expert, 320, 640, "f8_moe")[0].config


@pytest.mark.parametrize(("arguments", "error", "message"), [
    (("gfx1151", 0, 8, 128, N, K), ValueError, "tokens must be >= 1"),
    (("gfx1151", 1, 8, 128, N, 2.5), TypeError, "K must be an int"),
    (("gfx1151", 1, 8, 4, N, K), ValueError, "experts_per_token=8 exceeds num_experts=4"),
    (("gfx1151", 1, 8, 128, N, K, "i8q"), ValueError, "kind must be one of"),
])
def test_pick_moe_config_names_bad_arguments(arguments: tuple, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        dispatch.pick_moe_config(*arguments)


def test_moe_bucket_load_of_qwen3_30b() -> None:
    """Bucket 1 stands for up to 2 tokens (16 slots over 16 experts; 3 tokens put 24 slots on
    round(22.5) = 22 experts: 2 rows each); bucket 8 for all 128 experts."""
    qwen = KNOWN_MOE_MODELS["Qwen/Qwen3-30B-A3B"]
    assert generate_tables.moe_bucket_load(qwen, 1) == RoutedLoad(16, 1)
    assert generate_tables.moe_bucket_load(qwen, 8) == RoutedLoad(128, 8)


def test_grouped_gemm_launches_the_kernel_pick_moe_config_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """moe/hip_backend.grouped_gemm asks pick_moe_config with the launch's token count, top-k,
    experts, N and K_pad, and launches that config's kernel over its row blocks."""
    from vllm_rdna_w8a8.moe import hip_backend as moe_hip

    configs = {config.tag: config for config in load_tile_configs()}
    forced = configs["m64n64k64_w2x2x1"]
    asked: list[tuple] = []
    launched: list[tuple] = []

    class RecordingKernel:
        def __init__(self, name: str) -> None:
            self.name = name

        def launch_values(self, grid: tuple, block: tuple, *_: object) -> None:
            launched.append((self.name, grid, block))

    def pick(*arguments: object) -> dispatch.TileConfig:
        asked.append(arguments)
        return forced

    monkeypatch.setattr(moe_hip, "pick_moe_config", pick)
    monkeypatch.setattr(moe_hip, "_device_and_stream", lambda tensor: (0, 0))
    monkeypatch.setattr(moe_hip, "_target", lambda device_index: "gfx1151")
    monkeypatch.setattr(moe_hip, "_kernel", lambda device_index, name: RecordingKernel(name))
    experts, n, k, tokens, top_k = 4, 32, 48, 5, 2
    weight = moe_hip.store_expert_weight(torch.ones(experts, n, k, dtype=torch.int8))
    topk_ids = torch.tensor([[0, 1], [1, 2], [3, 0], [2, 3], [0, 2]], dtype=torch.int32)
    moe_hip.grouped_gemm(torch.ones(tokens, k, dtype=torch.int8), torch.ones(tokens), weight,
                         torch.ones(experts, n), topk_ids, top_k, torch.float16)
    assert asked == [("gfx1151", tokens, top_k, experts, n, k, "i8")]
    blocks = (tokens * top_k + experts * (forced.block_m - 1)) // forced.block_m
    assert launched == [(f"w8a8_i8_moe_f16_gemm_{forced.tag}", (blocks * -(-n // forced.block_n), 1, 1),
                         (forced.threads, 1, 1))]
