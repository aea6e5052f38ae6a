"""Argument checks shared by both implementations of the ops (reference and HIP).

Each check raises TypeError (wrong kind/dtype) or ValueError (wrong shape/value) with
a message naming the argument, before any work is done.
"""

from __future__ import annotations

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

ACTIVATION_DTYPES = (torch.float16, torch.bfloat16)
OUTPUT_DTYPES = (torch.float16, torch.bfloat16)
K_ALIGNMENT = 16  # the int8 WMMA consumes K in steps of 16
# The largest K whose int8 dot products always fit the int32 accumulator:
# |sum| <= K * 2**14 <= 2**31 - 1. Longer sums are refused, not wrapped.
MAX_INT8_K = (2**31 - 1) // 2**14


def padded_k(k: int) -> int:
    """K rounded up to the kernels' K step; weights and quantized activations use it."""
    return -(-k // K_ALIGNMENT) * K_ALIGNMENT


def _tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _dtype(name: str, tensor: torch.Tensor, allowed: tuple[torch.dtype, ...]) -> None:
    if tensor.dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise TypeError(f"{name} must be {names}, got {str(tensor.dtype).removeprefix('torch.')}")


def _same_device(reference: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device != reference.device:
            raise ValueError(f"{name} is on {tensor.device}, the activations on {reference.device}")


def _may_equal(a: int | torch.SymInt, b: int | torch.SymInt) -> bool:
    """a == b for ints. For sizes being traced (the fakes under torch.compile): True unless
    they are known to differ, since asking more would guard on the batch size (an error
    when it is unbacked)."""
    return not statically_known_true(a != b)


def _vector(name: str, tensor: torch.Tensor, lengths: tuple[int, ...], what: str) -> None:
    """`tensor` holds `lengths[i]` elements laid out as [n] or [n, 1] / [1, n]."""
    if not any(_may_equal(tensor.numel(), length) for length in lengths) or tensor.dim() > 2 or (
        tensor.dim() == 2 and not any(_may_equal(size, 1) for size in tensor.shape)
    ):
        shapes = " or ".join(f"[{n}]" for n in dict.fromkeys(lengths))
        raise ValueError(f"{name} must have shape {shapes} ({what}), got {list(tensor.shape)}")


def check_quant_args(
    x: torch.Tensor,
    scale: torch.Tensor | None,
    azp: torch.Tensor | None,
    symmetric: bool,
    k_out: int,
) -> None:
    """Checks for scaled_int8_quant: x [M, K] fp16/bf16 -> q [M, k_out] int8."""
    _tensor("x", x)
    _dtype("x", x, ACTIVATION_DTYPES)
    if x.dim() != 2 or x.shape[1] == 0:
        raise ValueError(f"x must be 2-D [M, K] with K >= 1, got shape {list(x.shape)}")
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    if isinstance(k_out, bool) or not isinstance(k_out, (int, torch.SymInt)):  # SymInt: traced
        raise TypeError(f"padded_k must be an int, got {type(k_out).__name__}")
    if k_out < x.shape[1] or k_out % K_ALIGNMENT:
        raise ValueError(
            f"padded_k must be a multiple of {K_ALIGNMENT} and >= K={x.shape[1]}, got {k_out}"
        )
    if scale is None:
        if azp is not None:
            raise ValueError("azp given without scale: a static zero point needs a static scale")
        return
    _tensor("scale", scale)
    _dtype("scale", scale, (torch.float32,))
    _vector("scale", scale, (1,), "one static scale")
    if symmetric and azp is not None:
        raise ValueError("azp must be None for symmetric quantization")
    if not symmetric:
        if azp is None:
            raise ValueError("asymmetric static quantization needs azp")
        _tensor("azp", azp)
        _dtype("azp", azp, (torch.int32,))
        _vector("azp", azp, (1,), "one static zero point")
    _same_device(x, scale=scale, azp=azp)


def check_gemm_args(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    azp: torch.Tensor | None,
    azp_adj: torch.Tensor | None,
    bias: torch.Tensor | None,
    operand_dtype: torch.dtype = torch.int8,
) -> tuple[int, int, int]:
    """Checks for the GEMMs: a [M, K], b [N, K] of `operand_dtype` (int8, or float8_e4m3fn
    without zero points) -> [M, N]; returns M, N, K."""
    for name, value in (("a", a), ("b", b), ("a_scale", a_scale), ("b_scale", b_scale)):
        _tensor(name, value)
    _dtype("a", a, (operand_dtype,))
    _dtype("b", b, (operand_dtype,))
    if operand_dtype != torch.int8 and (azp is not None or azp_adj is not None):
        raise ValueError("fp8 GEMMs take no zero points: azp and azp_adj must be None")
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"a and b must be 2-D, got shapes {list(a.shape)} and {list(b.shape)}")
    m, k = a.shape
    n, k_b = b.shape
    if k != k_b:
        raise ValueError(f"a is [M, K] = {list(a.shape)} but b is [N, K] = {list(b.shape)}: K differs")
    _check_weight_side(a, b, b_scale, out_dtype, azp_adj, bias, operand_dtype)
    check_gemm_row_terms(a, a_scale, azp, azp_adj)
    return m, n, k


def check_gemm_row_terms(a: torch.Tensor, a_scale: torch.Tensor, azp: torch.Tensor | None,
                         azp_adj: torch.Tensor | None) -> None:
    """What the GEMMs check of the per-row terms of a 2-D `a` [M, K]: a_scale, and azp (which
    needs azp_adj)."""
    m = a.shape[0]
    _tensor("a_scale", a_scale)
    _dtype("a_scale", a_scale, (torch.float32,))
    _vector("a_scale", a_scale, (m, 1), "per token or per tensor")
    if azp is not None:
        if azp_adj is None:
            raise ValueError("azp given without azp_adj: the zero-point correction needs both")
        _tensor("azp", azp)
        _dtype("azp", azp, (torch.int32,))
        _vector("azp", azp, (m,), "one zero point per token")
    _same_device(a, a_scale=a_scale, azp=azp)


def check_quant_gemm_args(
    x: torch.Tensor,
    b: torch.Tensor,
    x_scale: torch.Tensor | None,
    x_azp: torch.Tensor | None,
    symmetric: bool,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    azp_adj: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> tuple[int, int, int]:
    """Checks for an int8 linear layer from fp16/bf16 activations: x [M, K] quantized as
    `scaled_int8_quant(x, x_scale, x_azp, symmetric, padded_k=b.shape[1])`, then the int8 GEMM
    with b [N, K_pad] (a static zero point folded into azp_adj); returns M, N, K."""
    _tensor("b", b)
    _tensor("b_scale", b_scale)
    if b.dim() != 2:
        raise ValueError(f"b must be 2-D [N, K], got shape {list(b.shape)}")
    check_quant_args(x, x_scale, x_azp, symmetric, b.shape[1])
    if symmetric != (azp_adj is None):
        raise ValueError("azp_adj must be given exactly when the quantization is asymmetric "
                         f"(symmetric={symmetric}, azp_adj {'None' if azp_adj is None else 'given'})")
    _check_weight_side(x, b, b_scale, out_dtype, azp_adj, bias, torch.int8)
    return x.shape[0], b.shape[0], x.shape[1]


def _check_weight_side(
    a: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    azp_adj: torch.Tensor | None,
    bias: torch.Tensor | None,
    operand_dtype: torch.dtype,
) -> None:
    """What the GEMMs check of b [N, K] and its per-channel terms; `a` gives the device."""
    _dtype("b", b, (operand_dtype,))
    n, k = b.shape
    if k == 0:
        raise ValueError("K=0: a and b have no columns, the GEMMs need K >= 1")
    if operand_dtype == torch.int8 and k > MAX_INT8_K:
        raise ValueError(f"K={k} exceeds {MAX_INT8_K}, the largest K whose int8 sums always fit the "
                         f"int32 accumulator (|sum| <= K * 2**14): split the GEMM along K")
    if not isinstance(out_dtype, torch.dtype):
        raise TypeError(f"out_dtype must be a torch.dtype, got {type(out_dtype).__name__}")
    if out_dtype not in OUTPUT_DTYPES:
        raise TypeError(f"out_dtype must be float16 or bfloat16, got {str(out_dtype).removeprefix('torch.')}")
    _dtype("b_scale", b_scale, (torch.float32,))
    _vector("b_scale", b_scale, (n, 1), "per channel or per tensor")
    if azp_adj is not None:
        _tensor("azp_adj", azp_adj)
        _dtype("azp_adj", azp_adj, (torch.int32,))
        _vector("azp_adj", azp_adj, (n,), "one correction per output channel")
    if bias is not None:
        _tensor("bias", bias)
        if bias.dtype != out_dtype:
            raise TypeError(
                f"bias must have the output dtype {str(out_dtype).removeprefix('torch.')}, "
                f"got {str(bias.dtype).removeprefix('torch.')}"
            )
        _vector("bias", bias, (n,), "one per output channel")
    _same_device(a, b=b, b_scale=b_scale, azp_adj=azp_adj, bias=bias)
