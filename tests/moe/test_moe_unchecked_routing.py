"""Routing ids where moe/hip_backend.py does not check them (on a GPU, where the check would read
them back to the host on every call): an id outside [0, E) indexes nothing out of bounds and
adds nothing to its token. The GPU path is taken on the emulated gfx1100 (CPU tensors) by
emptying HOST_CHECKED_DEVICES."""

from __future__ import annotations

import pytest
import torch

from vllm_rdna_w8a8 import settings
from vllm_rdna_w8a8.moe import hip_backend as moe_hip
from vllm_rdna_w8a8.moe import reference as moe_reference

EXPERTS = 4
OUT_OF_RANGE = torch.tensor([[0, -1], [EXPERTS, 2], [3, 1], [-7, 2 ** 31 - 1]], dtype=torch.int32)


@pytest.mark.parametrize("block_m", [16, 64])
def test_expert_blocks_index_only_real_experts_and_slots(block_m: int) -> None:
    blocks = moe_hip.expert_blocks(OUT_OF_RANGE, EXPERTS, block_m)
    experts, slots = blocks.block_experts.long(), blocks.sorted_slots.long()
    assert ((experts == moe_hip.NO_EXPERT) | ((experts >= 0) & (experts < EXPERTS))).all()
    assert torch.equal(slots[slots != moe_hip.PADDING_SLOT].sort().values, torch.arange(OUT_OF_RANGE.numel()))
    # As the nearest expert: the same blocks as for the ids clamped into [0, E).
    clamped = moe_hip.expert_blocks(OUT_OF_RANGE.clamp(0, EXPERTS - 1), EXPERTS, block_m)
    assert torch.equal(blocks.sorted_slots, clamped.sorted_slots)
    assert torch.equal(blocks.block_experts, clamped.block_experts)


def test_out_of_range_ids_add_nothing_on_the_emulated_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp8_moe on the emulated gfx1100 kernels, weights in {0, +-1} (float32 sums exact, so bit
    for bit with the reference; moe/hip_backend.py): the result is the reference's for the same
    tokens with the out-of-range slots' weights 0 (their ids replaced by a real expert the
    token has not got, as the reference needs)."""
    monkeypatch.setenv(settings.EMULATE_ENV, "gfx1100")
    monkeypatch.delenv(settings.OPS_ENV, raising=False)
    monkeypatch.setattr(moe_hip, "HOST_CHECKED_DEVICES", ())
    generator = torch.Generator().manual_seed(31)
    hidden, intermediate = 48, 32
    w13 = torch.randint(-1, 2, (EXPERTS, 2 * intermediate, hidden), generator=generator).to(torch.float8_e4m3fn)
    w2 = torch.randint(-1, 2, (EXPERTS, hidden, intermediate), generator=generator).to(torch.float8_e4m3fn)
    w13_scale, w2_scale = torch.full((EXPERTS, 1), 0.25), torch.full((EXPERTS, 1), 0.5)
    x = torch.randn(4, hidden, generator=generator).to(torch.bfloat16)
    topk_weights = torch.tensor([[0.75, 0.25], [0.5, 0.5], [0.625, 0.375], [0.875, 0.125]])
    got = moe_hip.fp8_moe(x, w13, w13_scale, w2, w2_scale, topk_weights, OUT_OF_RANGE)

    outside = (OUT_OF_RANGE < 0) | (OUT_OF_RANGE >= EXPERTS)
    real_ids = torch.where(outside, torch.tensor([[1, 1], [0, 0], [0, 0], [0, 1]], dtype=torch.int32), OUT_OF_RANGE)
    want = moe_reference.fp8_moe(x, w13, w13_scale, w2, w2_scale, topk_weights.masked_fill(outside, 0), real_ids)
    assert torch.isfinite(want.float()).all() and want.abs().max() > 0
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    # Where the host checks them (CPU tensors), the same ids are an error naming them.
    monkeypatch.setattr(moe_hip, "HOST_CHECKED_DEVICES", ("cpu",))
    with pytest.raises(ValueError, match=r"topk_ids must lie in \[0, 4\)"):
        moe_hip.fp8_moe(x, w13, w13_scale, w2, w2_scale, topk_weights, OUT_OF_RANGE)
