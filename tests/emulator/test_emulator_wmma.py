"""WMMA under the emulator against numpy, from the RDNA3 operand layout (rdna3-wmma.md)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from emu_driver import KernelRunner, gemm_i8_reference, pointer

TILE = 16
INT32_MAX = np.iinfo(np.int32).max
INT32_MIN = np.iinfo(np.int32).min


def run_iu8(runner: KernelRunner, kernel: str, a: np.ndarray, b: np.ndarray,
            c: np.ndarray | None = None, waves_per_block: int = 2) -> np.ndarray:
    """a, b: [waves][16][k] bytes (B given as [n][k]); returns D [waves][16][16] int32."""
    waves, _, k_len = a.shape
    assert waves % waves_per_block == 0
    c = np.zeros((waves, TILE, TILE), dtype=np.int32) if c is None else c
    d = np.full_like(c, -7)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)  # alive during the launch
    runner.run("wmma_ops", kernel, waves // waves_per_block, 32 * waves_per_block,
               pointer(a), pointer(b), pointer(c), pointer(d), ctypes.c_int32(k_len))
    return d


def reference_iu8(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    d = np.einsum("wmk,wnk->wmn", a.astype(np.int64), b.astype(np.int64))
    return d if c is None else d + c


def test_identity_a_returns_b_transposed(runner: KernelRunner) -> None:
    rng = np.random.default_rng(0)
    a = np.eye(TILE, dtype=np.int8)[None].repeat(2, axis=0)
    b = rng.integers(-128, 127, size=(2, TILE, TILE), endpoint=True, dtype=np.int8)
    d = run_iu8(runner, "emu_test_wmma_i8_ss", a, b, waves_per_block=1)
    np.testing.assert_array_equal(d, b.transpose(0, 2, 1))


@pytest.mark.parametrize("operand", ["a", "b"])
def test_permutation_matrices_move_rows_and_columns(runner: KernelRunner, operand: str) -> None:
    rng = np.random.default_rng(1)
    perm = rng.permutation(TILE)
    permutation = np.zeros((1, TILE, TILE), dtype=np.int8)
    permutation[0, np.arange(TILE), perm] = 1  # row i has its 1 at k = perm[i]
    values = rng.integers(-128, 127, size=(1, TILE, TILE), endpoint=True, dtype=np.int8)
    if operand == "a":
        d = run_iu8(runner, "emu_test_wmma_i8_ss", permutation, values, waves_per_block=1)
        expected = values[0][:, perm].T  # D[m][n] = B[n][perm[m]]
    else:
        d = run_iu8(runner, "emu_test_wmma_i8_ss", values, permutation, waves_per_block=1)
        expected = values[0][:, perm]  # D[m][n] = A[m][perm[n]]
    np.testing.assert_array_equal(d[0], expected)


@pytest.mark.parametrize(
    ("kernel", "a_signed", "b_signed"),
    [("emu_test_wmma_i8_ss", True, True), ("emu_test_wmma_i8_su", True, False),
     ("emu_test_wmma_i8_us", False, True), ("emu_test_wmma_i8_uu", False, False)],
)
def test_sign_flags_select_int8_or_uint8(runner: KernelRunner, kernel: str, a_signed: bool,
                                         b_signed: bool) -> None:
    rng = np.random.default_rng(2)
    raw_a = rng.integers(0, 255, size=(6, TILE, 32), endpoint=True, dtype=np.uint8)
    raw_b = rng.integers(0, 255, size=(6, TILE, 32), endpoint=True, dtype=np.uint8)
    raw_a[0, 0, :], raw_b[0, 0, :] = 0x80, 0xFF  # -128 / 128 and -1 / 255
    d = run_iu8(runner, kernel, raw_a, raw_b, waves_per_block=2)  # 3 workgroups x 2 waves
    a = raw_a.view(np.int8) if a_signed else raw_a
    b = raw_b.view(np.int8) if b_signed else raw_b
    np.testing.assert_array_equal(d, reference_iu8(a, b))


def test_accumulator_chaining_over_long_k_with_extremes(runner: KernelRunner) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 127, size=(4, TILE, 512), endpoint=True, dtype=np.int8)
    b = rng.integers(-128, 127, size=(4, TILE, 512), endpoint=True, dtype=np.int8)
    a[0], b[0] = -128, -128  # every product 2^14, K = 512: 2^23 per element
    a[1, 3], b[1, 5] = 127, -128
    c = rng.integers(-(2**20), 2**20, size=(4, TILE, TILE), dtype=np.int32)
    d = run_iu8(runner, "emu_test_wmma_i8_ss", a, b, c)
    np.testing.assert_array_equal(d, reference_iu8(a, b, c))
    assert d[0, 0, 0] == 512 * 128 * 128 + c[0, 0, 0]


def test_clamp_saturates_and_plain_wraps(runner: KernelRunner) -> None:
    a = np.full((2, TILE, TILE), 127, dtype=np.int8)
    b = np.full((2, TILE, TILE), 127, dtype=np.int8)
    b[1] = -128
    c = np.empty((2, TILE, TILE), dtype=np.int32)
    c[0], c[1] = INT32_MAX - 1000, INT32_MIN + 1000  # the products push past either end
    exact = reference_iu8(a, b, c)
    assert exact[0].min() > INT32_MAX and exact[1].max() < INT32_MIN
    wrapped = run_iu8(runner, "emu_test_wmma_i8_ss", a, b, c.copy())
    clamped = run_iu8(runner, "emu_test_wmma_i8_ss_clamp", a, b, c.copy())
    np.testing.assert_array_equal(wrapped, exact.astype(np.int32))  # modulo 2^32
    np.testing.assert_array_equal(clamped[0], INT32_MAX)
    np.testing.assert_array_equal(clamped[1], INT32_MIN)


def exactly_summable(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Multiples of 1/8 in [-8, 8]: products and sums of 16 of them are exact in f32."""
    return rng.integers(-64, 64, size=shape).astype(np.float32) / 8


def test_f16_wmma_layout_and_values(runner: KernelRunner) -> None:
    rng = np.random.default_rng(4)
    waves = 4
    a = exactly_summable(rng, (waves, TILE, TILE)).astype(np.float16)
    b = exactly_summable(rng, (waves, TILE, TILE)).astype(np.float16)  # [n][k]
    a[0] = np.eye(TILE)[rng.permutation(TILE)]
    c = exactly_summable(rng, (waves, TILE, TILE))
    d = np.full_like(c, np.nan)
    runner.run("wmma_ops", "emu_test_wmma_f16", 2, 64, pointer(a), pointer(b), pointer(c),
               pointer(d))
    expected = np.einsum("wmk,wnk->wmn", a.astype(np.float64), b.astype(np.float64)) + c
    np.testing.assert_array_equal(d, expected.astype(np.float32))


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """bf16 patterns of float32 values that bf16 represents exactly."""
    bits = values.astype(np.float32).view(np.uint32)
    assert not (bits & 0xFFFF).any(), "value not exact in bf16"
    return (bits >> 16).astype(np.uint16).view(np.int16)


def test_bf16_wmma_layout_and_values(runner: KernelRunner) -> None:
    rng = np.random.default_rng(5)
    a = exactly_summable(rng, (2, TILE, TILE))
    b = exactly_summable(rng, (2, TILE, TILE))
    c = exactly_summable(rng, (2, TILE, TILE))
    d = np.full_like(c, np.nan)
    a_bits, b_bits = to_bf16_bits(a), to_bf16_bits(b)  # alive during the launch
    runner.run("wmma_ops", "emu_test_wmma_bf16", 1, 64, pointer(a_bits), pointer(b_bits),
               pointer(c), pointer(d))
    expected = np.einsum("wmk,wnk->wmn", a.astype(np.float64), b.astype(np.float64)) + c
    np.testing.assert_array_equal(d, expected.astype(np.float32))


def test_tiled_gemm_with_lds_and_barriers(runner: KernelRunner) -> None:
    """The LDS-staged test GEMM (4 waves, WMMA, barriers) on a 128x192x96 problem."""
    rng = np.random.default_rng(6)
    m, n, k = 128, 192, 96
    a = rng.integers(-128, 127, size=(m, k), endpoint=True, dtype=np.int8)
    b = rng.integers(-128, 127, size=(n, k), endpoint=True, dtype=np.int8)
    c = np.full((m, n), -1, dtype=np.int32)
    runner.run("gemm_i8", "emu_test_gemm_i8", (m // 64) * (n // 64), 128, pointer(a),
               pointer(b), pointer(c), ctypes.c_int32(m), ctypes.c_int32(n), ctypes.c_int32(k))
    np.testing.assert_array_equal(c, gemm_i8_reference(a, b))
