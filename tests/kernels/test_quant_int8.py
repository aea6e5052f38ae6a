"""`w8a8_quant_i8_{f16,bf16}` bit for bit against a numpy implementation of vLLM's
scaled_int8_quant formulas (kernel_harness.quant_reference): dynamic / static, symmetric /
asymmetric, fp16 / bf16, rows of zeros, NaN, inf, constant and clamped rows, K with and without
a vector tail, 16-byte aligned and unaligned rows, padding columns written as zeros; q, scale
and azp poisoned before each launch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from kernel_harness import (
    POISON_I32,
    POISON_I8,
    QUANT_ASYMMETRIC,
    QUANT_BLOCK,
    QUANT_STATIC,
    Launch,
    RunLaunches,
    encode_output,
    int32,
    pointer,
    quant_reference,
    uint32,
)

STATIC_SCALE = np.float32(0.05)
STATIC_AZP = 5
K_VALUES = (1, 9, 64, 100, 2053)
SMALL_BLOCK = (64, 1, 1)  # any multiple of 32 up to 256 works
ROW_KINDS = ("normal", "tiny", "large", "zeros", "nan", "inf", "neg_inf", "all_nan",
             "constant", "negative", "signed_zeros")


def make_rows(rng: np.random.Generator, k: int) -> np.ndarray:
    """One float32 row per ROW_KINDS entry."""
    rows = []
    for kind in ROW_KINDS:
        row = rng.normal(0.0, 1.0, k).astype(np.float32)
        if kind == "tiny":
            row *= np.float32(1e-4)  # fp16 subnormals among them
        elif kind == "large":
            row *= np.float32(2e4)   # quantized values clamp in the static modes
        elif kind == "zeros":
            row[:] = 0
        elif kind in ("nan", "inf", "neg_inf"):
            row[k // 2] = {"nan": np.nan, "inf": np.inf, "neg_inf": -np.inf}[kind]
        elif kind == "all_nan":
            row[:] = np.nan
        elif kind == "constant":
            row[:] = np.float32(0.75)
        elif kind == "negative":
            row = -np.abs(row) - np.float32(0.5)
        elif kind == "signed_zeros":
            row[:] = np.where(np.arange(k) % 2 == 0, np.float32(0.0), np.float32(-0.0))
        rows.append(row)
    return np.stack(rows)


@dataclass(frozen=True)
class QuantCase:
    bf16: bool
    static: bool
    asymmetric: bool
    k: int
    aligned: bool
    block: tuple[int, int, int] = QUANT_BLOCK

    @property
    def id(self) -> str:
        return "-".join(["bf16" if self.bf16 else "fp16", "static" if self.static else "dynamic",
                         "asym" if self.asymmetric else "sym", f"K{self.k}",
                         "aligned" if self.aligned else "unaligned", f"block{self.block[0]}"])


CASES = [QuantCase(bf16, static, asymmetric, k, aligned)
         for bf16 in (False, True) for static in (False, True) for asymmetric in (False, True)
         for k in K_VALUES for aligned in (True, False)]
CASES += [QuantCase(False, False, asymmetric, 100, True, SMALL_BLOCK) for asymmetric in (False, True)]


def quant_launch(case: QuantCase, x_bits: np.ndarray) -> Launch:
    m = x_bits.shape[0]
    ldq = -(-case.k // 16) * 16 + 16
    arrays = {"x": x_bits, "q": np.full((m, ldq), POISON_I8, dtype=np.int8)}
    if case.static:
        arrays["scale"] = np.array([STATIC_SCALE], dtype=np.float32)
        if case.asymmetric:
            arrays["azp"] = np.array([STATIC_AZP], dtype=np.int32)
    else:
        arrays["scale"] = np.full(m, np.nan, dtype=np.float32)
        if case.asymmetric:
            arrays["azp"] = np.full(m, POISON_I32, dtype=np.int32)
    flags = (QUANT_STATIC if case.static else 0) | (QUANT_ASYMMETRIC if case.asymmetric else 0)
    return Launch(
        "w8a8_quant_i8_bf16" if case.bf16 else "w8a8_quant_i8_f16", (m, 1, 1), case.block,
        [pointer("x"), pointer("q"), pointer("scale"),
         pointer("azp" if case.asymmetric else None), int32(m), int32(case.k),
         int32(x_bits.shape[1]), int32(ldq), uint32(flags)],
        arrays)


def input_bits(rng: np.random.Generator, case: QuantCase) -> np.ndarray:
    """[rows, ldx] fp16/bf16 bits; ldx keeps rows 16-byte aligned or not; junk past K."""
    rows = make_rows(rng, case.k)
    ldx = -(-case.k // 8) * 8 + 8 if case.aligned else case.k + 1 + (case.k % 2)
    bits = rng.integers(0, 2**16, size=(rows.shape[0], ldx), dtype=np.uint16)
    with np.errstate(over="ignore"):
        bits[:, :case.k] = encode_output(rows, case.bf16)
    return bits


@pytest.fixture(scope="module")
def quant_results(run_launches: RunLaunches) -> dict[str, tuple[np.ndarray, dict]]:
    rng = np.random.default_rng(21)
    inputs = {case.id: input_bits(rng, case) for case in CASES}
    results = run_launches([quant_launch(case, inputs[case.id]) for case in CASES])
    return {case.id: (inputs[case.id], result) for case, result in zip(CASES, results)}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_quant_matches_vllm_formula(quant_results: dict, case: QuantCase) -> None:
    x_bits, result = quant_results[case.id]
    q_ref, scale_ref, azp_ref = quant_reference(
        x_bits[:, :case.k], case.bf16, case.static, case.asymmetric, STATIC_SCALE, STATIC_AZP)
    q = result["q"]
    for row, kind in enumerate(ROW_KINDS):
        mismatches = np.flatnonzero(q[row, :case.k] != q_ref[row])
        assert mismatches.size == 0, (
            f"{kind} row: {mismatches.size} of {case.k} values differ, first at k={mismatches[0]}: "
            f"got {q[row, mismatches[0]]}, expected {q_ref[row, mismatches[0]]}")
    assert (q[:, case.k:] == 0).all(), "padding columns K..ldq-1 must be written as 0"
    if case.static:
        return
    got_scale, want_scale = result["scale"].view(np.uint32), scale_ref.view(np.uint32)
    for row, kind in enumerate(ROW_KINDS):
        assert got_scale[row] == want_scale[row], (
            f"{kind} row: scale {result['scale'][row]!r}, expected {scale_ref[row]!r}")
    if case.asymmetric:
        np.testing.assert_array_equal(result["azp"], azp_ref)


def test_reference_pins_documented_edge_cases() -> None:
    """The behaviour kernels/quant_int8.hip documents, on the reference the kernel matches."""
    rows = np.array([[0.0, 0.0, -0.0], [1.0, np.nan, -2.0], [1.0, np.inf, -2.0],
                     [np.nan, np.nan, np.nan]], dtype=np.float32)
    bits = rows.astype(np.float16).view(np.uint16)
    q, scale, _ = quant_reference(bits, False, False, False)
    assert (q[0] == 0).all() and scale[0] == 0, "zero row: q 0 and scale 0"
    assert q[1].tolist() == [64, 0, -127] and scale[1] == np.float32(2) / 127, "NaN skipped, -> 0"
    assert (q[2] == 0).all() and np.isinf(scale[2]), "inf: scale inf, every q 0"
    assert (q[3] == 0).all() and scale[3] == 0, "all-NaN row scans as empty"
    q, scale, azp = quant_reference(bits, False, False, True)
    assert (q[0] == 0).all() and scale[0] == 0 and azp[0] == 0, "zero row, asymmetric"
    assert scale[3] == -np.inf and azp[3] == -128 and (q[3] == -128).all(), "all-NaN, asymmetric"


@pytest.mark.parametrize("bf16", [False, True], ids=["fp16", "bf16"])
@pytest.mark.parametrize("asymmetric", [False, True], ids=["sym", "asym"])
def test_reference_agrees_with_vllms_cpu_op(bf16: bool, asymmetric: bool) -> None:
    """Cross-check of the formula family on finite rows against vLLM's own (CPU) op: the same
    scales and zero points bit for bit; q within one step, because the CPU op rounds
    x / scale where the ROCm/CUDA kernel we follow multiplies by 127 / absmax (or 1 / scale)."""
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("vllm._custom_ops")
    generator = torch.Generator().manual_seed(41)
    magnitudes = torch.logspace(-3, 3, 48)[:, None]
    x = (torch.randn(48, 1000, generator=generator) * magnitudes).to(
        torch.bfloat16 if bf16 else torch.float16)
    q, scale, azp = ops.scaled_int8_quant(x, symmetric=not asymmetric)
    bits = x.view(torch.int16).numpy().view(np.uint16)
    q_ref, scale_ref, azp_ref = quant_reference(bits, bf16, False, asymmetric)
    np.testing.assert_array_equal(scale.flatten().numpy().view(np.uint32), scale_ref.view(np.uint32))
    if asymmetric:
        np.testing.assert_array_equal(azp.flatten().numpy(), azp_ref)
    steps = np.abs(q.numpy().astype(np.int32) - q_ref)
    assert steps.max() <= 1, f"q differs by up to {steps.max()} steps from vLLM's CPU op"
    assert (steps == 0).mean() > 0.95, "q should mostly agree exactly with vLLM's CPU op"
