"""The W8A8 int8 MoE reference: routing, the sort by expert, and the layer's math
(bit-exact against a per-token loop over the dense reference ops, close to float64)."""

from __future__ import annotations

import pytest
import torch

from vllm_rdna_w8a8.moe.reference import combine, int8_moe, route, silu_and_mul, sort_by_expert
from vllm_rdna_w8a8.ops import reference as dense

HIDDEN, INTERMEDIATE, EXPERTS = 64, 40, 4  # I = 40: K of the down GEMM is padded to 48


def _weights(seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    w13_float = torch.randn(EXPERTS, 2 * INTERMEDIATE, HIDDEN, generator=generator) / HIDDEN**0.5
    w2_float = torch.randn(EXPERTS, HIDDEN, INTERMEDIATE, generator=generator) / INTERMEDIATE**0.5
    quantized = []
    for weight in (w13_float, w2_float):
        scale = weight.abs().amax(dim=2) / 127
        quantized += [(weight / scale.unsqueeze(2)).round().clamp(-127, 127).to(torch.int8), scale]
    return (*quantized, w13_float, w2_float)


def _per_token_loop(x, w13, w13_scale, w2, w2_scale, weights, ids) -> torch.Tensor:
    """Independent of the sort: each (token, chosen expert) through the dense reference."""
    out = torch.zeros(x.shape[0], HIDDEN, dtype=torch.float32)
    for token in range(x.shape[0]):
        row = x[token:token + 1]
        for slot in range(ids.shape[1]):
            expert = int(ids[token, slot])
            w13_e = w13[expert]  # H = 64: K needs no padding
            gate_up = dense.int8_quant_scaled_mm(row, w13_e, None, None, True, w13_scale[expert], x.dtype)
            act = (torch.nn.functional.silu(gate_up[:, :INTERMEDIATE].float())
                   * gate_up[:, INTERMEDIATE:].float()).to(x.dtype)
            w2_e = torch.nn.functional.pad(w2[expert], (0, 8))  # K 40 -> 48
            down = dense.int8_quant_scaled_mm(act, w2_e, None, None, True, w2_scale[expert], x.dtype)
            out[token] += weights[token, slot] * down[0].float()
    return out.to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("top_k", [1, 2, EXPERTS])  # top_k = E: every token to every expert
def test_bit_exact_against_a_per_token_loop(dtype: torch.dtype, top_k: int) -> None:
    w13, w13_scale, w2, w2_scale, _, _ = _weights(seed=1)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(9, HIDDEN, generator=generator).to(dtype)
    weights, ids = route(torch.randn(9, EXPERTS, generator=generator), top_k, renormalize=True)
    got = int8_moe(x, w13, w13_scale, w2, w2_scale, weights, ids)
    assert got.dtype == dtype and got.shape == (9, HIDDEN)
    assert torch.equal(got, _per_token_loop(x, w13, w13_scale, w2, w2_scale, weights, ids))


def test_an_expert_no_token_chose_contributes_nothing() -> None:
    w13, w13_scale, w2, w2_scale, _, _ = _weights(seed=3)
    x = torch.randn(5, HIDDEN, generator=torch.Generator().manual_seed(4)).half()
    ids = torch.tensor([[0, 2]] * 5, dtype=torch.int32)  # experts 1 and 3 idle
    weights = torch.full((5, 2), 0.5)
    assert sort_by_expert(ids, EXPERTS).offsets.tolist() == [0, 5, 5, 10, 10]
    poisoned = w13.clone()
    poisoned[[1, 3]] = 127  # an idle expert's weights must never be read into the result
    got = int8_moe(x, poisoned, w13_scale, w2, w2_scale, weights, ids)
    assert torch.equal(got, int8_moe(x, w13, w13_scale, w2, w2_scale, weights, ids))
    assert torch.equal(got, _per_token_loop(x, w13, w13_scale, w2, w2_scale, weights, ids))


def _float64_moe(x: torch.Tensor, w13_float: torch.Tensor, w2_float: torch.Tensor, weights: torch.Tensor,
                 ids: torch.Tensor) -> torch.Tensor:
    """The unquantized layer in float64, token by token."""
    want = torch.zeros(x.shape[0], HIDDEN, dtype=torch.float64)
    for token in range(x.shape[0]):
        for slot in range(ids.shape[1]):
            expert = int(ids[token, slot])
            gate_up = x[token].double() @ w13_float[expert].double().T
            act = torch.nn.functional.silu(gate_up[:INTERMEDIATE]) * gate_up[INTERMEDIATE:]
            want[token] += float(weights[token, slot]) * (act @ w2_float[expert].double().T)
    return want


def test_no_tokens() -> None:
    w13, w13_scale, w2, w2_scale, _, _ = _weights(seed=8)
    x = torch.zeros(0, HIDDEN, dtype=torch.bfloat16)
    got = int8_moe(x, w13, w13_scale, w2, w2_scale, torch.zeros(0, 2), torch.zeros(0, 2, dtype=torch.int32))
    assert got.shape == (0, HIDDEN) and got.dtype == torch.bfloat16


def test_silu_and_mul_of_a_row_does_not_depend_on_the_other_rows() -> None:
    """The grouped GEMMs compute the activation of all slots at once, the reference per
    expert: each row must come out the same. torch's float32 silu differs in the last bit
    between its vector body and its scalar tail, and over a contiguous [n * I] buffer the
    tail moves with n. Column 35 of I = 40 is in the tail of one row alone, in the vector
    body of 4 rows flattened (160 values); the gate and up values were found by search so
    that the two paths round to different float16 values here (AVX2 and AVX-512 alike)."""
    gate_up = torch.zeros(4, 2 * INTERMEDIATE, dtype=torch.float16)
    gate_up[:, 35] = -0.0163726806640625
    gate_up[:, INTERMEDIATE + 35] = 1.15625
    whole = silu_and_mul(gate_up)
    assert torch.equal(whole, torch.cat([silu_and_mul(gate_up[row:row + 1]) for row in range(4)]))
    random = (torch.randn(300, 2 * INTERMEDIATE, generator=torch.Generator().manual_seed(12)) * 6).half()
    assert torch.equal(silu_and_mul(random), torch.cat([silu_and_mul(random[row:row + 7]) for row in range(0, 300, 7)]))


def test_combine_accumulates_in_float32_and_rounds_once() -> None:
    down = torch.tensor([[1.0], [2.0**-8], [2.0**-8]], dtype=torch.bfloat16)  # one token, three slots
    out = combine(down, torch.ones(1, 3))
    # float32: 1 + 2^-8 + 2^-8 = 1 + 2^-7, a bfloat16 value; rounding each step to bfloat16
    # would tie 1 + 2^-8 down to 1 twice.
    assert out.dtype == torch.bfloat16 and out.tolist() == [[1.0 + 2.0**-7]]


def test_route_softmax_topk_renormalised() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0], [3.0, 0.0, 0.0, 0.0]])
    weights, ids = route(logits, 2, renormalize=True)
    assert ids.dtype == torch.int32 and ids.tolist() == [[1, 3], [0, 1]]  # tie: lower index first
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    raw, _ = route(logits, 2, renormalize=False)
    torch.testing.assert_close(raw[0], torch.softmax(logits[0], dim=0)[[1, 3]])


def test_sort_keeps_token_order_within_an_expert() -> None:
    order = sort_by_expert(torch.tensor([[2, 0], [0, 1], [2, 1]]), 3)
    assert order.offsets.tolist() == [0, 2, 4, 6]
    assert order.slots.tolist() == [1, 2, 3, 5, 0, 4]
    assert order.token_of(2).tolist() == [0, 1, 1, 2, 0, 2]


def test_bad_input_is_named() -> None:
    w13, w13_scale, w2, w2_scale, _, _ = _weights(seed=7)
    x = torch.zeros(2, HIDDEN, dtype=torch.float16)
    ids = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    weights = torch.full((2, 2), 0.5)
    with pytest.raises(ValueError, match=r"topk_ids must lie in \[0, 4\)"):
        int8_moe(x, w13, w13_scale, w2, w2_scale, weights, torch.tensor([[0, 4], [1, 2]]))
    with pytest.raises(ValueError, match="same expert twice"):
        int8_moe(x, w13, w13_scale, w2, w2_scale, weights, torch.tensor([[1, 1], [1, 2]]))
    with pytest.raises(ValueError, match=r"w2_scale must have shape \[4, 64\]"):
        int8_moe(x, w13, w13_scale, w2, w2_scale[:, :1], weights, ids)
    with pytest.raises(ValueError, match="shapes disagree"):
        int8_moe(x[:, :32], w13, w13_scale, w2, w2_scale, weights, ids)
    with pytest.raises(ValueError, match="x must be an \\[M, H\\] float16/bfloat16"):
        int8_moe(x.float(), w13, w13_scale, w2, w2_scale, weights, ids)
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 4\]"):
        route(torch.zeros(2, 4), 5, renormalize=True)


def _fp8_weights(seed: int, per_channel: bool) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for shape in ((EXPERTS, 2 * INTERMEDIATE, HIDDEN), (EXPERTS, HIDDEN, INTERMEDIATE)):
        weight = torch.randn(*shape, generator=generator) / shape[2] ** 0.5
        absmax = weight.abs().amax(dim=2) if per_channel else weight.abs().amax(dim=(1, 2)).unsqueeze(1)
        scale = absmax / 448
        out += [(weight / scale.unsqueeze(2)).to(torch.float8_e4m3fn), scale, weight]
    return tuple(out)


def _vllm_quant_fp8(rows: torch.Tensor, static_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.quantization.input_quant_fp8 import QuantFP8
    from vllm.model_executor.layers.quantization.utils.quant_utils import GroupShape

    group = GroupShape.PER_TENSOR if static_scale is not None else GroupShape.PER_TOKEN
    with set_current_vllm_config(VllmConfig()):  # a CustomOp reads it when built
        quantizer = QuantFP8(static=static_scale is not None, group_shape=group)
    return quantizer.forward_native(rows, static_scale)


@pytest.mark.parametrize(("per_channel", "static"), [(True, False), (False, True), (False, False)],
                         ids=["ptpc", "per-tensor-static", "per-tensor-dynamic"])
def test_fp8_equals_a_per_token_loop_with_vllms_quantizer(per_channel: bool, static: bool) -> None:
    from vllm_rdna_w8a8.moe.reference import fp8_moe

    w13, w13_scale, _, w2, w2_scale, _ = _fp8_weights(seed=9, per_channel=per_channel)
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(7, HIDDEN, generator=generator).to(torch.bfloat16)
    weights, ids = route(torch.randn(7, EXPERTS, generator=generator), 2, renormalize=True)
    a13_scale = torch.tensor([0.02]) if static else None
    a2_scale = torch.tensor([0.002]) if static else None
    got = fp8_moe(x, w13, w13_scale, w2, w2_scale, weights, ids, a13_scale, a2_scale)
    want = torch.zeros(7, HIDDEN, dtype=torch.float32)
    for token in range(7):
        for slot in range(2):
            expert = int(ids[token, slot])
            q, q_scale = _vllm_quant_fp8(x[token:token + 1], a13_scale)
            gate_up = dense.fp8_scaled_mm(q, w13[expert], q_scale.reshape(-1), w13_scale[expert], x.dtype)
            act = (torch.nn.functional.silu(gate_up[:, :INTERMEDIATE].float())
                   * gate_up[:, INTERMEDIATE:].float()).to(x.dtype)
            q, q_scale = _vllm_quant_fp8(act, a2_scale)
            down = dense.fp8_scaled_mm(q, w2[expert], q_scale.reshape(-1), w2_scale[expert], x.dtype)
            want[token] += weights[token, slot] * down[0].float()
    assert torch.equal(got, want.to(x.dtype))


def test_fp8_bad_input_is_named() -> None:
    from vllm_rdna_w8a8.moe.reference import fp8_moe

    w13, w13_scale, _, w2, w2_scale, _ = _fp8_weights(seed=13, per_channel=True)
    x = torch.zeros(2, HIDDEN, dtype=torch.float16)
    ids = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    weights = torch.full((2, 2), 0.5)
    with pytest.raises(ValueError, match="w13 and w2 must be \\[E, N, K\\] float8_e4m3fn"):
        fp8_moe(x, w13.view(torch.int8), w13_scale, w2.view(torch.int8), w2_scale, weights, ids)
    with pytest.raises(ValueError, match=r"w13_scale must have shape \[4, 80\] or \[4, 1\]"):
        fp8_moe(x, w13, w13_scale[:, :2], w2, w2_scale, weights, ids)


@pytest.mark.parametrize(("scheme", "tolerance"), [("int8", 0.05), ("fp8", 0.1)])
def test_close_to_float64_of_the_unquantized_layer(scheme: str, tolerance: float) -> None:
    """Two W8A8 GEMMs (weights and activations quantized): a few percent of the output's
    scale for int8, more for e4m3's 3 mantissa bits."""
    from vllm_rdna_w8a8.moe.reference import fp8_moe

    if scheme == "int8":
        w13, w13_scale, w2, w2_scale, w13_float, w2_float = _weights(seed=5)
    else:
        w13, w13_scale, w13_float, w2, w2_scale, w2_float = _fp8_weights(seed=11, per_channel=True)
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(16, HIDDEN, generator=generator).half()
    weights, ids = route(torch.randn(16, EXPERTS, generator=generator), 2, renormalize=True)
    want = _float64_moe(x, w13_float, w2_float, weights, ids)
    got = (int8_moe if scheme == "int8" else fp8_moe)(x, w13, w13_scale, w2, w2_scale, weights, ids).double()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=tolerance * want.abs().max().item())
