"""The host side of the MoE grouped GEMMs (moe/hip_backend.py) without launching a kernel: the
routing built in torch ops (`expert_blocks`) against the reference's sort, the stored weight
layout, and the argument errors. The kernels run against the reference in
tests/kernels/test_moe_gemm.py."""

from __future__ import annotations

import pytest
import torch

from vllm_rdna_w8a8.moe import reference as moe_reference
from vllm_rdna_w8a8.moe import hip_backend as moe_hip


def _check_routing(ids: torch.Tensor, num_experts: int, block_m: int) -> moe_hip.ExpertBlocks:
    blocks = moe_hip.expert_blocks(ids, num_experts, block_m)
    order = moe_reference.sort_by_expert(ids, num_experts)
    slots = blocks.sorted_slots.long()
    assert blocks.sorted_slots.dtype == torch.int32 and blocks.block_experts.dtype == torch.int32
    assert slots.numel() == blocks.blocks * block_m and blocks.block_experts.numel() == blocks.blocks
    # Without the padding: the reference's order (by expert, token order within one).
    assert torch.equal(slots[slots != moe_hip.PADDING_SLOT], order.slots)
    row_experts = blocks.block_experts.long().repeat_interleave(block_m)
    for expert in range(num_experts):
        rows = (row_experts == expert).nonzero().flatten()
        want = order.slots[order.offsets[expert]:order.offsets[expert + 1]]
        # Each expert: whole blocks, its slots first, then padding up to the block edge.
        assert rows.numel() == -(-want.numel() // block_m) * block_m
        if rows.numel():
            assert torch.equal(rows, torch.arange(rows[0], rows[0] + rows.numel()))
            assert torch.equal(slots[rows[:want.numel()]], want)
            assert (slots[rows[want.numel():]] == moe_hip.PADDING_SLOT).all()
    surplus = blocks.block_experts == moe_hip.NO_EXPERT
    assert (slots.reshape(blocks.blocks, block_m)[surplus] == moe_hip.PADDING_SLOT).all()
    # The surplus blocks come last.
    assert not surplus.any() or surplus[int(surplus.nonzero()[0]):].all()
    return blocks


@pytest.mark.parametrize("block_m", [16, 64, 128])
def test_expert_blocks_pad_the_reference_sort_to_whole_row_blocks(block_m: int) -> None:
    generator = torch.Generator().manual_seed(0)
    for tokens, experts, top_k in [(1, 8, 2), (7, 4, 4), (40, 6, 2), (300, 8, 3)]:
        _, ids = moe_reference.route(torch.randn(tokens, experts, generator=generator), top_k, True)
        _check_routing(ids, experts, block_m)


def test_expert_blocks_of_idle_experts_and_one_busy_expert() -> None:
    ids = torch.tensor([[3, 0]] * 20, dtype=torch.int64)  # experts 1 and 2 idle, 20 slots each for 0 and 3
    blocks = _check_routing(ids, 4, 16)
    assert blocks.block_experts.tolist()[:4] == [0, 0, 3, 3]
    # The bound: 40 slots over at most 4 experts, each wasting at most 15 rows -> 6 blocks.
    assert blocks.blocks == (40 + 4 * 15) // 16 == 6 and blocks.block_experts.tolist()[4:] == [-1, -1]


def test_expert_blocks_bound_counts_only_experts_that_can_have_slots() -> None:
    ids = torch.tensor([[5, 1]], dtype=torch.int32)  # one token, 128 experts: at most 2 busy experts
    blocks = _check_routing(ids, 128, 16)
    assert blocks.blocks == (2 + 2 * 15) // 16 == 2 and blocks.block_experts.tolist() == [1, 5]


@pytest.mark.parametrize(("k", "row_stride"), [(40, 48), (48, 48), (2048, 2048 + 128)])
def test_stored_expert_weights_keep_their_values_and_shape(k: int, row_stride: int) -> None:
    generator = torch.Generator().manual_seed(1)
    w13 = torch.randint(-128, 128, (3, 32, k), dtype=torch.int8, generator=generator)
    w2 = torch.randint(-128, 128, (3, k, 16), dtype=torch.int8, generator=generator)
    stored13, stored2 = moe_hip.prepare_int8_moe_weights(w13, w2)
    assert torch.equal(stored13, w13) and torch.equal(stored2, w2)
    assert stored13.stride() == (32 * row_stride, row_stride, 1) and stored2.stride(1) == 16  # K = 16: no padding
    padding = torch.as_strided(stored13, (3, 32, row_stride), stored13.stride())[:, :, k:]
    assert (padding == 0).all()
    assert moe_hip._readable_in_place(stored13) and moe_hip._readable_in_place(stored2)


def test_weights_the_kernels_cannot_read_in_place_are_recognised() -> None:
    contiguous = torch.zeros(2, 16, 40, dtype=torch.int8)  # K = 40: rows end before K_pad = 48
    assert not moe_hip._readable_in_place(contiguous)
    assert moe_hip._readable_in_place(torch.zeros(2, 16, 48, dtype=torch.int8))
    assert not moe_hip._readable_in_place(torch.zeros(2, 48, 16, dtype=torch.int8).transpose(1, 2))
    # The last row of a view must still have K_pad readable bytes.
    short = torch.zeros(2 * 16 * 48 - 8, dtype=torch.int8)
    assert not moe_hip._readable_in_place(short.as_strided((2, 16, 40), (16 * 48, 48, 1)))
    assert moe_hip._readable_in_place(torch.zeros(2 * 16 * 48, dtype=torch.int8).as_strided((2, 16, 40), (16 * 48, 48, 1)))


def _layer(dtype: torch.dtype = torch.float16) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 32, generator=generator).to(dtype)
    w13 = torch.randint(-128, 128, (4, 16, 32), dtype=torch.int8, generator=generator)
    w2 = torch.randint(-128, 128, (4, 32, 8), dtype=torch.int8, generator=generator)
    weights, ids = moe_reference.route(torch.randn(3, 4, generator=generator), 2, True)
    return [x, w13, torch.ones(4, 16), w2, torch.ones(4, 32), weights, ids]


@pytest.mark.parametrize(("position", "value", "error", "message"), [
    (2, torch.ones(4, 16, dtype=torch.float64), TypeError, "w13_scale must be float32"),
    (4, torch.ones(4, 1), ValueError, r"w2_scale must have shape \[4, 32\]"),
    (6, torch.tensor([[0, 4], [1, 2], [2, 3]]), ValueError, r"topk_ids must lie in \[0, 4\)"),
    (6, torch.tensor([[1, 1], [1, 2], [2, 3]]), ValueError, "same expert twice"),
    (5, torch.ones(3, 2, dtype=torch.int32), TypeError, "topk_weights must be a floating-point tensor"),
    (0, torch.zeros(3, 32), ValueError, "x must be an \\[M, H\\] float16/bfloat16"),
])
def test_bad_arguments_are_named_before_any_launch(position: int, value: torch.Tensor, error: type,
                                                   message: str) -> None:
    args = _layer()
    args[position] = value
    with pytest.raises(error, match=message):
        moe_hip.int8_moe(*args)


def test_grouped_gemm_refuses_operands_that_do_not_fit() -> None:
    ids = torch.tensor([[0, 1]], dtype=torch.int32)
    a, a_scale = torch.zeros(1, 32, dtype=torch.int8), torch.ones(1)
    weight, scale = torch.zeros(2, 16, 40, dtype=torch.int8), torch.ones(2, 16)
    with pytest.raises(ValueError, match="a needs 48 columns"):
        moe_hip.grouped_gemm(a, a_scale, weight, scale, ids, 2, torch.float16)
    with pytest.raises(ValueError, match=r"weight_scale must be float32 \[2, 16\]"):
        moe_hip.grouped_gemm(torch.zeros(1, 48, dtype=torch.int8), a_scale, weight, scale[:1], ids, 2,
                             torch.float16)
    with pytest.raises(ValueError, match="one row per 1 slots"):
        moe_hip.grouped_gemm(torch.zeros(1, 48, dtype=torch.int8), a_scale, weight, scale, ids, 1,
                             torch.float16)
    with pytest.raises(TypeError, match="must both be int8 or both float8_e4m3fn"):
        moe_hip.grouped_gemm(torch.zeros(1, 48, dtype=torch.int8), a_scale, weight.to(torch.float8_e4m3fn), scale,
                             ids, 2, torch.float16)


def test_kernel_names_follow_the_activation_dtype() -> None:
    from vllm_rdna_w8a8.dispatch import load_tile_configs

    config = load_tile_configs()[0]
    assert moe_hip.moe_kernel_name(config, torch.bfloat16) == f"w8a8_i8_moe_bf16_gemm_{config.tag}"
    assert moe_hip.moe_kernel_name(config, torch.float16) == f"w8a8_i8_moe_f16_gemm_{config.tag}"
    assert moe_hip.moe_kernel_name(config, torch.bfloat16, "f8") == f"w8a8_f8_moe_bf16_gemm_{config.tag}"


def test_fp8_weights_with_padding_columns_are_re_stored_with_zeros() -> None:
    """fp8 padding is read only when it is known zero: a padding byte could be an e4m3fn NaN
    (0x7f), and 0 * NaN is NaN where int8 padding adds nothing."""
    nan_padded = torch.full((2 * 16 * 48,), 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn)
    view = nan_padded.as_strided((2, 16, 40), (16 * 48, 48, 1))
    assert not moe_hip._readable_in_place(view)
    assert moe_hip._readable_in_place(torch.zeros(2, 16, 48, dtype=torch.float8_e4m3fn))
    stored = moe_hip.store_expert_weight(view)
    assert stored.dtype == torch.float8_e4m3fn and stored.shape == view.shape
    assert torch.equal(stored.view(torch.uint8), view.view(torch.uint8))
    padding = torch.as_strided(stored, (2, 16, 48), stored.stride())[:, :, 40:]
    assert (padding.view(torch.uint8) == 0).all()


def _fp8_layer() -> list[torch.Tensor | None]:
    x, w13, _, w2, _, weights, ids = _layer()
    return [x, w13.to(torch.float8_e4m3fn), torch.ones(4, 1), w2.to(torch.float8_e4m3fn), torch.ones(4, 32),
            weights, ids, None, None]


@pytest.mark.parametrize(("position", "value", "error", "message"), [
    (2, torch.ones(4, 16, dtype=torch.float64), TypeError, "w13_scale must be float32"),
    (4, torch.ones(4, 2), ValueError, r"w2_scale must have shape \[4, 32\] or \[4, 1\]"),
    (1, torch.zeros(4, 16, 32, dtype=torch.int8), ValueError, "w13 and w2 must be .* float8_e4m3fn"),
    (7, torch.ones(2), ValueError, "a13_scale must be None .* or a floating-point tensor with one element"),
    (8, torch.ones(1, dtype=torch.int32), ValueError, "a2_scale must be None"),
    (8, torch.ones(1, device="meta"), ValueError, "a2_scale is on meta"),
    (6, torch.tensor([[0, 4], [1, 2], [2, 3]]), ValueError, r"topk_ids must lie in \[0, 4\)"),
])
def test_bad_fp8_arguments_are_named_before_any_launch(position: int, value: torch.Tensor, error: type,
                                                       message: str) -> None:
    args = _fp8_layer()
    args[position] = value
    with pytest.raises(error, match=message):
        moe_hip.fp8_moe(*args)


@pytest.mark.parametrize("gate_up", [torch.zeros(3, 7, dtype=torch.float16), torch.zeros(3, 8),
                                     torch.zeros(8, dtype=torch.bfloat16)])
def test_silu_and_mul_quant_names_a_gate_up_it_cannot_read(gate_up: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"gate_up must be a \[rows, 2I\] float16/bfloat16 tensor"):
        moe_hip.silu_and_mul_quant(gate_up)
