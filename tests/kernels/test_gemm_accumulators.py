"""Every tile configuration's main loop sums exactly the int32 products an int64 reference
gives, bit for bit (the accumulator probe stores the raw int32 sums; configs change speed,
never results). Ragged M/N/K, strided operands with junk past K, extreme int8 rows, long K,
partial tile groups; output poisoned so unwritten elements fail."""

from __future__ import annotations

import numpy as np
import pytest

from kernel_harness import (
    POISON_I32,
    RunLaunches,
    TileConfig,
    config_ids,
    gemm_reference_i64,
    int8_matrix,
    probe_launch,
    tile_configs,
    with_extreme_rows,
)

CONFIGS = tile_configs()
# (M, N, K): ragged against every tile (N, K not multiples of BLOCK_N / BLOCK_K).
FAST_SHAPES = [(1, 40, 80), (5, 24, 16), (16, 72, 208), (17, 40, 96), (33, 56, 144),
               (65, 40, 48), (129, 136, 80)]
# The full M sweep of the brief, N and K scaled down from real models for emulator speed.
SLOW_M = [*range(1, 18), 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000]
LONG_K_SHAPE = (17, 24, 4096 + 16)  # -128 * -128 over K = 4112: 67,371,008 in C[0][0]
# M tiles beyond two full groups of 8 (tile order groups 8 M tiles) with a partial last group.
GROUPED_SHAPE_TILES_M = 19


def run_and_check(run_launches: RunLaunches, config: TileConfig, shapes: list[tuple[int, int, int]],
                  seed: int, schedule: str = "forward") -> None:
    rng = np.random.default_rng(seed)
    launches, expected = [], []
    for m, n, k in shapes:
        lda, ldb, ldc = k + 32, k + 16, n + 3  # strided, junk past K, unwritten C padding
        a, b = int8_matrix(rng, m, k, lda), int8_matrix(rng, n, k, ldb)
        with_extreme_rows(a, b, k)
        launches.append(probe_launch(config, a, b, m, n, k, ldc))
        expected.append(gemm_reference_i64(a, b, k))
    for (m, n, k), result, reference in zip(shapes, run_launches(launches, schedule), expected):
        c = result["c"]
        assert np.abs(reference).max() < 2**31, "reference overflows int32: test shape too long"
        mismatches = np.argwhere(c[:, :n] != reference)
        if mismatches.size:
            first = tuple(int(i) for i in mismatches[0])
            pytest.fail(f"{config.tag} M={m} N={n} K={k}: {len(mismatches)} int32 sums differ "
                        f"from the int64 reference, first at {first}: got {c[first]}, "
                        f"expected {reference[first]}")
        assert (c[:, n:] == POISON_I32).all(), f"{config.tag} M={m} N={n}: wrote past N"


@pytest.mark.parametrize("schedule", ["forward", "reverse"])
@pytest.mark.parametrize("config", CONFIGS, ids=config_ids(CONFIGS))
def test_accumulators_exact(run_launches: RunLaunches, config: TileConfig, schedule: str) -> None:
    """Both thread orders between barriers: a missing barrier would show in one of them."""
    grouped = (GROUPED_SHAPE_TILES_M * config.block_m - 5, 2 * config.block_n + 8, 32)
    run_and_check(run_launches, config, [*FAST_SHAPES, LONG_K_SHAPE, grouped], seed=1,
                  schedule=schedule)


def test_extreme_rows_reach_int32_range(run_launches: RunLaunches) -> None:
    """-128 x -128 over the longest K that fits: C[0][0] = 2^14 * K close to 2^31."""
    decode = next(config for config in CONFIGS if config.is_decode)
    k = 131072 - 16  # 2^14 * K = 2,147,221,504 < 2^31
    run_and_check(run_launches, decode, [(2, 16, k)], seed=2)


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=config_ids(CONFIGS))
def test_accumulators_exact_m_sweep(run_launches: RunLaunches, config: TileConfig) -> None:
    shapes = [(m, 40 + 16 * (m % 3), 48 + 16 * (m % 5)) for m in SLOW_M]
    run_and_check(run_launches, config, shapes, seed=3)
