"""The exact math of the `rdna_w8a8` ops in plain torch: the tests' oracle.

Not a production path (it materialises float copies and runs on whatever device the
tensors are on); the ops use it on the CPU and when `VLLM_RDNA_W8A8_OPS=reference`.

Quantization is bit-compatible with vLLM's `scaled_int8_quant` CUDA kernel
(csrc/quantization/w8a8/int8/scaled_quant.cu), computed in float32 like the kernel:
- dynamic symmetric:  scale = absmax / 127;  q = rne(x * (127 / absmax)), saturated
- dynamic asymmetric: scale = (max - min) / 255;  azp = rne(-128 - min / scale);
                      q = sat8(rne(x * (1 / scale)) + azp)
- static symmetric:   q = rne(x / scale), saturated (a division, as upstream)
- static asymmetric:  q = sat8(rne(x * (1 / scale)) + azp)
rne is round-half-to-even (nearbyint). Where upstream is undefined we choose:
- a row of zeros (or, asymmetric, any constant row) gives scale 0, azp 0, q 0: never NaN;
- NaN converts to 0 (CUDA's saturating convert); min/max/absmax skip NaN (fmaxf/fminf);
- dynamic: an inf in a row makes that row's scale inf and its q 0 (x * 0, inf * 0 -> 0);
  static: +-inf saturates to 127 / -128.
Columns K..padded_k-1 of q are 0.

GEMM: acc[m, n] = sum_k a[m, k] * b[n, k] exactly (int32 in the kernel; the sum is
exact in float64 here for K < 2**24); acc -= azp[m] * azp_adj[n] (azp_adj[n] alone when
azp is None: static zero point folded in); out = a_scale * (b_scale * float32(acc)) + bias
in float32 (the kernel's fused multiply-add), then rounded to the output dtype.
"""

from __future__ import annotations

import torch

from vllm_rdna_w8a8.ops.validation import check_gemm_args, check_quant_args
from vllm_rdna_w8a8.ops.validation import padded_k as round_up_k

_INT8_MIN, _INT8_MAX = -128, 127
_INT32_LIMIT = 2.0**31


def _round_to_int(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Round half to even, NaN -> 0, saturate to [low, high]; returns int64."""
    rounded = torch.nan_to_num(values.round(), nan=0.0, posinf=high, neginf=low)
    return rounded.clamp(low, high).to(torch.int64)


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
    zero = torch.zeros((), dtype=torch.float32, device=x.device)
    if scale is None:
        finite_or_inf = torch.nan_to_num(values, nan=0.0, posinf=torch.inf, neginf=-torch.inf)
        if symmetric:
            absmax = finite_or_inf.abs().amax(dim=1) if values.shape[1] else zero.expand(values.shape[0])
            row_scale = absmax / 127.0
            inverse = torch.where(absmax == 0, zero, 127.0 / absmax)
            q = _round_to_int(values * inverse[:, None], _INT8_MIN, _INT8_MAX)
            return _pad_columns(q.to(torch.int8), k_out), row_scale, None
        # NaN must not win min or max: replace it by the row's other values' neutral.
        row_max = torch.where(values.isnan(), -torch.inf, values).amax(dim=1)
        row_min = torch.where(values.isnan(), torch.inf, values).amin(dim=1)
        all_nan = row_max < row_min  # only NaN in the row: behaves as a zero row
        row_max = torch.where(all_nan, zero, row_max)
        row_min = torch.where(all_nan, zero, row_min)
        row_scale = (row_max - row_min) / 255.0
        constant = row_scale == 0
        safe_scale = torch.where(constant, torch.ones_like(row_scale), row_scale)
        row_azp = torch.where(constant, zero, (-128.0 - row_min / safe_scale).round())
        inverse = torch.where(constant, zero, 1.0 / safe_scale)
        shifted = _round_to_int(values * inverse[:, None], -_INT32_LIMIT, _INT32_LIMIT - 1)
        q = (shifted + row_azp.to(torch.int64)[:, None]).clamp(_INT8_MIN, _INT8_MAX)
        return _pad_columns(q.to(torch.int8), k_out), row_scale, row_azp.to(torch.int32)
    static_scale = scale.reshape(()).float()
    if symmetric:
        q = _round_to_int(values / static_scale, _INT8_MIN, _INT8_MAX)
        return _pad_columns(q.to(torch.int8), k_out), scale, None
    shifted = _round_to_int(values * (1.0 / static_scale), -_INT32_LIMIT, _INT32_LIMIT - 1)
    q = (shifted + azp.reshape(()).to(torch.int64)).clamp(_INT8_MIN, _INT8_MAX)
    return _pad_columns(q.to(torch.int8), k_out), scale, azp


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
    acc = a.double() @ b.double().T  # exact: |acc| <= K * 2**14 < 2**53
    if azp_adj is not None:
        correction = azp_adj.reshape(1, n).double()
        if azp is not None:
            correction = azp.reshape(m, 1).double() * correction
        acc = acc - correction
    # The kernel's epilogue order (kernels/common/epilogue.h):
    # fma(a_scale, b_scale * float32(acc), bias); the fma is done in float64 here.
    column_scaled = b_scale.reshape(1, -1).float() * acc.float()
    out = a_scale.reshape(-1, 1).double() * column_scaled.double()
    if bias is not None:
        out = out + bias.reshape(1, n).double()
    return out.float().to(out_dtype)
