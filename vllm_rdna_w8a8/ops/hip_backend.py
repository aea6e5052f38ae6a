"""The ops on our HIP kernels: validate, pick a tile config, pack arguments, launch.

Runs on ROCm tensors, and on CPU tensors with the emulated gfx11 backend
(`VLLM_RDNA_W8A8_EMULATE`), where the launcher uses the emulator's stand-in runtime.
Per call: no host synchronisation, no allocation besides the outputs, one launch.
Argument order and flags: docs/architecture.md ("GEMM kernel arguments",
"Quantization kernel").
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

from vllm_rdna_w8a8.dispatch import fused_decode_config, pick_gemm_config
from vllm_rdna_w8a8.ops.reference import quantize_then_gemm
from vllm_rdna_w8a8.ops.validation import (
    K_ALIGNMENT,
    check_gemm_args,
    check_quant_args,
    check_quant_gemm_args,
)
from vllm_rdna_w8a8.runtime.device import emulated_device_index
from vllm_rdna_w8a8.runtime.kernel_args import (
    FUSED_DECODE_GEMM_KERNEL_ARGS,
    GEMM_KERNEL_ARGS,
    QUANT_KERNEL_ARGS,
    kinds,
)

# GEMM flags
A_SCALE_PER_TOKEN = 1
B_SCALE_PER_CHANNEL = 2
OUTPUT_BF16 = 4
# quantization flags
STATIC_SCALE = 1
ASYMMETRIC = 2
# fused decode GEMM flags: B_SCALE_PER_CHANNEL and OUTPUT_BF16 as above, plus
FUSED_STATIC_SCALE = 8
FUSED_ASYMMETRIC = 16

QUANT_BLOCK_THREADS = 256
_ALIGNMENT_BYTES = 16
# The fused decode GEMMs read activations only in 16-byte loads of 8 fp16/bf16 values
# (kernels/common/decode_quant.h): rows 16-byte aligned and K a multiple of 8.
_FUSED_ELEMENTS_PER_LOAD = 8


def _device_and_stream(tensor: torch.Tensor) -> tuple[int, int]:
    """(device index, hipStream_t) for launching on `tensor`'s device."""
    if tensor.is_cuda:
        index = tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()
        return index, torch.cuda.current_stream(tensor.device).cuda_stream
    if tensor.device.type == "cpu":
        return emulated_device_index(), 0  # the emulated backend: the thread's device, null stream
    raise ValueError(f"the HIP backend runs on ROCm or emulated CPU tensors, got {tensor.device}")


@functools.cache
def _target(device_index: int) -> str:
    from vllm_rdna_w8a8.runtime.device import gfx_target

    target = gfx_target(device_index)
    if target is None:
        raise RuntimeError(f"device {device_index} has no gfx target: not a ROCm (or emulated) device")
    return target


@functools.cache
def _launcher() -> ModuleType:
    # Imported on first use: the ops module loads on machines without a HIP runtime.
    from vllm_rdna_w8a8.runtime import launcher

    return launcher


def _kernel(device_index: int, name: str):
    return _launcher().get_kernel(device_index, name)


# Argument kinds of the kernels, one tuple each: the launcher keys its packing layout on
# it, and the hot path builds no KernelArg per argument.
_QUANT_ARG_KINDS = kinds(QUANT_KERNEL_ARGS)
_GEMM_ARG_KINDS = kinds(GEMM_KERNEL_ARGS)
_FUSED_ARG_KINDS = kinds(FUSED_DECODE_GEMM_KERNEL_ARGS)


def _check_rows(name: str, tensor: torch.Tensor, ld_multiple: int = 1) -> int:
    """Rows with contiguous elements (stride(1) == 1); returns the row stride."""
    if tensor.dim() != 2 or (tensor.shape[1] > 1 and tensor.stride(1) != 1):
        raise ValueError(f"{name} needs contiguous rows (stride(1) == 1), got strides {tensor.stride()}")
    row_stride = tensor.stride(0) if tensor.shape[0] > 1 else tensor.shape[1]  # one row: any
    if row_stride % ld_multiple:
        raise ValueError(f"{name}'s row stride {row_stride} must be a multiple of {ld_multiple}")
    return row_stride


def _check_aligned(name: str, tensor: torch.Tensor) -> None:
    if tensor.data_ptr() % _ALIGNMENT_BYTES:
        raise ValueError(f"{name} must start on a {_ALIGNMENT_BYTES}-byte boundary")


def _check_vector(name: str, tensor: torch.Tensor | None) -> None:
    if tensor is not None and not tensor.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _address(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.data_ptr()


def scaled_int8_quant(
    x: torch.Tensor,
    scale: torch.Tensor | None,
    azp: torch.Tensor | None,
    symmetric: bool,
    padded_k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Same contract as `reference.scaled_int8_quant`, one launch of w8a8_quant_i8_*."""
    check_quant_args(x, scale, azp, symmetric, padded_k)
    ldx = _check_rows("x", x)
    for name, tensor in (("scale", scale), ("azp", azp)):
        _check_vector(name, tensor)
    m, k = x.shape
    q = torch.empty((m, padded_k), dtype=torch.int8, device=x.device)
    static = scale is not None
    out_scale = scale if static else torch.empty((m,), dtype=torch.float32, device=x.device)
    out_azp = azp if static or symmetric else torch.empty((m,), dtype=torch.int32, device=x.device)
    if m == 0:
        return q, out_scale, out_azp
    device_index, stream = _device_and_stream(x)
    name = "w8a8_quant_i8_bf16" if x.dtype == torch.bfloat16 else "w8a8_quant_i8_f16"
    flags = (STATIC_SCALE if static else 0) | (0 if symmetric else ASYMMETRIC)
    _kernel(device_index, name).launch_values(
        (m, 1, 1),
        (QUANT_BLOCK_THREADS, 1, 1),
        _QUANT_ARG_KINDS,
        (x.data_ptr(), q.data_ptr(), out_scale.data_ptr(), _address(out_azp), m, k, ldx, padded_k, flags),
        stream,
    )
    return q, out_scale, out_azp


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
    """Same contract as `reference.int8_quant_scaled_mm`: one launch of the fused decode GEMM
    w8a8_i8q_<f16|bf16>_gemm_<tag> where the dispatch picks a decode tile for M (M <= 16) and
    x's rows load whole (16-byte aligned, K % 8 == 0), else w8a8_quant_i8_* then
    w8a8_i8_gemm_<tag>. Both give the same bits."""
    m, n, k = check_quant_gemm_args(x, b, x_scale, x_azp, symmetric, b_scale, out_dtype, azp_adj, bias)
    device_index, stream = _device_and_stream(x)
    ldx = _check_rows("x", x)
    loads_whole = (k % _FUSED_ELEMENTS_PER_LOAD == 0 and ldx % _FUSED_ELEMENTS_PER_LOAD == 0
                   and x.data_ptr() % _ALIGNMENT_BYTES == 0)
    config = fused_decode_config(_target(device_index), m, n, b.shape[1]) if m and n and loads_whole else None
    if config is None:
        return quantize_then_gemm(scaled_int8_quant, int8_scaled_mm, x, b, x_scale, x_azp, symmetric,
                                  b_scale, out_dtype, azp_adj, bias)
    ldb = _check_rows("b", b, K_ALIGNMENT)
    _check_aligned("b", b)
    for name, tensor in (("x_scale", x_scale), ("x_azp", x_azp), ("b_scale", b_scale),
                         ("azp_adj", azp_adj), ("bias", bias)):
        _check_vector(name, tensor)
    out = torch.empty((m, n), dtype=out_dtype, device=x.device)
    flags = (
        (FUSED_STATIC_SCALE if x_scale is not None else 0)
        | (0 if symmetric else FUSED_ASYMMETRIC)
        | (B_SCALE_PER_CHANNEL if b_scale.numel() == n and n > 1 else 0)
        | (OUTPUT_BF16 if out_dtype == torch.bfloat16 else 0)
    )
    name = config.fused_kernel_name("bf16" if x.dtype == torch.bfloat16 else "f16")
    _kernel(device_index, name).launch_values(
        config.grid(m, n),
        (config.threads, 1, 1),
        _FUSED_ARG_KINDS,
        (x.data_ptr(), b.data_ptr(), out.data_ptr(), _address(x_scale), _address(x_azp),
         b_scale.data_ptr(), _address(azp_adj), _address(bias), m, n, k, ldx, ldb, n, flags),
        stream,
    )
    return out


def _scaled_mm(
    kind: str,
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    azp: torch.Tensor | None = None,
    azp_adj: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """One launch of w8a8_<kind>_gemm_<tag>; kind "i8" (int8) or "f8" (fp8 e4m3fn)."""
    operand_dtype = torch.int8 if kind == "i8" else torch.float8_e4m3fn
    m, n, k = check_gemm_args(a, b, a_scale, b_scale, out_dtype, azp, azp_adj, bias, operand_dtype)
    if k % K_ALIGNMENT:
        raise ValueError(f"K={k} must be a multiple of {K_ALIGNMENT}: pad the weight and activations")
    lda = _check_rows("a", a, K_ALIGNMENT)
    ldb = _check_rows("b", b, K_ALIGNMENT)
    _check_aligned("a", a)
    _check_aligned("b", b)
    for name, tensor in (("a_scale", a_scale), ("b_scale", b_scale), ("azp", azp),
                         ("azp_adj", azp_adj), ("bias", bias)):
        _check_vector(name, tensor)
    out = torch.empty((m, n), dtype=out_dtype, device=a.device)
    if m == 0 or n == 0:
        return out
    device_index, stream = _device_and_stream(a)
    config = pick_gemm_config(_target(device_index), m, n, k, kind)
    flags = (
        (A_SCALE_PER_TOKEN if a_scale.numel() == m and m > 1 else 0)
        | (B_SCALE_PER_CHANNEL if b_scale.numel() == n and n > 1 else 0)
        | (OUTPUT_BF16 if out_dtype == torch.bfloat16 else 0)
    )
    _kernel(device_index, config.kernel_name(kind)).launch_values(
        config.grid(m, n),
        (config.threads, 1, 1),
        _GEMM_ARG_KINDS,
        (a.data_ptr(), b.data_ptr(), out.data_ptr(), a_scale.data_ptr(), b_scale.data_ptr(),
         _address(azp), _address(azp_adj), _address(bias), m, n, k, lda, ldb, n, flags),
        stream,
    )
    return out


# Same contract as `reference.int8_scaled_mm`, one launch of w8a8_i8_gemm_<tag>.
int8_scaled_mm = functools.partial(_scaled_mm, "i8")


def fp8_scaled_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as `reference.fp8_scaled_mm`, one launch of w8a8_f8_gemm_<tag>."""
    return _scaled_mm("f8", a, b, a_scale, b_scale, out_dtype, None, None, bias)
