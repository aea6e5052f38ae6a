"""Launch descriptions, input builders and exact numpy references for the kernel tests.

References: the int8 GEMM in int64, the GEMM epilogue in float64, and vLLM's
scaled_int8_quant (csrc/quantization/w8a8/int8/scaled_quant.cu, ROCm path) in float32 with the
GPU's conversion rules, as documented at the top of kernels/quant_int8.hip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vllm_rdna_w8a8.dispatch.tile_configs import TileConfig, parse_tile_configs

REPO = Path(__file__).resolve().parents[2]
KERNELS_DIR = REPO / "kernels"

# Output poison: unwritten elements keep these and fail the comparisons.
POISON_F16_BITS = 0x7FFF  # NaN as fp16 and as bf16
POISON_I32 = 0x7EAD0BAD
POISON_I8 = -77

# `flags` bits (docs/architecture.md).
GEMM_PER_TOKEN_A = 1
GEMM_PER_CHANNEL_B = 2
GEMM_OUT_BF16 = 4
QUANT_STATIC = 1
QUANT_ASYMMETRIC = 2

QUANT_BLOCK = (256, 1, 1)


@dataclass
class Launch:
    """One kernel launch: `args` are (kind, value) with pointers naming entries of `arrays`."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: list[tuple[str, object]]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


# run_launches(launches, schedule="forward") -> each launch's arrays after it ran (conftest.py)
RunLaunches = Callable[..., list[dict[str, np.ndarray]]]


def pointer(name: str | None) -> tuple[str, object]:
    return ("pointer", name)


def int32(value: int) -> tuple[str, object]:
    return ("int32", int(value))


def uint32(value: int) -> tuple[str, object]:
    return ("uint32", int(value))


def tile_configs() -> tuple[TileConfig, ...]:
    """The rows of kernels/gemm_configs.def (the source tree's, not a packaged copy)."""
    configs = parse_tile_configs((KERNELS_DIR / "gemm_configs.def").read_text())
    assert configs, "kernels/gemm_configs.def has no W8A8_GEMM_CONFIG rows"
    return configs


def config_ids(configs: tuple[TileConfig, ...]) -> list[str]:
    return [config.tag for config in configs]


# --- GEMM inputs -------------------------------------------------------------------------

def int8_matrix(rng: np.random.Generator, rows: int, k: int, ld: int) -> np.ndarray:
    """[rows, ld] random int8 over the full range; columns k..ld-1 hold junk the kernels
    must never read (a read would change the result)."""
    matrix = rng.integers(-128, 127, size=(rows, ld), endpoint=True, dtype=np.int8)
    matrix[:, k:] = rng.integers(-128, 127, size=(rows, ld - k), endpoint=True, dtype=np.int8)
    return matrix


def with_extreme_rows(a: np.ndarray, b: np.ndarray, k: int) -> None:
    """Row 0 of A and B all -128 (C[0][0] = 2^14 * K, the largest int8 dot product), row 1
    of A 127 against row 1 of B -128 (the most negative)."""
    a[0, :k] = -128
    b[0, :k] = -128
    if a.shape[0] > 1 and b.shape[0] > 1:
        a[1, :k] = 127
        b[1, :k] = -128


def gemm_reference_i64(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """A[:, :K] x B[:, :K]^T exactly (int64)."""
    return a[:, :k].astype(np.int64) @ b[:, :k].astype(np.int64).T


def probe_launch(config: TileConfig, a: np.ndarray, b: np.ndarray, m: int, n: int, k: int,
                 ldc: int) -> Launch:
    """The raw-int32 accumulator probe of `config` (tests/kernels/probe), C poisoned."""
    c = np.full((m, ldc), POISON_I32, dtype=np.int32)
    return Launch(
        f"w8a8_probe_i32_gemm_{config.tag}", config.grid(m, n), config.block(),
        [pointer("a"), pointer("b"), pointer("c"), int32(m), int32(n), int32(k),
         int32(a.shape[1]), int32(b.shape[1]), int32(ldc)],
        {"a": a, "b": b, "c": c})


# --- GEMM epilogue reference ---------------------------------------------------------------

def output_dtype_bits(bf16: bool) -> int:
    """Explicit mantissa bits of the output dtype."""
    return 7 if bf16 else 10


def decode_output(bits: np.ndarray, bf16: bool) -> np.ndarray:
    """fp16/bf16 bit patterns -> float64."""
    if bf16:
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return bits.view(np.float16).astype(np.float64)


def encode_output(values: np.ndarray, bf16: bool) -> np.ndarray:
    """float32 values -> fp16/bf16 bit patterns, round to nearest even (bias inputs)."""
    if not bf16:
        return values.astype(np.float16).view(np.uint16)
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def assert_within_output_rounding(actual: np.ndarray, expected: np.ndarray,
                                  magnitude: np.ndarray, bf16: bool, what: str,
                                  sum_error: np.ndarray | float = 0.0) -> None:
    """|actual - expected| <= half an output ulp of `expected` plus the fp32 epilogue's
    rounding (a few fp32 ulps of the largest term, `magnitude`) plus `sum_error`."""
    mantissa = output_dtype_bits(bf16)
    smallest_normal_exponent = -126 if bf16 else -14
    exponent = np.floor(np.log2(np.maximum(np.abs(expected), np.finfo(np.float64).tiny)))
    exponent = np.maximum(exponent, smallest_normal_exponent)
    half_ulp = np.exp2(exponent - mantissa - 1)
    fp32_error = 4 * np.finfo(np.float32).eps * magnitude + sum_error
    error = np.abs(actual - expected)
    bad = ~(error <= half_ulp + fp32_error)  # also catches NaN
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} outputs off, first at {index}: "
            f"got {actual[index]!r}, expected {expected[index]!r} "
            f"(allowed {half_ulp[index] + fp32_error[index]:.3g})")


# --- Quantization reference (vLLM's scaled_int8_quant, ROCm semantics) -------------------

def input_to_float32(bits: np.ndarray, bf16: bool) -> np.ndarray:
    if bf16:
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.view(np.float16).astype(np.float32)


def saturate_to_int32(x: np.ndarray) -> np.ndarray:
    """v_cvt_i32_f32 on an already integral float32: saturating, NaN -> 0."""
    x64 = np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=2.0**31, neginf=-(2.0**31))
    return np.clip(x64, -(2.0**31), 2.0**31 - 1).astype(np.int64).astype(np.int32)


def float_to_int8_rn(x: np.ndarray) -> np.ndarray:
    rounded = np.rint(x)
    return np.where(np.isnan(rounded), 0, np.clip(rounded, -128, 127)).astype(np.int8)


def quantize_asymmetric(x: np.ndarray, inverse_scale: np.float32, azp: np.int32) -> np.ndarray:
    q32 = saturate_to_int32(np.rint(x * inverse_scale)).astype(np.int64)
    wrapped = ((q32 + int(azp) + 2**31) % 2**32) - 2**31  # int32 addition wraps on the GPU
    return np.clip(wrapped, -128, 127).astype(np.int8)


def quant_reference(x_bits: np.ndarray, bf16: bool, static: bool, asymmetric: bool,
                    static_scale: np.float32 = np.float32(1), static_azp: int = 0,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q [M, K] int8, scale [M] float32, azp [M] int32) for rows x_bits [M, K]."""
    x = input_to_float32(x_bits, bf16)
    rows = x.shape[0]
    q = np.zeros(x.shape, dtype=np.int8)
    scales = np.zeros(rows, dtype=np.float32)
    zero_points = np.zeros(rows, dtype=np.int32)
    with np.errstate(all="ignore"):
        for r in range(rows):
            row = x[r]
            finite_or_inf = row[~np.isnan(row)]  # the scans skip NaN like fmaxf / fminf
            if static and not asymmetric:
                q[r] = float_to_int8_rn(row / static_scale)
                scales[r] = static_scale
            elif static:
                q[r] = quantize_asymmetric(row, np.float32(1) / static_scale, np.int32(static_azp))
                scales[r], zero_points[r] = static_scale, static_azp
            elif not asymmetric:
                absmax = np.float32(np.abs(finite_or_inf).max()) if finite_or_inf.size else np.float32(0)
                scales[r] = absmax / np.float32(127)
                inverse = np.float32(0) if absmax == 0 else np.float32(127) / absmax
                q[r] = float_to_int8_rn(row * inverse)
            else:
                # The scans start from FLT_MAX / -FLT_MAX (vLLM's MinMax), so +inf never
                # becomes the minimum nor -inf the maximum.
                float_max = np.finfo(np.float32).max
                low = np.float32(min([float_max, *finite_or_inf.tolist()]))
                high = np.float32(max([-float_max, *finite_or_inf.tolist()]))
                scale = (high - low) / np.float32(255)
                azp = saturate_to_int32(np.rint(np.float32(-128) - low / scale))
                scales[r], zero_points[r] = scale, azp
                q[r] = quantize_asymmetric(row, np.float32(1) / scale, azp)
    return q, scales, zero_points


# --- Production GEMM launches ------------------------------------------------------------

ZERO_POINT_MODES = ("none", "per_token", "per_tensor")


@dataclass(frozen=True)
class EpilogueVariant:
    per_token_a: bool
    per_channel_b: bool
    zero_point: str  # one of ZERO_POINT_MODES
    bias: bool
    bf16: bool

    @property
    def flags(self) -> int:
        return ((GEMM_PER_TOKEN_A if self.per_token_a else 0)
                | (GEMM_PER_CHANNEL_B if self.per_channel_b else 0)
                | (GEMM_OUT_BF16 if self.bf16 else 0))

    @property
    def id(self) -> str:
        return "-".join([
            "a_token" if self.per_token_a else "a_tensor",
            "b_channel" if self.per_channel_b else "b_tensor",
            f"azp_{self.zero_point}", "bias" if self.bias else "nobias",
            "bf16" if self.bf16 else "fp16"])


ALL_VARIANTS = tuple(
    EpilogueVariant(per_token_a, per_channel_b, zero_point, bias, bf16)
    for per_token_a in (True, False) for per_channel_b in (True, False)
    for zero_point in ZERO_POINT_MODES for bias in (False, True) for bf16 in (False, True))


@dataclass
class Operands:
    a: np.ndarray              # [M, lda] int8 or e4m3fn bytes
    b: np.ndarray              # [N, ldb]
    product: np.ndarray        # exact A x B^T over K, float64
    sum_error: np.ndarray      # bound on |kernel sum - product| before scaling
    b_row_sums: np.ndarray | None = None  # int8: sum_k B[n][k], for azp_adj


def int8_operands(rng: np.random.Generator, m: int, n: int, k: int) -> Operands:
    """Random int8 with extreme rows, strided with junk past K; int32 sums are exact."""
    a, b = int8_matrix(rng, m, k, k + 16), int8_matrix(rng, n, k, k)
    with_extreme_rows(a, b, k)
    product = gemm_reference_i64(a, b, k).astype(np.float64)
    return Operands(a, b, product, np.zeros_like(product),
                    b[:, :k].astype(np.int64).sum(axis=1))


@dataclass
class GemmCase:
    launch: Launch
    expected: np.ndarray   # float64 [M, N]
    magnitude: np.ndarray  # float64 [M, N], the largest term of each output
    sum_error: np.ndarray  # float64 [M, N], accumulation error bound after scaling
    n: int
    bf16: bool


def scaled_gemm_case(rng: np.random.Generator, kind: str, config: TileConfig, m: int, n: int,
                     k: int, variant: EpilogueVariant, operands: Operands | None = None,
                     zero_points: np.ndarray | None = None, ldc: int | None = None) -> GemmCase:
    """A production GEMM launch (`kind` "i8" or "f8") with its float64 reference; default
    operands: int8_operands / fp8_operands; per-token zero points random in the int8 range
    unless `zero_points` [M] gives them. C's row stride defaults to N + 5: rows not 16-byte
    aligned, so the epilogue stores element by element (ldc % 8 == 0: 16-byte row chunks)."""
    if operands is None:
        operands = (int8_operands if kind == "i8" else fp8_operands)(rng, m, n, k)
    a, b, product = operands.a, operands.b, operands.product
    a_scale = (rng.uniform(0.5, 2.0, m if variant.per_token_a else 1) * 2.0**-9).astype(np.float32)
    b_scale = (rng.uniform(0.5, 2.0, n if variant.per_channel_b else 1) * 2.0**-8).astype(np.float32)
    corrected = product.copy()
    arrays: dict[str, np.ndarray] = {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale}
    azp_name = azp_adj_name = bias_name = None
    if variant.zero_point != "none":
        b_row_sums = operands.b_row_sums
        if b_row_sums is None:
            raise ValueError("zero points apply to int8 GEMMs only")
        azp_adj_name = "azp_adj"
        if variant.zero_point == "per_token":
            azp = (rng.integers(-128, 127, size=m, endpoint=True) if zero_points is None
                   else zero_points).astype(np.int32)
            arrays["azp"], azp_name = azp, "azp"
            arrays["azp_adj"] = b_row_sums.astype(np.int32)
            corrected -= np.outer(azp.astype(np.int64), b_row_sums).astype(np.float64)  # exact
        else:  # a static per-tensor zero point folded into azp_adj
            zero_point = 37
            arrays["azp_adj"] = (zero_point * b_row_sums).astype(np.int32)
            corrected -= zero_point * b_row_sums[None, :].astype(np.float64)
    bias = np.zeros(n)
    if variant.bias:
        bias_bits = encode_output(rng.normal(0.0, 4.0, n).astype(np.float32), variant.bf16)
        arrays["bias"], bias_name = bias_bits, "bias"
        bias = decode_output(bias_bits, variant.bf16)
    scale = np.broadcast_to(a_scale.astype(np.float64)[:, None] * b_scale.astype(np.float64)[None, :],
                            (m, n))
    scaled = scale * corrected
    ldc = n + 5 if ldc is None else ldc
    arrays["c"] = np.full((m, ldc), POISON_F16_BITS, dtype=np.uint16)
    launch = Launch(
        config.kernel_name(kind), config.grid(m, n), config.block(),
        [pointer("a"), pointer("b"), pointer("c"), pointer("a_scale"), pointer("b_scale"),
         pointer(azp_name), pointer(azp_adj_name), pointer(bias_name),
         int32(m), int32(n), int32(k), int32(a.shape[1]), int32(b.shape[1]), int32(ldc),
         uint32(variant.flags)],
        arrays)
    return GemmCase(launch, scaled + bias[None, :], np.abs(scaled) + np.abs(bias)[None, :],
                    scale * operands.sum_error, n, variant.bf16)


def check_gemm_case(case: GemmCase, result: dict[str, np.ndarray], what: str) -> None:
    c = result["c"]
    assert (c[:, case.n:] == POISON_F16_BITS).all(), f"{what}: wrote past N into C's padding"
    assert_within_output_rounding(decode_output(c[:, :case.n], case.bf16), case.expected,
                                  case.magnitude, case.bf16, what, case.sum_error)


# --- fp8 e4m3fn ------------------------------------------------------------------------------

E4M3FN_MAX_BYTE = 0x7E  # 448
E4M3FN_NAN_BYTES = (0x7F, 0xFF)


def e4m3fn_values() -> np.ndarray:
    """float64 value of every byte 0..255 (NaN for 0x7f / 0xff)."""
    byte = np.arange(256)
    exponent, mantissa = (byte >> 3) & 0xF, byte & 0x7
    magnitude = np.where(exponent == 0, mantissa * 2.0**-9,
                         (1 + mantissa / 8) * np.exp2(exponent.astype(np.float64) - 7))
    values = np.where(byte & 0x80, -magnitude, magnitude)
    values[list(E4M3FN_NAN_BYTES)] = np.nan
    return values


def fp8_operands(rng: np.random.Generator, m: int, n: int, k: int) -> Operands:
    """Random e4m3fn bytes (no NaN) with ±448 rows, subnormal rows and a zero row, strided
    with junk past K. fp32 sums of exact products: error bound (K + 8) eps32 sum|a||b|."""
    finite = np.array([byte for byte in range(256) if byte not in E4M3FN_NAN_BYTES], np.uint8)
    a = rng.choice(finite, size=(m, k + 16))
    b = rng.choice(finite, size=(n, k))
    a[0, :k] = E4M3FN_MAX_BYTE
    b[0, :k] = E4M3FN_MAX_BYTE | 0x80  # -448
    if m > 1:
        a[1, :k] = rng.choice(np.array([1, 2, 5, 7, 0x81, 0x86], np.uint8), size=k)  # subnormals
    if m > 2:
        a[2, :k] = 0
    if n > 1:
        b[1, :k] = rng.choice(np.array([1, 3, 7, 0x82, 0x87], np.uint8), size=k)
    values = e4m3fn_values()
    a_values, b_values = values[a[:, :k]], values[b[:, :k]]
    sum_error = (k + 8) * np.finfo(np.float32).eps * (np.abs(a_values) @ np.abs(b_values).T)
    return Operands(a.view(np.int8), b.view(np.int8), a_values @ b_values.T, sum_error)
