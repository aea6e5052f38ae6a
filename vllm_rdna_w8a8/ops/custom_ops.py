"""torch.library ops `rdna_w8a8::scaled_int8_quant`, `::int8_scaled_mm`, `::fp8_scaled_mm`,
`::int8_quant_scaled_mm` (an int8 linear layer from fp16/bf16 activations: one fused launch at
decode M, quantization then GEMM otherwise).

Each op has its fake implementation beside it (argument checks, then empty outputs of the
right shapes), so torch.compile treats it as opaque and HIP graph capture works. The
implementation is chosen per call:
- ROCm tensors, or CPU tensors with VLLM_RDNA_W8A8_EMULATE set -> `hip_backend`
  (our kernels; the emulator's stand-in runtime on the CPU);
- anything else, or VLLM_RDNA_W8A8_OPS=reference -> `reference` (plain torch).

Call `scaled_int8_quant` / `int8_scaled_mm` / `fp8_scaled_mm` below. The quantization
one is a Python wrapper: the registered op cannot return its inputs (custom ops may not
alias them), so for static scales it returns empty tensors and the wrapper hands the
given ones back. The GEMM names are the ops themselves.

Registered straight into a torch.library.Library for the CPU and CUDA (= ROCm)
dispatch keys, as vLLM's `direct_register_custom_op` does: `torch.library.custom_op`
adds autograd and dynamo wrappers that cost tens of microseconds per call, and these
ops run twice per linear layer per step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

import torch
from torch.library import Library, infer_schema

from vllm_rdna_w8a8 import settings
from vllm_rdna_w8a8.ops import reference
from vllm_rdna_w8a8.ops.validation import check_gemm_args, check_quant_args, check_quant_gemm_args
from vllm_rdna_w8a8.ops.validation import padded_k as round_up_k

_LIBRARY = Library("rdna_w8a8", "FRAGMENT")  # must live as long as the ops
_DISPATCH_KEYS = ("CPU", "CUDA")
_Function = TypeVar("_Function", bound=Callable)


def _register(fake: Callable) -> Callable[[_Function], _Function]:
    """Define `rdna_w8a8::<name>` from the function's signature, with `fake` beside it."""

    def define(function: _Function) -> _Function:
        name = function.__name__.lstrip("_")
        _LIBRARY.define(name + infer_schema(function, mutates_args=()))
        for key in _DISPATCH_KEYS:
            _LIBRARY.impl(name, function, key)
        _LIBRARY._register_fake(name, fake)
        return function

    return define


def _implementation(tensor: torch.Tensor) -> ModuleType:
    on_our_device = tensor.is_cuda or (tensor.device.type == "cpu" and settings.emulated_target() is not None)
    if on_our_device and settings.ops_backend() != "reference":
        return _hip_backend()
    return reference


@functools.cache
def _hip_backend() -> ModuleType:
    # Imported on first use (it brings the dispatcher and its tables); an import statement
    # per call would cost more than the rest of the choice.
    from vllm_rdna_w8a8.ops import hip_backend

    return hip_backend


# The fakes validate as the implementations do: they serve tracing, and also every call
# with a meta tensor among its arguments (the dispatcher picks the Meta kernel), where a
# mixed-device call must fail, not return uninitialised memory.
def _scaled_int8_quant_fake(
    x: torch.Tensor,
    scale: torch.Tensor | None,
    azp: torch.Tensor | None,
    symmetric: bool,
    padded_k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_quant_args(x, scale, azp, symmetric, padded_k)
    m = x.shape[0]
    dynamic = scale is None
    return (
        x.new_empty((m, padded_k), dtype=torch.int8),
        x.new_empty((m if dynamic else 0,), dtype=torch.float32),
        x.new_empty((m if dynamic and not symmetric else 0,), dtype=torch.int32),
    )


@_register(_scaled_int8_quant_fake)
def _scaled_int8_quant(
    x: torch.Tensor,
    scale: torch.Tensor | None,
    azp: torch.Tensor | None,
    symmetric: bool,
    padded_k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, out_scale, out_azp = _implementation(x).scaled_int8_quant(x, scale, azp, symmetric, padded_k)
    if scale is not None:  # static: the wrapper returns the caller's scale / azp
        out_scale = torch.empty((0,), dtype=torch.float32, device=x.device)
        out_azp = None
    if out_azp is None:  # allocated only when there is no zero point to return
        out_azp = torch.empty((0,), dtype=torch.int32, device=x.device)
    return q, out_scale, out_azp


def _int8_scaled_mm_fake(
    a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
    out_dtype: torch.dtype, azp: torch.Tensor | None = None, azp_adj: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    m, n, _ = check_gemm_args(a, b, a_scale, b_scale, out_dtype, azp, azp_adj, bias)
    return a.new_empty((m, n), dtype=out_dtype)


def _fp8_scaled_mm_fake(
    a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
    out_dtype: torch.dtype, bias: torch.Tensor | None = None,
) -> torch.Tensor:
    m, n, _ = check_gemm_args(a, b, a_scale, b_scale, out_dtype, None, None, bias, torch.float8_e4m3fn)
    return a.new_empty((m, n), dtype=out_dtype)


def _int8_quant_scaled_mm_fake(
    x: torch.Tensor, b: torch.Tensor, x_scale: torch.Tensor | None, x_azp: torch.Tensor | None,
    symmetric: bool, b_scale: torch.Tensor, out_dtype: torch.dtype,
    azp_adj: torch.Tensor | None = None, bias: torch.Tensor | None = None,
) -> torch.Tensor:
    m, n, _ = check_quant_gemm_args(x, b, x_scale, x_azp, symmetric, b_scale, out_dtype, azp_adj, bias)
    return x.new_empty((m, n), dtype=out_dtype)


def _define_scaled_mm(name: str, schema: str, fake: Callable[..., torch.Tensor]) -> None:
    """Define `rdna_w8a8::<name>`, forwarded to the implementation's function `name` (the
    same contract in `reference` and `hip_backend`). The dispatcher passes only the
    arguments the caller gave: the implementations carry the schema's defaults too."""

    def forward(a: torch.Tensor, *args: object) -> torch.Tensor:
        return getattr(_implementation(a), name)(a, *args)

    _LIBRARY.define(name + schema)
    for key in _DISPATCH_KEYS:
        _LIBRARY.impl(name, forward, key)
    _LIBRARY._register_fake(name, fake)


_define_scaled_mm("int8_scaled_mm", "(Tensor a, Tensor b, Tensor a_scale, Tensor b_scale, ScalarType out_dtype, "
                                    "Tensor? azp=None, Tensor? azp_adj=None, Tensor? bias=None) -> Tensor",
                  _int8_scaled_mm_fake)
_define_scaled_mm("fp8_scaled_mm", "(Tensor a, Tensor b, Tensor a_scale, Tensor b_scale, ScalarType out_dtype, "
                                   "Tensor? bias=None) -> Tensor", _fp8_scaled_mm_fake)
_define_scaled_mm("int8_quant_scaled_mm",
                  "(Tensor x, Tensor b, Tensor? x_scale, Tensor? x_azp, bool symmetric, Tensor b_scale, "
                  "ScalarType out_dtype, Tensor? azp_adj=None, Tensor? bias=None) -> Tensor",
                  _int8_quant_scaled_mm_fake)

# The GEMMs need no Python wrapper: the ops take the defaults themselves.
# int8_scaled_mm: a [M, K] int8 x b [N, K] int8 -> [M, N] out_dtype (see `reference` for the math).
int8_scaled_mm = torch.ops.rdna_w8a8.int8_scaled_mm.default
# fp8_scaled_mm: a [M, K] x b [N, K] float8_e4m3fn -> [M, N] out_dtype (see `reference`).
fp8_scaled_mm = torch.ops.rdna_w8a8.fp8_scaled_mm.default
# int8_quant_scaled_mm: x [M, K] fp16/bf16 -> quantized (static when x_scale is given) x
# b [N, K_pad] int8 -> [M, N] out_dtype; one launch at M <= 16 (see `reference` for the math).
int8_quant_scaled_mm = torch.ops.rdna_w8a8.int8_quant_scaled_mm.default


def scaled_int8_quant(
    x: torch.Tensor,
    scale: torch.Tensor | None = None,
    azp: torch.Tensor | None = None,
    symmetric: bool = True,
    padded_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x [M, K] -> (q [M, padded_k] int8, scale [M] or the given one, azp or None).

    `padded_k` defaults to K rounded up to 16; columns K.. of q are zeros.
    """
    if padded_k is None and isinstance(x, torch.Tensor):
        padded_k = round_up_k(x.shape[-1])
    q, out_scale, out_azp = torch.ops.rdna_w8a8.scaled_int8_quant(x, scale, azp, symmetric, padded_k)
    if scale is not None:
        return q, scale, azp
    return q, out_scale, None if symmetric else out_azp

