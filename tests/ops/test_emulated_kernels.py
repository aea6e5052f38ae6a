"""The ops on our HIP kernels, run by the emulated gfx11 backend, against the reference.

Runs in a subprocess with VLLM_RDNA_W8A8_EMULATE set (the emulator library is built
on first use). Quantization and GEMM results must equal the reference bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import torch
    from vllm_rdna_w8a8.ops import custom_ops, hip_backend, reference

    assert custom_ops._implementation(torch.zeros(1)) is hip_backend
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for dtype in (torch.float16, torch.bfloat16):
        for m, n, k in [(1, 48, 64), (33, 40, 80), (7, 130, 40)]:
            x = (torch.randn(m, k, generator=generator) * 2).to(dtype)
            x[0] = 0
            for symmetric in (True, False):
                q, scale, azp = custom_ops.scaled_int8_quant(x, symmetric=symmetric)
                q_ref, scale_ref, azp_ref = reference.scaled_int8_quant(x, symmetric=symmetric)
                assert torch.equal(q, q_ref) and torch.equal(scale, scale_ref), (dtype, m, k, symmetric)
                assert (azp is None and azp_ref is None) or torch.equal(azp, azp_ref)
                weight = torch.randint(-128, 128, (n, q.shape[1]), dtype=torch.int8, generator=generator)
                weight[:, k:] = 0
                weight_scale = torch.rand(n, generator=generator) * 0.01
                azp_adj = None if symmetric else weight.sum(dim=1, dtype=torch.int32)
                bias = torch.randn(n, generator=generator).to(dtype)
                args = (q, weight, scale, weight_scale, dtype, azp, azp_adj, bias)
                assert torch.equal(custom_ops.int8_scaled_mm(*args), reference.int8_scaled_mm(*args))
                checked += 1
    static = custom_ops.scaled_int8_quant(x, torch.tensor([0.03]), torch.tensor([5], dtype=torch.int32),
                                          symmetric=False)[0]
    assert torch.equal(static, reference.scaled_int8_quant(x, torch.tensor([0.03]),
                                                           torch.tensor([5], dtype=torch.int32), False)[0])
    for dtype in (torch.float16, torch.bfloat16):
        a = (torch.randn(17, 64, generator=generator) * 50).clamp(-448, 448).to(torch.float8_e4m3fn)
        b = (torch.randn(40, 64, generator=generator) * 50).clamp(-448, 448).to(torch.float8_e4m3fn)
        args = (a, b, torch.rand(17, generator=generator), torch.rand(40, generator=generator), dtype,
                torch.randn(40, generator=generator).to(dtype))
        out, want = custom_ops.fp8_scaled_mm(*args), reference.fp8_scaled_mm(*args)
        # fp32 sums in the kernel vs exact sums here: within the output dtype's rounding.
        torch.testing.assert_close(out, want, rtol=2 * torch.finfo(dtype).eps, atol=1e-2)
        checked += 1
    print("CHECKED", checked)
    """
)


@pytest.mark.slow
def test_hip_backend_on_the_emulated_gfx11_equals_the_reference() -> None:
    env = {**os.environ, "VLLM_RDNA_W8A8_EMULATE": "gfx1100"}
    env.pop("VLLM_RDNA_W8A8_OPS", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CHECKED 14" in result.stdout


NARROW_ROWS_SCRIPT = textwrap.dedent(
    """
    import torch
    from vllm_rdna_w8a8.ops import custom_ops, hip_backend, reference

    assert custom_ops._implementation(torch.zeros(1)) is hip_backend
    # Issue 11: rows of 128 fp16 values in [1000, 1000.5] quantize with a tiny scale and
    # azp -510128; azp * azp_adj (weights all 64: 8192) leaves int32.
    x = torch.full((2, 128), 1000.0, dtype=torch.float16)
    x[:, 1::2] = 1000.5
    x[1, 2:40:3] = 1000.5
    weight = torch.full((16, 128), 64, dtype=torch.int8)
    weight_scale = torch.full((16,), 0.001)
    azp_adj = weight.sum(dim=1, dtype=torch.int32)
    q, scale, azp = custom_ops.scaled_int8_quant(x, symmetric=False)
    assert azp.tolist() == [-510128, -510128], azp
    out = custom_ops.int8_scaled_mm(q, weight, scale, weight_scale, torch.float16, azp, azp_adj)
    assert torch.equal(out, reference.int8_scaled_mm(q, weight, scale, weight_scale, torch.float16,
                                                     azp, azp_adj)), out
    exact = x.double() @ (weight.double() * weight_scale.double()[:, None]).T
    step = 8.0  # fp16 spacing in [4096, 8192] and [8192, 16384): 4 and 8
    assert ((out.double() - exact).abs() <= step).all(), (out, exact)
    print("NARROW ROWS OK", out[:, 0].tolist(), exact[:, 0].tolist())
    """
)


@pytest.mark.slow  # ~10 s: a subprocess on the emulator library (tests/kernels checks the kernel fast)
def test_asymmetric_rows_whose_zero_point_term_leaves_int32_match_float64() -> None:
    env = {**os.environ, "VLLM_RDNA_W8A8_EMULATE": "gfx1100"}
    env.pop("VLLM_RDNA_W8A8_OPS", None)
    result = subprocess.run([sys.executable, "-c", NARROW_ROWS_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NARROW ROWS OK" in result.stdout


DAMAGED_OBJECT_SCRIPT = """
import torch
from vllm_rdna_w8a8.ops import custom_ops

a, b = torch.zeros((2, 32), dtype=torch.int8), torch.zeros((16, 32), dtype=torch.int8)
try:
    custom_ops.int8_scaled_mm(a, b, torch.ones(1), torch.ones(1), torch.float16)
except launcher.KernelNotAvailable as exc:
    print("REFUSED", exc)
"""


def test_gemm_on_a_code_object_with_its_symbol_table_past_the_file_is_refused(tmp_path) -> None:
    # Issue 11: .symtab's section offset pointed past the file made the op segfault.
    from vllm_rdna_w8a8.testing.damaged_code_object import run_emulated_on, shipped_with_section_past_the_end

    objects = tmp_path / "objects"
    gemm = shipped_with_section_past_the_end(objects, "int8_gemm.hsaco", ".symtab")
    result = run_emulated_on(objects, DAMAGED_OBJECT_SCRIPT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"code object unusable: {gemm}: truncated or damaged (section 12, 0x7fff00000000" in result.stdout
