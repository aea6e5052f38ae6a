"""The exact math of the `rdna_w8a8` ops in plain torch: the tests' oracle.

Not a production path (it materialises float copies and runs on whatever device the
tensors are on); the ops use it on the CPU and when `VLLM_RDNA_W8A8_OPS=reference`.

Quantization is bit-compatible with vLLM's `scaled_int8_quant` kernel
(csrc/quantization/w8a8/int8/scaled_quant.cu, ROCm path) and with our
kernels/quant_int8.hip, computed in float32 like both:
- dynamic symmetric:  scale = absmax / 127;  q = sat8(rne(x * (absmax == 0 ? 0 : 127 / absmax)))
- dynamic asymmetric: scale = (max - min) / 255;  azp = sat32(rne(-128 - min / scale));
                      q = sat8(sat32(rne(x * (1 / scale))) + azp)   (the int32 sum wraps)
- static symmetric:   q = sat8(rne(x / scale))   (a division, as upstream)
- static asymmetric:  q = sat8(sat32(rne(x * (1 / scale))) + azp)
rne is round-half-to-even (nearbyint); float -> int conversions give 0 for NaN (the
hardware's answer). Consequences, where vLLM leaves the result to the hardware:
- a row of zeros gives q 0, scale 0 (azp 0): never NaN;
- absmax / min / max skip NaN (fmaxf / fminf, starting from 0 resp. +-FLT_MAX), so an
  all-NaN row gives symmetric scale 0, asymmetric scale -inf and azp -128;
- an inf element makes the dynamic scale inf and the row's q 0 (asymmetric: sat8(azp));
  static scales saturate +-inf to 127 / -128;
- a constant non-zero row (asymmetric) has scale 0: its output is 0 whatever q and azp.
Columns K..padded_k-1 of q are 0.

GEMM (int8; fp8 alike without zero points, see fp8_scaled_mm):
acc[m, n] = sum_k a[m, k] * b[n, k] exactly (int32 in the kernel, which holds it for
K <= 131071, validation.MAX_INT8_K); acc -= azp[m] * azp_adj[n] (azp_adj[n] alone when
azp is None: static zero point folded in) exactly in int64, as the kernel does (upstream
wraps this term in int32; the results agree wherever that does not wrap);
out = a_scale * (b_scale * float32(acc)) + bias in float32 (the kernel's fused
multiply-add), then rounded to the output dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vllm_rdna_w8a8.ops.validation import check_gemm_args, check_quant_args, check_quant_gemm_args
from vllm_rdna_w8a8.ops.validation import padded_k as round_up_k

_INT8_MIN, _INT8_MAX = -128, 127
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_FLOAT32_MAX = torch.finfo(torch.float32).max


def _round_to_int(values: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Round half to even, NaN -> 0, saturate to [low, high]; returns int64."""
    rounded = torch.nan_to_num(values.double().round(), nan=0.0, posinf=high, neginf=low)
    return rounded.clamp(low, high).to(torch.int64)


def _divide(numerator: float, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator with one rounding, as the kernels divide.

    (`127.0 / tensor` in torch is reciprocal() then multiply: two roundings, which
    moves x * (127 / absmax) off the kernels' value at ties.)
    """
    return torch.full_like(denominator, numerator) / denominator


def _int32_wrapping_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b of int32 values with two's-complement wrap-around (as the GPU adds)."""
    return (a + b + 2**31) % 2**32 - 2**31


def _asymmetric_q(values: torch.Tensor, inverse: torch.Tensor, azp: torch.Tensor) -> torch.Tensor:
    shifted = _round_to_int(values * inverse, _INT32_MIN, _INT32_MAX)
    return _int32_wrapping_add(shifted, azp).clamp(_INT8_MIN, _INT8_MAX).to(torch.int8)


def _pad_columns(q: torch.Tensor, padded_k: int) -> torch.Tensor:
    out = torch.zeros((q.shape[0], padded_k), dtype=torch.int8, device=q.device)
    out[:, : q.shape[1]] = q
    return out


def scaled_int8_quant(
    x: torch.Tensor,
    scale: torch.Tensor | None = None,
    azp: torch.Tensor | None = None,
    symmetric: bool = True,
    padded_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x [M, K] fp16/bf16 -> (q [M, padded_k] int8, scale, azp or None).

    `padded_k` defaults to K rounded up to 16.
    Dynamic (scale None): scale [M] float32, azp [M] int32 when asymmetric.
    Static: the given scale [1] (and azp [1] int32 when asymmetric) are returned as is.
    """
    k_out = round_up_k(x.shape[-1]) if padded_k is None and isinstance(x, torch.Tensor) else padded_k
    check_quant_args(x, scale, azp, symmetric, k_out)
    values = x.float()
    if scale is None:
        if symmetric:
            no_nan = torch.nan_to_num(values, nan=0.0, posinf=torch.inf, neginf=-torch.inf)
            absmax = no_nan.abs().amax(dim=1)
            inverse = torch.where(absmax == 0, 0.0, _divide(127.0, absmax))
            q = _round_to_int(values * inverse[:, None], _INT8_MIN, _INT8_MAX).to(torch.int8)
            return _pad_columns(q, k_out), absmax / 127.0, None
        row_max = torch.where(values.isnan(), -_FLOAT32_MAX, values).amax(dim=1)
        row_min = torch.where(values.isnan(), _FLOAT32_MAX, values).amin(dim=1)
        row_scale = (row_max - row_min) / 255.0
        row_azp = _round_to_int(-128.0 - row_min / row_scale, _INT32_MIN, _INT32_MAX)
        q = _asymmetric_q(values, _divide(1.0, row_scale)[:, None], row_azp[:, None])
        return _pad_columns(q, k_out), row_scale, row_azp.to(torch.int32)
    static_scale = scale.reshape(()).float()
    if symmetric:
        q = _round_to_int(values / static_scale, _INT8_MIN, _INT8_MAX).to(torch.int8)
        return _pad_columns(q, k_out), scale, None
    q = _asymmetric_q(values, _divide(1.0, static_scale), azp.reshape(()).to(torch.int64))
    return _pad_columns(q, k_out), scale, azp


def _epilogue(acc: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor, bias: torch.Tensor | None,
              out_dtype: torch.dtype) -> torch.Tensor:
    # The kernels' epilogue order (kernels/common/epilogue.h):
    # fma(a_scale, b_scale * float32(acc), bias); the fma is done in float64 here.
    column_scaled = b_scale.reshape(1, -1).float() * acc.float()
    out = a_scale.reshape(-1, 1).double() * column_scaled.double()
    if bias is not None:
        out = out + bias.reshape(1, -1).double()
    return out.float().to(out_dtype)


def int8_scaled_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    azp: torch.Tensor | None = None,
    azp_adj: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """a [M, K] int8 x b [N, K] int8 -> [M, N] out_dtype with the scale epilogue."""
    m, n, _ = check_gemm_args(a, b, a_scale, b_scale, out_dtype, azp, azp_adj, bias)
    acc = (a.double() @ b.double().T).to(torch.int64)  # exact: |acc| <= K * 2**14 < 2**53
    if azp_adj is not None:
        correction = azp_adj.reshape(1, n).to(torch.int64)
        if azp is not None:
            correction = azp.reshape(m, 1).to(torch.int64) * correction  # |.| <= 2**62
        acc = acc - correction
    return _epilogue(acc, a_scale, b_scale, bias, out_dtype)


def int8_quant_scaled_mm(
    x: torch.Tensor,
    b: torch.Tensor,
    x_scale: torch.Tensor | None,
    x_azp: torch.Tensor | None,
    symmetric: bool,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    azp_adj: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """An int8 linear layer from fp16/bf16 activations x [M, K]: `scaled_int8_quant` (static
    when x_scale is given) to b's padded K, then `int8_scaled_mm` with the per-token zero
    point when dynamic (a static one is folded into azp_adj) -> [M, N] out_dtype."""
    check_quant_gemm_args(x, b, x_scale, x_azp, symmetric, b_scale, out_dtype, azp_adj, bias)
    return quantize_then_gemm(scaled_int8_quant, int8_scaled_mm, x, b, x_scale, x_azp, symmetric, b_scale,
                              out_dtype, azp_adj, bias)


def quantize_then_gemm(quantize: Callable[..., tuple], gemm: Callable[..., torch.Tensor], x: torch.Tensor,
                       b: torch.Tensor, x_scale: torch.Tensor | None, x_azp: torch.Tensor | None, symmetric: bool,
                       b_scale: torch.Tensor, out_dtype: torch.dtype, azp_adj: torch.Tensor | None,
                       bias: torch.Tensor | None) -> torch.Tensor:
    """`int8_quant_scaled_mm` as two steps with an implementation's `scaled_int8_quant` and
    `int8_scaled_mm` (this module's, or hip_backend's two launches)."""
    q, a_scale, zero_point = quantize(x, x_scale, x_azp, symmetric, b.shape[1])
    per_token_azp = zero_point if x_scale is None else None  # a static one is in azp_adj
    return gemm(q, b, a_scale, b_scale, out_dtype, per_token_azp, azp_adj, bias)


def fp8_scaled_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """a [M, K] x b [N, K] float8_e4m3fn -> [M, N] out_dtype with the scale epilogue.

    The sum is exact here (float64); the kernel sums in float32, so results agree to
    float32 accumulation error, not bit for bit.
    """
    check_gemm_args(a, b, a_scale, b_scale, out_dtype, None, None, bias, torch.float8_e4m3fn)
    acc = a.double() @ b.double().T
    return _epilogue(acc, a_scale, b_scale, bias, out_dtype)
