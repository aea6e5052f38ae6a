"""The registered torch.library ops: fakes, opcheck, and which implementation runs."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from vllm_rdna_w8a8.ops import custom_ops, hip_backend, reference


def _quant_samples():
    x = torch.randn(5, 20).to(torch.float16)
    return [
        (x, None, None, True, 32),
        (x, None, None, False, 32),
        (x, torch.tensor([0.02]), None, True, 32),
        (x.to(torch.bfloat16), torch.tensor([0.02]), torch.tensor([3], dtype=torch.int32), False, 48),
    ]


def _gemm_samples():
    a = torch.randint(-128, 128, (5, 32), dtype=torch.int8)
    b = torch.randint(-128, 128, (7, 32), dtype=torch.int8)
    return [
        (a, b, torch.rand(5), torch.rand(7), torch.float16, None, None, None),
        (a, b, torch.rand(1), torch.rand(1), torch.bfloat16, torch.zeros(5, dtype=torch.int32),
         torch.ones(7, dtype=torch.int32), torch.randn(7).to(torch.bfloat16)),
    ]


@pytest.mark.parametrize("args", _quant_samples())
def test_quant_op_passes_opcheck(args) -> None:
    torch.library.opcheck(torch.ops.rdna_w8a8.scaled_int8_quant.default, args)


@pytest.mark.parametrize("args", _gemm_samples())
def test_gemm_op_passes_opcheck(args) -> None:
    torch.library.opcheck(torch.ops.rdna_w8a8.int8_scaled_mm.default, args)


def test_fakes_give_the_real_shapes_and_dtypes() -> None:
    for args in _quant_samples():
        real = torch.ops.rdna_w8a8.scaled_int8_quant(*args)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = torch.ops.rdna_w8a8.scaled_int8_quant(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
        assert [(t.shape, t.dtype) for t in fake] == [(t.shape, t.dtype) for t in real]
    for args in _gemm_samples():
        real = torch.ops.rdna_w8a8.int8_scaled_mm(*args)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = torch.ops.rdna_w8a8.int8_scaled_mm(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
        assert (fake.shape, fake.dtype) == (real.shape, real.dtype)


def test_wrapper_returns_the_callers_static_scale_and_zero_point() -> None:
    x = torch.randn(3, 16).to(torch.float16)
    scale, azp = torch.tensor([0.1]), torch.tensor([4], dtype=torch.int32)
    q, out_scale, out_azp = custom_ops.scaled_int8_quant(x, scale, azp, symmetric=False)
    assert out_scale is scale and out_azp is azp
    q_ref, _, _ = reference.scaled_int8_quant(x, scale, azp, symmetric=False)
    assert torch.equal(q, q_ref)
    _, dynamic_scale, dynamic_azp = custom_ops.scaled_int8_quant(x)
    assert dynamic_scale.shape == (3,) and dynamic_azp is None


def test_cpu_tensors_run_the_reference(monkeypatch) -> None:
    monkeypatch.delenv("VLLM_RDNA_W8A8_EMULATE", raising=False)
    assert custom_ops._implementation(torch.zeros(1)) is reference


def test_emulated_cpu_runs_the_hip_backend_unless_forced_to_reference(monkeypatch) -> None:
    from vllm_rdna_w8a8.scaled_mm import support

    monkeypatch.setattr(support, "emulated_target", lambda: "gfx1100")
    assert custom_ops._implementation(torch.zeros(1)) is hip_backend
    monkeypatch.setenv("VLLM_RDNA_W8A8_OPS", "reference")
    assert custom_ops._implementation(torch.zeros(1)) is reference


def test_compiled_graph_keeps_the_ops_opaque() -> None:
    def layer(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
        q, scale, _ = custom_ops.scaled_int8_quant(x, padded_k=w.shape[1])
        return custom_ops.int8_scaled_mm(q, w, scale, w_scale, x.dtype)

    x = torch.randn(4, 32).to(torch.float16)
    w = torch.randint(-128, 128, (8, 32), dtype=torch.int8)
    w_scale = torch.rand(8)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, w, w_scale), layer(x, w, w_scale), rtol=0, atol=0)


def test_fp8_gemm_op_passes_opcheck_and_its_fake_matches() -> None:
    a = torch.randn(5, 32).to(torch.float8_e4m3fn)
    b = torch.randn(7, 32).to(torch.float8_e4m3fn)
    args = (a, b, torch.rand(5), torch.rand(1), torch.bfloat16, torch.randn(7).to(torch.bfloat16))
    # test_schema compares fp8 inputs with ops the CPU build lacks for float8: skip that one.
    torch.library.opcheck(torch.ops.rdna_w8a8.fp8_scaled_mm.default, args,
                          test_utils=("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))
    real = custom_ops.fp8_scaled_mm(*args)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = torch.ops.rdna_w8a8.fp8_scaled_mm(*(mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in args))
    assert (fake.shape, fake.dtype) == (real.shape, real.dtype) == ((5, 7), torch.bfloat16)
