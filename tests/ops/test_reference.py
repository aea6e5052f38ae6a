"""The reference ops: bit-exact vs vLLM's quantization formula, exact GEMM epilogue."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vllm_rdna_w8a8.ops import reference


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("symmetric", [True, False])
def test_dynamic_quant_is_bit_exact(activations, numpy_quant, dtype, symmetric) -> None:
    x = activations.to(dtype)
    q, scale, azp = reference.scaled_int8_quant(x, symmetric=symmetric, padded_k=48)
    want_q, want_scale, want_azp = numpy_quant(x.float().numpy(), symmetric)
    assert q.shape == (9, 48) and q.dtype == torch.int8
    np.testing.assert_array_equal(q[:, :40].numpy(), want_q)
    assert not q[:, 40:].any(), "padding columns must be zero"
    np.testing.assert_array_equal(scale.numpy(), want_scale)
    if symmetric:
        assert azp is None
    else:
        np.testing.assert_array_equal(azp.numpy(), want_azp)


def test_zero_rows_give_zeros_not_nan(activations) -> None:
    for symmetric in (True, False):
        q, scale, azp = reference.scaled_int8_quant(activations, symmetric=symmetric)
        assert not q[1].any() and scale[1] == 0
        assert torch.isfinite(scale).all()
        if not symmetric:
            assert azp[1] == 0
            assert scale[2] == 0  # constant row: scale 0, so its GEMM output is 0


def test_inverse_scale_is_one_division() -> None:
    # absmax 5.1875: 127 / 5.1875 rounded once, times 2.59375, is exactly 63.5 -> 64 (even);
    # torch's `127.0 / t` (reciprocal, then multiply) would give 63.4999... -> 63.
    x = torch.tensor([[2.59375, 5.1875] + [0.0] * 14], dtype=torch.bfloat16)
    q, _, _ = reference.scaled_int8_quant(x)
    assert q[0, :2].tolist() == [64, 127]


def test_ties_round_half_to_even(activations) -> None:
    q, scale, _ = reference.scaled_int8_quant(activations)
    assert scale[4] == 1.0
    assert q[4, :6].tolist() == [127, 0, 2, 2, 0, -2]


@pytest.mark.parametrize("symmetric", [True, False])
def test_static_quant_is_bit_exact(activations, numpy_quant, symmetric) -> None:
    scale = torch.tensor([0.037], dtype=torch.float32)
    azp = None if symmetric else torch.tensor([-7], dtype=torch.int32)
    q, out_scale, out_azp = reference.scaled_int8_quant(activations, scale, azp, symmetric=symmetric)
    want_q, _, _ = numpy_quant(activations.float().numpy(), symmetric, 0.037, None if symmetric else -7)
    np.testing.assert_array_equal(q[:, :40].numpy(), want_q)
    assert out_scale is scale and out_azp is azp


def test_nan_and_inf_rows_have_the_documented_results() -> None:
    x = torch.tensor([[float("nan"), 1.0, -2.0] + [0.0] * 13,
                      [float("inf"), 1.0, -1.0] + [0.0] * 13], dtype=torch.float16)
    q, scale, _ = reference.scaled_int8_quant(x)
    assert q[0, :3].tolist() == [0, 64, -127] and scale[0] == 2.0 / 127
    assert scale[1] == float("inf") and not q[1].any()
    static_q, _, _ = reference.scaled_int8_quant(x, torch.tensor([1.0]))
    assert static_q[1, 0] == 127 and static_q[0, 0] == 0


def test_gemm_matches_int64_and_float64_math() -> None:
    generator = torch.Generator().manual_seed(1)
    m, n, k = 7, 5, 64
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=generator)
    a[0] = -128  # extreme row: -128 * -128 over K
    b = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=generator)
    b[0] = -128
    a_scale = torch.rand(m, generator=generator) * 0.01
    b_scale = torch.rand(n, generator=generator) * 0.01
    azp = torch.randint(-20, 20, (m,), dtype=torch.int32, generator=generator)
    azp_adj = b.sum(dim=1, dtype=torch.int32)
    bias = torch.randn(n, generator=generator).to(torch.bfloat16)
    out = reference.int8_scaled_mm(a, b, a_scale, b_scale, torch.bfloat16, azp, azp_adj, bias)
    acc = a.long() @ b.long().T - azp.long()[:, None] * azp_adj.long()[None, :]
    assert acc[0, 0] == 128 * 128 * k - azp[0] * azp_adj[0]
    want = a_scale.double()[:, None] * b_scale.double()[None, :] * acc.double() + bias.double()
    torch.testing.assert_close(out.double(), want, rtol=2**-8, atol=1e-6)


def test_gemm_static_zero_point_folded_into_azp_adj() -> None:
    a = torch.full((2, 16), 3, dtype=torch.int8)
    b = torch.ones((3, 16), dtype=torch.int8)
    ones = torch.ones(1)
    folded = torch.full((3,), 16 * 2, dtype=torch.int32)  # azp 2 times the column sums
    out = reference.int8_scaled_mm(a, b, ones, ones, torch.float16, None, folded)
    assert out.tolist() == [[16.0] * 3] * 2  # 3*16 - 2*16


def test_fp8_gemm_matches_float64_math() -> None:
    generator = torch.Generator().manual_seed(3)
    a = (torch.randn(6, 48, generator=generator) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    b = (torch.randn(5, 48, generator=generator) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    a[0] = 448.0  # the largest e4m3fn value
    a_scale, b_scale = torch.rand(6, generator=generator), torch.rand(1, generator=generator)
    bias = torch.randn(5, generator=generator).to(torch.float16)
    out = reference.fp8_scaled_mm(a, b, a_scale, b_scale, torch.float16, bias)
    want = a_scale.double()[:, None] * b_scale.double() * (a.double() @ b.double().T) + bias.double()
    torch.testing.assert_close(out.double(), want, rtol=2**-10, atol=1e-3)
