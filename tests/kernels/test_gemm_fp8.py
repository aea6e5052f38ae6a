"""The fp8 GEMMs (`w8a8_f8_gemm_<tag>`: e4m3fn widened to f16 in registers, f16 WMMA, fp32
sums) against a float64 reference: within the output dtype's rounding plus the fp32
accumulation bound (K + 8) eps32 sum|a||b|. Every tile configuration with ±448 rows, subnormal
rows, a zero row, ragged shapes; the scale/bias variants (no zero point for fp8); the exact
e4m3fn -> f16 widening of all 256 bytes including the NaN encodings."""

from __future__ import annotations

import numpy as np
import pytest

from kernel_harness import (
    ALL_VARIANTS,
    E4M3FN_NAN_BYTES,
    GemmCase,
    Operands,
    RunLaunches,
    TileConfig,
    check_gemm_case,
    config_ids,
    decode_output,
    e4m3fn_values,
    scaled_gemm_case,
    tile_configs,
)

CONFIGS = tile_configs()
FP8_VARIANTS = [v for v in ALL_VARIANTS if v.zero_point == "none"]
SHAPES = [(1, 40, 80), (17, 72, 208), (65, 40, 48), (129, 136, 80)]
SLOW_M = [*range(1, 18), 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000]


def run_cases(run_launches: RunLaunches, cases_by_name: dict[str, GemmCase]) -> None:
    results = run_launches([case.launch for case in cases_by_name.values()])
    for (name, case), result in zip(cases_by_name.items(), results):
        check_gemm_case(case, result, name)


@pytest.mark.parametrize("config", CONFIGS, ids=config_ids(CONFIGS))
def test_fp8_config_shapes(run_launches: RunLaunches, config: TileConfig) -> None:
    rng = np.random.default_rng(31)
    cases = {f"{config.tag} M={m} N={n} K={k}":
             scaled_gemm_case(rng, "f8", config, m, n, k, FP8_VARIANTS[i % len(FP8_VARIANTS)])
             for i, (m, n, k) in enumerate(SHAPES)}
    run_cases(run_launches, cases)


def test_fp8_epilogue_variants(run_launches: RunLaunches) -> None:
    rng = np.random.default_rng(32)
    cases = {}
    for decode in (False, True):
        config = min((c for c in CONFIGS if c.is_decode == decode), key=lambda c: c.threads)
        for variant in FP8_VARIANTS:
            cases[f"{config.tag} {variant.id}"] = scaled_gemm_case(rng, "f8", config, 37, 40, 48,
                                                                   variant)
    run_cases(run_launches, cases)


def test_fp8_widening_is_exact_for_every_byte(run_launches: RunLaunches) -> None:
    """A = every e4m3fn byte (one per row, one non-zero k), B = 1.0 at that k, scales 1:
    C[m][n] must be the byte's value exactly (every e4m3fn value, subnormals and ±448
    included, is an fp16 value); the NaN encodings 0x7f / 0xff must give NaN."""
    config = min((c for c in CONFIGS if c.is_decode), key=lambda c: c.threads)
    m, n, k = 256, 16, 16
    a = np.zeros((m, k), dtype=np.uint8)
    a[:, 3] = np.arange(256)
    b = np.zeros((n, k), dtype=np.uint8)
    b[:, 3] = 0x38  # 1.0
    zeros = np.zeros((m, n))
    variant = next(v for v in FP8_VARIANTS if not v.bias and not v.bf16 and not v.per_token_a
                   and not v.per_channel_b)
    case = scaled_gemm_case(np.random.default_rng(33), "f8", config, m, n, k, variant,
                            Operands(a.view(np.int8), b.view(np.int8), zeros, zeros))
    case.launch.arrays["a_scale"][:] = 1.0
    case.launch.arrays["b_scale"][:] = 1.0
    out = decode_output(run_launches([case.launch])[0]["c"][:, :n], bf16=False)
    values = e4m3fn_values()
    nan_bytes = list(E4M3FN_NAN_BYTES)
    assert np.isnan(out[nan_bytes]).all(), "e4m3fn NaN (0x7f, 0xff) must reach the output as NaN"
    finite = np.setdiff1d(np.arange(256), nan_bytes)
    wrong = [int(byte) for byte in finite if not (out[byte] == values[byte]).all()]
    assert not wrong, (f"bytes widened wrongly: {[hex(byte) for byte in wrong[:8]]}, e.g. "
                       f"{hex(wrong[0])} gave {out[wrong[0], 0]!r}, expected {values[wrong[0]]!r}")


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=config_ids(CONFIGS))
def test_fp8_m_sweep(run_launches: RunLaunches, config: TileConfig) -> None:
    rng = np.random.default_rng(34)
    cases = {f"{config.tag} M={m}": scaled_gemm_case(rng, "f8", config, m, 48 + 8 * (m % 4),
                                                     32 + 16 * (m % 7), FP8_VARIANTS[m % 8])
             for m in SLOW_M}
    run_cases(run_launches, cases)
