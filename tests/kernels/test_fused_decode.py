"""The fused decode GEMMs `w8a8_i8q_{f16,bf16}_gemm_<tag>` bit for bit against the two launches
they replace (`w8a8_quant_i8_*`, then `w8a8_i8_gemm_<tag>` on its int8 rows, scales and zero
points), in the sanitized emulator: every decode tile config; dynamic and static, symmetric and
asymmetric; fp16 and bf16 in and out; per-tensor and per-channel weight scales; bias; K not a
multiple of 16 (the kernels need K % 8 == 0 and 16-byte aligned rows: the op checks); contiguous
and strided rows;
the quantization kernel's edge rows (zeros, NaN, inf, signed zeros, ...); a second M tile;
both thread orders of the emulator. Outputs poisoned before each launch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from kernel_harness import (
    GEMM_OUT_BF16,
    GEMM_PER_CHANNEL_B,
    GEMM_PER_TOKEN_A,
    POISON_F16_BITS,
    POISON_I32,
    POISON_I8,
    QUANT_ASYMMETRIC,
    QUANT_BLOCK,
    QUANT_STATIC,
    Launch,
    RunLaunches,
    TileConfig,
    encode_output,
    int8_matrix,
    int32,
    pointer,
    tile_configs,
    uint32,
)
from test_quant_int8 import make_rows

DECODE_CONFIGS = tuple(config for config in tile_configs() if config.is_decode)
FUSED_STATIC = 8
FUSED_ASYMMETRIC = 16
STATIC_SCALE = np.float32(0.05)
STATIC_AZP = 5
N = 40  # ragged against every decode tile's BLOCK_N


@dataclass(frozen=True)
class FusedCase:
    config: TileConfig
    bf16_in: bool
    static: bool
    asymmetric: bool
    k: int
    strided: bool
    per_channel_b: bool
    bias: bool
    bf16_out: bool
    m: int

    @property
    def id(self) -> str:
        return "-".join([
            self.config.tag, "bf16" if self.bf16_in else "fp16", "static" if self.static else "dynamic",
            "asym" if self.asymmetric else "sym", f"K{self.k}", "strided" if self.strided else "contiguous",
            "b_channel" if self.per_channel_b else "b_tensor", "bias" if self.bias else "nobias",
            "out_bf16" if self.bf16_out else "out_fp16", f"M{self.m}"])


def fused_cases() -> list[FusedCase]:
    """Every config x input dtype x quantization mode x K x row stride; the epilogue options
    rotate through them; M = 11 (one row per edge-row kind) or 20 (a second M tile)."""
    cases = []
    for index, (config, bf16_in, static, asymmetric, k, strided) in enumerate(
            (c, b, s, a, k, st) for c in DECODE_CONFIGS for b in (False, True) for s in (False, True)
            for a in (False, True) for k in (64, 40) for st in (True, False)):
        cases.append(FusedCase(config, bf16_in, static, asymmetric, k, strided,
                               per_channel_b=index % 2 == 0, bias=index % 3 != 0,
                               bf16_out=(index // 2) % 2 == 0, m=20 if index % 5 == 0 else 11))
    return cases


CASES = fused_cases()


@dataclass
class Inputs:
    x: np.ndarray        # [M, ldx] fp16/bf16 bits, junk past K
    b: np.ndarray        # [N, K_pad] int8, zeros past K (weight preparation pads with zeros)
    b_scale: np.ndarray
    azp_adj: np.ndarray | None
    bias: np.ndarray | None


def make_inputs(rng: np.random.Generator, case: FusedCase) -> Inputs:
    rows = make_rows(rng, case.k)
    rows = np.concatenate([rows] * (-(-case.m // rows.shape[0])))[:case.m]
    ldx = case.k + 8 if case.strided else case.k
    x = rng.integers(0, 2**16, size=(case.m, ldx), dtype=np.uint16)
    with np.errstate(over="ignore"):
        x[:, :case.k] = encode_output(rows, case.bf16_in)
    k_pad = -(-case.k // 16) * 16
    b = int8_matrix(rng, N, case.k, k_pad)
    b[:, case.k:] = 0
    b_scale = (rng.uniform(0.5, 2.0, N if case.per_channel_b else 1) * 2.0**-8).astype(np.float32)
    azp_adj = None
    if case.asymmetric:
        row_sums = b.astype(np.int64).sum(axis=1)
        azp_adj = (row_sums * (STATIC_AZP if case.static else 1)).astype(np.int32)
    bias = encode_output(rng.normal(0.0, 4.0, N).astype(np.float32), case.bf16_out) if case.bias else None
    return Inputs(x, b, b_scale, azp_adj, bias)


def gemm_flags(case: FusedCase) -> int:
    return ((GEMM_PER_CHANNEL_B if case.per_channel_b else 0)
            | (GEMM_OUT_BF16 if case.bf16_out else 0))


def output_arrays(case: FusedCase, inputs: Inputs) -> dict[str, np.ndarray]:
    arrays = {"b": inputs.b, "b_scale": inputs.b_scale,
              "c": np.full((case.m, N + 3), POISON_F16_BITS, dtype=np.uint16)}
    if inputs.azp_adj is not None:
        arrays["azp_adj"] = inputs.azp_adj
    if inputs.bias is not None:
        arrays["bias"] = inputs.bias
    return arrays


def fused_launch(case: FusedCase, inputs: Inputs) -> Launch:
    arrays = {"x": inputs.x, **output_arrays(case, inputs)}
    if case.static:
        arrays["x_scale"] = np.array([STATIC_SCALE], dtype=np.float32)
        if case.asymmetric:
            arrays["x_azp"] = np.array([STATIC_AZP], dtype=np.int32)
    flags = (gemm_flags(case) | (FUSED_STATIC if case.static else 0)
             | (FUSED_ASYMMETRIC if case.asymmetric else 0))
    dtype = "bf16" if case.bf16_in else "f16"
    return Launch(
        case.config.fused_kernel_name(dtype), case.config.grid(case.m, N), case.config.block(),
        [pointer("x"), pointer("b"), pointer("c"), pointer("x_scale" if case.static else None),
         pointer("x_azp" if case.static and case.asymmetric else None), pointer("b_scale"),
         pointer("azp_adj" if case.asymmetric else None), pointer("bias" if case.bias else None),
         int32(case.m), int32(N), int32(case.k), int32(inputs.x.shape[1]), int32(inputs.b.shape[1]),
         int32(N + 3), uint32(flags)],
        arrays)


def quant_launch(case: FusedCase, inputs: Inputs) -> Launch:
    """Launch 1 of 2: w8a8_quant_i8_* to the weight's padded K."""
    ldq = inputs.b.shape[1]
    arrays = {"x": inputs.x, "q": np.full((case.m, ldq), POISON_I8, dtype=np.int8)}
    if case.static:
        arrays["scale"] = np.array([STATIC_SCALE], dtype=np.float32)
        if case.asymmetric:
            arrays["azp"] = np.array([STATIC_AZP], dtype=np.int32)
    else:
        arrays["scale"] = np.full(case.m, np.nan, dtype=np.float32)
        if case.asymmetric:
            arrays["azp"] = np.full(case.m, POISON_I32, dtype=np.int32)
    flags = (QUANT_STATIC if case.static else 0) | (QUANT_ASYMMETRIC if case.asymmetric else 0)
    return Launch(
        "w8a8_quant_i8_bf16" if case.bf16_in else "w8a8_quant_i8_f16", (case.m, 1, 1), QUANT_BLOCK,
        [pointer("x"), pointer("q"), pointer("scale"), pointer("azp" if case.asymmetric else None),
         int32(case.m), int32(case.k), int32(inputs.x.shape[1]), int32(ldq), uint32(flags)],
        arrays)


def gemm_launch(case: FusedCase, inputs: Inputs, quantized: dict[str, np.ndarray]) -> Launch:
    """Launch 2 of 2: w8a8_i8_gemm_<tag> as the ops call it (a static zero point is folded
    into azp_adj, a dynamic one goes per token)."""
    arrays = {"a": quantized["q"], "a_scale": quantized["scale"], **output_arrays(case, inputs)}
    per_token_azp = case.asymmetric and not case.static
    if per_token_azp:
        arrays["azp"] = quantized["azp"]
    flags = gemm_flags(case) | (GEMM_PER_TOKEN_A if not case.static else 0)
    return Launch(
        case.config.kernel_name("i8"), case.config.grid(case.m, N), case.config.block(),
        [pointer("a"), pointer("b"), pointer("c"), pointer("a_scale"), pointer("b_scale"),
         pointer("azp" if per_token_azp else None), pointer("azp_adj" if case.asymmetric else None),
         pointer("bias" if case.bias else None), int32(case.m), int32(N), int32(inputs.b.shape[1]),
         int32(quantized["q"].shape[1]), int32(inputs.b.shape[1]), int32(N + 3), uint32(flags)],
        arrays)


@pytest.fixture(scope="module")
def outputs(run_launches: RunLaunches) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """case id -> (two-launch C, fused C, fused C in reverse thread order)."""
    rng = np.random.default_rng(13)
    inputs = {case.id: make_inputs(rng, case) for case in CASES}
    fused = [fused_launch(case, inputs[case.id]) for case in CASES]
    first = run_launches([*fused, *(quant_launch(case, inputs[case.id]) for case in CASES)])
    fused_results, quantized = first[:len(CASES)], first[len(CASES):]
    two_launch = run_launches([gemm_launch(case, inputs[case.id], q) for case, q in zip(CASES, quantized)])
    reverse = run_launches(fused, schedule="reverse")
    return {case.id: (two["c"], one["c"], backwards["c"])
            for case, two, one, backwards in zip(CASES, two_launch, fused_results, reverse)}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fused_decode_equals_two_launches_bit_for_bit(outputs: dict, case: FusedCase) -> None:
    two_launch, fused, reverse = outputs[case.id]
    assert (two_launch[:, N:] == POISON_F16_BITS).all() and (fused[:, N:] == POISON_F16_BITS).all(), (
        "wrote past N into C's padding")
    assert (two_launch[:, :N] != POISON_F16_BITS).any(), "the two-launch reference wrote nothing"
    for what, got in (("fused", fused), ("fused, reverse thread order", reverse)):
        differ = np.argwhere(got != two_launch)
        assert differ.size == 0, (
            f"{what}: {len(differ)} of {two_launch.size} output bits differ from the two launches, "
            f"first at {tuple(differ[0])}: {got[tuple(differ[0])]:#06x} vs {two_launch[tuple(differ[0])]:#06x}")
