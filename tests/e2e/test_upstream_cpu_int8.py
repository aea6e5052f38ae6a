"""Why the tiny int8 checkpoint bounds its weights to +-64 (TinyModelSpec.int8_weight_limit).

vLLM's CPU int8 GEMM (oneDNN) is the upstream baseline of the end-to-end token checks. On
x86 CPUs without VNNI, oneDNN adds pairs of u8 x s8 products in 16-bit registers, which
saturate for full-range weights; with |w| <= 64 the pair sums fit and the kernel is exact.
"""

from __future__ import annotations

import pytest
import torch

from vllm_rdna_w8a8.cpu_stack import describe, onednn_int8_sums_exact
from vllm_rdna_w8a8.testing.tiny_model import TinyModelSpec

pytestmark = pytest.mark.slow


def _upstream_int8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """vLLM's CPU int8 path for a symmetric, dynamic per-token layer (as CPUInt8ScaledMMLinearKernel)."""
    from vllm import _custom_ops as ops

    previous = torch.get_default_dtype()
    torch.set_default_dtype(x.dtype)  # the kernel's output dtype is the model's default dtype
    try:
        handler = ops.create_onednn_scaled_mm(weight.t(), weight_scale, x.dtype, True, False, 32)
    finally:
        torch.set_default_dtype(previous)
    x_q, x_scale, x_zp = ops.onednn_scaled_int8_quant(x, None, None, True)
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    ops.onednn_scaled_mm(handler, x_q, out, x_scale, x_zp, None, None)
    return out


def _exact(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    x64 = x.double()
    absmax = x64.abs().amax(dim=1, keepdim=True)
    x_q = torch.round(x64 * (127.0 / absmax)).clamp(-128, 127)
    return (x_q @ weight.double().t()) * (absmax / 127.0) * weight_scale.double().t()


def _max_relative_error(limit: int) -> float:
    generator = torch.Generator().manual_seed(0)
    m, k, n = 8, 344, 128  # down_proj of the tiny model
    x = torch.randn(m, k, generator=generator).half()
    weight = torch.randint(-limit, limit + 1, (n, k), generator=generator, dtype=torch.int8)
    weight_scale = torch.full((n, 1), 1e-2)
    exact = _exact(x, weight, weight_scale)
    error = (_upstream_int8_linear(x, weight, weight_scale).double() - exact).abs().amax()
    return float(error / exact.abs().amax())


def test_upstream_int8_exact_with_the_tiny_model_weight_range() -> None:
    # fp16 output rounding only (2^-11 relative, a few ulps of slack), on every CPU class
    assert _max_relative_error(TinyModelSpec().int8_weight_limit) < 4e-3, describe()


def test_upstream_int8_full_range_weights_on_this_cpu() -> None:
    error = _max_relative_error(127)
    if onednn_int8_sums_exact():
        assert error < 4e-3, describe()
    else:
        # saturated 16-bit pair sums: far beyond fp16 rounding
        assert error > 0.05, f"expected oneDNN's saturation on {describe()}, got relative error {error}"
