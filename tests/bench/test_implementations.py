"""The benchmark compares like with like: our op and the torch._int_mm baseline compute the
same fp16 result (checked on the CPU, where our op runs its plain-torch reference)."""

from __future__ import annotations

import pytest


@pytest.mark.slow  # imports vLLM (~10 s)
def test_ours_and_int_mm_baseline_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("vllm")
    from vllm_rdna_w8a8.bench.run import implementations

    monkeypatch.delenv("VLLM_RDNA_W8A8_EMULATE", raising=False)
    monkeypatch.setenv("VLLM_RDNA_W8A8_OPS", "reference")
    impls = implementations()
    assert set(impls) == {"ours", "triton_scaled_mm", "int_mm_dequant"}
    generator = torch.Generator().manual_seed(0)
    m, n, k = 33, 48, 64
    inputs = (
        torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=generator),
        torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=generator),
        torch.rand(m, generator=generator) / 64,
        torch.rand(n, generator=generator) / 64,
    )
    ours = impls["ours"](inputs)
    baseline = impls["int_mm_dequant"](inputs)
    assert ours.dtype == baseline.dtype == torch.float16 and ours.shape == (m, n)
    torch.testing.assert_close(ours, baseline, rtol=1e-3, atol=1e-3)
