"""One launch per int8 linear layer at decode M: `int8_quant_scaled_mm` (what the int8 kernel
class's apply_weights calls) on the emulated gfx1100, every launch counted where it reaches the HIP
runtime, outputs bit for bit against the two launches it replaces (`scaled_int8_quant`, then
`int8_scaled_mm`, on our kernels) and against the reference."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import torch
    from vllm_rdna_w8a8.ops import custom_ops, hip_backend, reference
    from vllm_rdna_w8a8.testing.launch_counter import counted_launches

    counting = counted_launches()
    launched = counting.__enter__()  # counts for the rest of the script
    assert custom_ops._implementation(torch.zeros(1)) is hip_backend
    generator = torch.Generator().manual_seed(3)
    checked = 0
    for dtype in (torch.float16, torch.bfloat16):
        for m, n, k, ldx in [(1, 48, 64, 64), (5, 40, 40, 48), (16, 70, 56, 56), (17, 32, 48, 48),
                             (3, 32, 100, 100)]:
            for static in (False, True):
                for symmetric in (True, False):
                    x = (torch.randn(m, ldx, generator=generator) * 2).to(dtype)[:, :k]
                    x[0] = 0
                    k_pad = -(-k // 16) * 16
                    weight = torch.randint(-128, 128, (n, k_pad), dtype=torch.int8, generator=generator)
                    weight[:, k:] = 0
                    weight_scale = torch.rand(n if symmetric else 1, generator=generator) * 0.01
                    x_scale = torch.tensor([0.03]) if static else None
                    x_azp = torch.tensor([5], dtype=torch.int32) if static and not symmetric else None
                    azp_adj = None if symmetric else weight.sum(dim=1, dtype=torch.int32) * (5 if static else 1)
                    bias = torch.randn(n, generator=generator).to(dtype) if static else None
                    args = (x, weight, x_scale, x_azp, symmetric, weight_scale, dtype, azp_adj, bias)
                    launched.clear()
                    out = custom_ops.int8_quant_scaled_mm(*args)
                    fused_launches = list(launched)
                    q, a_scale, zero_point = custom_ops.scaled_int8_quant(x, x_scale, x_azp, symmetric, k_pad)
                    two = custom_ops.int8_scaled_mm(q, weight, a_scale, weight_scale, dtype,
                                                    None if static else zero_point, azp_adj, bias)
                    what = (dtype, m, n, k, static, symmetric, fused_launches)
                    one_launch = m <= 16 and k % 8 == 0
                    if one_launch:
                        assert len(fused_launches) == 1 and fused_launches[0].startswith("w8a8_i8q_"), what
                    else:  # past one decode tile, or rows that do not load whole: two launches
                        assert [name[:13] for name in fused_launches] == ["w8a8_quant_i8", "w8a8_i8_gemm_"], what
                    assert torch.equal(out.view(torch.int16), two.view(torch.int16)), what
                    assert torch.equal(out.view(torch.int16),
                                       reference.int8_quant_scaled_mm(*args).view(torch.int16)), what
                    checked += 1
    print("CHECKED", checked)
    """
)


def test_int8_layer_at_decode_m_is_one_launch_with_the_two_launch_bits() -> None:
    env = {**os.environ, "VLLM_RDNA_W8A8_EMULATE": "gfx1100"}
    env.pop("VLLM_RDNA_W8A8_OPS", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CHECKED 40" in result.stdout
