from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build.targets import get_target
from vllm_rdna_w8a8.dispatch import perf_model
from vllm_rdna_w8a8.dispatch.tile_configs import TileConfig

PREFILL = TileConfig("m128n128k64_w2x2x1", 128, 128, 64, 2, 2, 1, "lds_double_buffer")
DECODE = TileConfig("m16n32k256_w1x1x4", 16, 32, 256, 1, 1, 4, "stream_weights")


def test_floors_hand_checked() -> None:
    floors = perf_model.floors("gfx1100", 1, 4096, 4096)
    assert floors.ops == 2 * 4096 * 4096
    assert floors.bytes == 4096 + 4096 * 4096 + 2 * 4096 + 4 * 4097
    assert floors.compute_us == pytest.approx(2 * 4096 * 4096 / (96 * 512 * 2.5e9) * 1e6)  # 0.273 us
    assert floors.memory_us == pytest.approx(floors.bytes / 960e9 * 1e6)  # 17.5 us
    assert floors.binding == "memory"
    assert perf_model.floors("gfx1100", 4096, 4096, 4096).binding == "compute"


def test_peak_rates_per_target() -> None:
    assert perf_model.peak_ops_per_s("gfx1100") == pytest.approx(122.88e12)  # 96 CUs x 512 x 2.5 GHz
    assert perf_model.peak_ops_per_s("gfx1103") == pytest.approx(12 * 512 * 2.7e9)
    assert perf_model.dram_bytes_per_s("gfx1151") == pytest.approx(256e9)


def test_assumed_occupancy_hand_checked() -> None:
    from vllm_rdna_w8a8.build.targets import get_target

    # 64x64 per wave: 128 accumulator + 2 x 4 x 8 operand + 32 = 224 VGPRs -> 240 allocated (granule 24)
    occupancy = perf_model.assumed_occupancy(get_target("gfx1100"), PREFILL)
    assert occupancy.waves_per_simd == 1536 // 240
    assert occupancy.lds_bytes == 2 * 256 * 80
    assert occupancy.global_bytes_per_wave_iteration == 256 * 64 // 4
    # 1024-VGPR file on gfx1102: 224 -> 224 allocated (granule 16) -> 4 waves
    assert perf_model.assumed_occupancy(get_target("gfx1102"), PREFILL).waves_per_simd == 4
    # LDS (40 KiB) admits one prefill workgroup per CU although VGPRs admit three
    assert perf_model.resident_workgroups_per_cu(occupancy, PREFILL) == 1


def test_compute_bound_prediction_hand_checked() -> None:
    # one 128x128 tile per CU of gfx1100, K = 6400: no padding, no wave quantization
    m, n, k = 128, 128 * 96, 6400
    prediction = perf_model.predict("gfx1100", PREFILL, m, n, k)
    mix = perf_model.shipped_main_loop_mixes()[("gfx1100", "w8a8_i8_gemm_m128n128k64_w2x2x1")]
    wmma_share = mix.wmma * 32 / (mix.wmma * 32 + mix.valu + mix.salu + mix.lds + mix.vmem)
    sustained = perf_model.ASSUMED_SUSTAINED_WMMA_FRACTION
    expected_compute_us = 2 * 128 * 128 * k / (512 * 2.5e9 * sustained * wmma_share) * 1e6  # 236.3 us
    assert prediction.tiles == 96
    assert prediction.padding_waste == 0
    assert prediction.compute_us == pytest.approx(expected_compute_us)
    dram_fraction = perf_model.ASSUMED_SUSTAINED_DRAM_FRACTION
    assert prediction.dram_us == pytest.approx(perf_model.gemm_bytes(m, n, k) / (960e9 * dram_fraction) * 1e6)
    assert prediction.l2_us == pytest.approx(256 * k / (64 * 2.5e9) * 1e6)
    assert prediction.bound == "compute" and prediction.time_us == prediction.compute_us
    # one more tile than CUs: the busiest CU runs two tiles, time doubles (wave quantization)
    assert perf_model.predict("gfx1100", PREFILL, m, n + 128, k).compute_us == pytest.approx(2 * expected_compute_us)


def test_latency_bound_decode_hand_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # 6 tiles on 96 CUs: 6 x 4 waves x 3072 bytes in flight cannot cover 960 GB/s x 500 ns
    # (the placeholder issue costs keep the compute term below it; the compiled loop ties it)
    monkeypatch.setattr(perf_model, "shipped_main_loop_mixes", lambda: {})
    m, n, k = 1, 32 * 6, 256
    prediction = perf_model.predict("gfx1100", DECODE, m, n, k)
    in_flight = 6 * 4 * (48 * 256 // 4)
    cover = in_flight / (960 * perf_model.ASSUMED_DRAM_LATENCY_NS)
    dram_fraction = perf_model.ASSUMED_SUSTAINED_DRAM_FRACTION
    assert prediction.dram_us == pytest.approx(perf_model.gemm_bytes(m, n, k) / (960e9 * dram_fraction * cover) * 1e6)
    assert prediction.bound == "dram"
    assert prediction.padding_waste == pytest.approx(15 / 16)  # M = 1 padded to 16 rows


def test_padding_counts_k_and_edges() -> None:
    prediction = perf_model.predict("gfx1100", PREFILL, 129, 128, 96)  # 2 M tiles, K padded to 128
    assert prediction.tiles == 2
    assert prediction.padding_waste == pytest.approx(1 - (129 * 128 * 96) / (2 * 128 * 128 * 128))


def test_fp8_costs_more_issue_time_than_int8() -> None:
    assert perf_model.wmma_issue_share(PREFILL, "f8") < perf_model.wmma_issue_share(PREFILL, "i8")


def test_rank_prefers_less_padding_among_ties() -> None:
    twin = TileConfig("m16n16k256_w1x1x4", 16, 16, 256, 1, 1, 4, "stream_weights")
    ranked = perf_model.rank_configs("gfx1100", [DECODE, twin], 1, 4096, 4096)
    assert {p.config.tag for p in ranked} == {DECODE.tag, twin.tag}
    # both sit on the DRAM floor; equal padding, so table order decides
    assert ranked[0].config == DECODE
    assert ranked[0].time_us == pytest.approx(ranked[1].time_us, rel=perf_model.TIE_TOLERANCE)


@pytest.mark.parametrize(("row_bytes", "pad"), [(4096, 128), (14336, 128), (2048, 128), (4224, 0), (4112, 0),
                                                (1024, 0)])
def test_cache_aliasing_pad_is_vllms_gfx11_rule(row_bytes: int, pad: int) -> None:
    """One 128-byte line on strides that are multiples of 2048 bytes (vLLM 0.33's
    cache_aliasing_pad_elems for one-byte elements), nothing elsewhere."""
    assert perf_model.cache_aliasing_pad(row_bytes) == pad


def test_aliased_weight_stride_costs_b_traffic() -> None:
    """By default B is on the padded stride our weights are stored with: no aliasing cost.
    An unpadded K = 4096 stride pays it on B's DRAM bytes (decode: DRAM bound) and on
    B's L2 bytes, and only there."""
    m, n, k = 1, 4096, 4096
    stored = perf_model.predict("gfx1100", DECODE, m, n, k)
    assert stored == perf_model.predict("gfx1100", DECODE, m, n, k, b_row_bytes=k + 128)
    aliased = perf_model.predict("gfx1100", DECODE, m, n, k, b_row_bytes=k)
    b_cost = 1 / perf_model.ASSUMED_ALIASED_B_BANDWIDTH_FRACTION
    total_bytes = perf_model.gemm_bytes(m, n, k)
    assert aliased.dram_us == pytest.approx(stored.dram_us * (total_bytes + (b_cost - 1) * n * k) / total_bytes)
    assert aliased.l2_us == pytest.approx(stored.l2_us * (DECODE.block_m + b_cost * DECODE.block_n)
                                          / (DECODE.block_m + DECODE.block_n))
    assert aliased.compute_us == stored.compute_us
    assert aliased.bound == stored.bound == "dram" and aliased.time_us > stored.time_us
    # K = 4100 -> 4112 does not alias: an unpadded stride costs nothing extra
    assert perf_model.predict("gfx1100", DECODE, m, n, 4112, b_row_bytes=4112) == \
        perf_model.predict("gfx1100", DECODE, m, n, 4112)
    with pytest.raises(ValueError, match="B's row stride must be an int >= K=4096 bytes, got 4000"):
        perf_model.predict("gfx1100", DECODE, m, n, k, b_row_bytes=4000)


def test_bad_shape_and_kind() -> None:
    with pytest.raises(ValueError, match="K must be >= 1"):
        perf_model.predict("gfx1100", PREFILL, 1, 1, 0)
    with pytest.raises(TypeError, match="M must be an int"):
        perf_model.predict("gfx1100", PREFILL, 1.5, 1, 16)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kernel kind"):
        perf_model.predict("gfx1100", PREFILL, 1, 16, 16, kind="i4")
    with pytest.raises(ValueError, match="unknown gfx11 target"):
        perf_model.floors("gfx942", 1, 16, 16)


HEAVY_LOOP = perf_model.MainLoopMix(wmma=8, valu=240, lds=16, vmem=16, scratch=0, salu=40, waits=8, hints=60)
LIGHT_LOOP = perf_model.MainLoopMix(wmma=8, valu=16, lds=0, vmem=16, scratch=0, salu=24, waits=4, hints=40)


def test_issue_share_from_the_compiled_loop_mix() -> None:
    """Per WMMA's 32 clocks: one clock per VALU, SALU, LDS and VMEM instruction; waits and
    scheduling hints are free."""
    assert perf_model.wmma_issue_share(DECODE, "i8", LIGHT_LOOP) == pytest.approx(8 * 32 / (8 * 32 + 16 + 24 + 16))
    assert perf_model.wmma_issue_share(DECODE, "i8", HEAVY_LOOP) == pytest.approx(8 * 32 / (8 * 32 + 240 + 40 + 32))


def test_predictions_read_the_shipped_mix(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel with a recorded mix is predicted from it (the fused launch from the costlier of
    its f16 and bf16 kernels); one without falls back to the fragment placeholders."""
    m, n, k = 16, 4096, 4096
    monkeypatch.setattr(perf_model, "shipped_main_loop_mixes", lambda: {})
    placeholder = perf_model.predict("gfx1100", DECODE, m, n, k, kind="i8q")
    assert placeholder.issue_source == "assumed"
    monkeypatch.setattr(perf_model, "shipped_main_loop_mixes", lambda: {
        ("gfx1100", DECODE.kernel_name("i8")): LIGHT_LOOP,
        ("gfx1100", DECODE.fused_kernel_name("f16")): LIGHT_LOOP,
        ("gfx1100", DECODE.fused_kernel_name("bf16")): HEAVY_LOOP})
    int8 = perf_model.predict("gfx1100", DECODE, m, n, k)
    fused = perf_model.predict("gfx1100", DECODE, m, n, k, kind="i8q")
    assert int8.issue_source == fused.issue_source == "isa_mix"
    share = perf_model.wmma_issue_share
    assert fused.compute_us / int8.compute_us == pytest.approx(share(DECODE, "i8", LIGHT_LOOP)
                                                               / share(DECODE, "i8", HEAVY_LOOP))
    assert fused.compute_us == pytest.approx(placeholder.compute_us * perf_model.wmma_issue_share(DECODE, "i8q")
                                             / share(DECODE, "i8q", HEAVY_LOOP))


def test_fused_launch_moves_fp16_rows_and_no_int8_round_trip() -> None:
    m, n, k = 1, 4096, 4096
    # the two-launch path writes and reads back the int8 rows and the per-token scales
    assert perf_model.two_launch_bytes(m, n, k) - perf_model.fused_gemm_bytes(m, n, k) == 2 * m * k + 8 * m
    assert perf_model.fused_gemm_bytes(m, n, k) - perf_model.gemm_bytes(m, n, k) == m * k - 4 * m
    fused = perf_model.predict("gfx1100", DECODE, m, n, k, kind="i8q")
    int8 = perf_model.predict("gfx1100", DECODE, m, n, k)
    assert fused.dram_us / int8.dram_us == pytest.approx(
        perf_model.fused_gemm_bytes(m, n, k) / perf_model.gemm_bytes(m, n, k))
    # the fused kernel's LDS: the decode tile's partial sums + per-row ranges and scales
    assert perf_model.assumed_occupancy(get_target("gfx1100"), DECODE, "i8q").lds_bytes == DECODE.fused_lds_bytes
    assert perf_model.predict("gfx1100", PREFILL, m, n, k, kind="i8q") is None  # no fused prefill kernel
    with pytest.raises(ValueError, match="fused decode launch serves M <= 16, got M=17"):
        perf_model.predict("gfx1100", DECODE, 17, n, k, kind="i8q")
    assert all(p.config.is_decode for p in perf_model.rank_configs("gfx1100", [PREFILL, DECODE], 1, n, k, "i8q"))


def test_bad_main_loop_mix_files_are_named() -> None:
    good = {"format_version": 1, "kernels": {"gfx1100": {"k": dict(vars(LIGHT_LOOP))}}}
    assert perf_model.parse_main_loop_mixes(good) == {("gfx1100", "k"): LIGHT_LOOP}
    with pytest.raises(ValueError, match="not a format 1 main-loop mix file"):
        perf_model.parse_main_loop_mixes({"format_version": 2})
    broken = {"format_version": 1, "kernels": {"gfx1100": {"k": {**vars(LIGHT_LOOP), "valu": -1}}}}
    with pytest.raises(ValueError, match="gfx1100 k: expected counts"):
        perf_model.parse_main_loop_mixes(broken)


def test_the_shipped_mix_file_covers_every_compiled_gemm() -> None:
    """Every kernel of the kernel table on every target has a recorded mix with WMMAs in its
    loop, so no shipped prediction falls back to the placeholders."""
    from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
    from vllm_rdna_w8a8.dispatch.tile_configs import FUSED_INPUT_DTYPES, KERNEL_KINDS, load_tile_configs

    mixes = perf_model.shipped_main_loop_mixes()
    for target in GFX11_TARGETS:
        for config in load_tile_configs():
            names = [config.kernel_name(kind) for kind in KERNEL_KINDS]
            if config.is_decode:
                names += [config.fused_kernel_name(dtype) for dtype in FUSED_INPUT_DTYPES]
            for name in names:
                assert mixes.get((target, name)) is not None and mixes[(target, name)].wmma > 0, (target, name)


def test_moe_expert_floors_hand_checked() -> None:
    """Qwen3-30B-A3B, TP 1, one decode token: 8 experts, each [1536, 2048] + [2048, 768]."""
    from vllm_rdna_w8a8.dispatch.model_shapes import KNOWN_MOE_MODELS

    qwen = KNOWN_MOE_MODELS["Qwen/Qwen3-30B-A3B"]
    one = perf_model.moe_expert_floors("gfx1151", qwen, 1, 1)
    weights = 8 * (1536 * 2048 + 4 * 1536 + 2048 * 768 + 4 * 2048)
    rows = 8 * (2048 + 4 + 2 * 1536) + 8 * (768 + 4 + 2 * 2048)
    assert one.bytes == weights + rows
    assert one.ops == 2 * 8 * (1536 * 2048 + 2048 * 768)
    assert one.memory_us == pytest.approx((weights + rows) / 256e9 * 1e6)  # 147.8 us
    assert one.binding == "memory"
    prefill = perf_model.moe_expert_floors("gfx1151", qwen, 1, 4096)  # 256 tokens per expert
    assert prefill.binding == "compute"
    assert prefill.compute_us == pytest.approx(2 * 4096 * 8 * (1536 * 2048 + 2048 * 768) / (40 * 512 * 2.9e9) * 1e6)


def test_reread_charge_per_cache_level() -> None:
    """A 16-row streaming tile reads all of B once per 16 rows: at M = 32 once again. Those bytes
    are served by L2 when B fits it (gfx1100: 6 MiB), else by the Infinity Cache (96 MiB), else by
    DRAM; on gfx1103 (2 MiB L2, no Infinity Cache) by L2 or DRAM. A's re-reads (one per 32-column tile) have the
    rows of one tile group as working set, here 32 x 4096 bytes: L2."""
    m, k = 32, 4096
    for target, n, level in (("gfx1100", 1024, "l2"), ("gfx1100", 4096, "mall"), ("gfx1100", 28672, "dram"),
                             ("gfx1103", 256, "l2"), ("gfx1103", 1024, "dram")):
        charges = perf_model.reread_bytes(target, DECODE, m, n, k)
        a_again = (n // 32 - 1) * m * k
        expected = {name: 0.0 for name in perf_model.REREAD_LEVELS}
        expected[level] += n * k
        expected["l2"] += a_again
        assert charges == expected, (target, n)
    # the prefill tile reads B (16 MiB: Infinity Cache) once per 128 rows and A again per column
    # tile, whose working set is one tile group's 1024 rows x K (4 MiB: L2)
    charges = perf_model.reread_bytes("gfx1100", PREFILL, 4096, 4096, 4096)
    assert charges == {"l2": 31 * 4096 * 4096, "mall": 31 * 4096 * 4096, "dram": 0.0}
    assert perf_model.reread_level("gfx1151", 2 * 1024 * 1024) == "l2"
    assert perf_model.reread_level("gfx1151", 2 * 1024 * 1024 + 1) == "mall"
    assert perf_model.reread_level("gfx1151", 32 * 1024 * 1024 + 1) == "dram"


def test_rereads_beyond_l2_are_charged_in_the_dram_term(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same prediction with an L2 that holds everything differs only by the re-read bytes."""
    m, n, k = 256, 4096, 4096
    charged = perf_model.predict("gfx1100", DECODE, m, n, k)
    beyond = sum(perf_model.reread_bytes("gfx1100", DECODE, m, n, k)[level] for level in ("mall", "dram"))
    assert charged.reread_beyond_l2_bytes == beyond == 15 * n * k
    roomy = {name: dataclasses.replace(peaks, l2_bytes=2**40) for name, peaks in perf_model.DEVICE_PEAKS.items()}
    monkeypatch.setattr(perf_model, "DEVICE_PEAKS", roomy)
    free = perf_model.predict("gfx1100", DECODE, m, n, k)
    assert free.reread_beyond_l2_bytes == 0
    total = perf_model.gemm_bytes(m, n, k)
    assert charged.dram_us == pytest.approx(free.dram_us * (total + beyond) / total)
    assert charged.compute_us == free.compute_us and charged.l2_us == free.l2_us


def test_tile_group_matches_the_kernels_tile_order() -> None:
    gemm_h = (Path(__file__).resolve().parents[2] / "kernels" / "common" / "gemm.h").read_text()
    assert f"constexpr int kTileGroupM = {perf_model.TILE_GROUP_M};" in gemm_h


LLAMA3_8B_TP1 = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))


@pytest.mark.parametrize("target", sorted(perf_model.DEVICE_PEAKS))
def test_streaming_tiles_lose_prefill_when_the_weights_exceed_l2(target: str) -> None:
    """At prefill sizes a stream_weights tile streams B from beyond L2 once per 16 rows: the model
    must never predict it faster than the best prefill tile there (the shipped tables once picked
    m16n16k512 at M = 256 for 75 of 78 int8 shapes on gfx1100)."""
    from vllm_rdna_w8a8.dispatch.tile_configs import load_tile_configs

    configs = load_tile_configs()
    l2_bytes = perf_model.DEVICE_PEAKS[target].l2_bytes
    for kind in ("i8", "f8"):
        for n, k in LLAMA3_8B_TP1:
            assert n * k > l2_bytes
            for m in (256, 1024, 4096):
                ranked = perf_model.rank_configs(target, configs, m, n, k, kind)
                best_stream = min(p.time_us for p in ranked if p.config.is_decode)
                best_prefill = min(p.time_us for p in ranked if not p.config.is_decode)
                assert best_prefill < best_stream, (kind, m, n, k)
                assert not ranked[0].config.is_decode, (kind, m, n, k)
