"""The ops on our HIP kernels: validate, pick a tile config, pack arguments, launch.

Runs on ROCm tensors, and on CPU tensors with the emulated gfx11 backend
(`VLLM_RDNA_W8A8_EMULATE`), where the launcher uses the emulator's stand-in runtime.
Per call: no host synchronisation, no allocation besides the outputs, one launch.
Argument order and flags: docs/architecture.md ("GEMM kernel arguments",
"Quantization kernel").
"""

from __future__ import annotations

import functools
import threading
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from vllm_rdna_w8a8.build.kernel_data import abi_constant
from vllm_rdna_w8a8.dispatch import fused_decode_config, pick_gemm_config
from vllm_rdna_w8a8.ops.validation import (
    K_ALIGNMENT,
    check_gemm_args,
    check_gemm_row_terms,
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

# The kernels' flag bits and quantization block (kernels/kernel_abi.def).
# GEMM flags
A_SCALE_PER_TOKEN = abi_constant("A_SCALE_PER_TOKEN")
B_SCALE_PER_CHANNEL = abi_constant("B_SCALE_PER_CHANNEL")
OUTPUT_BF16 = abi_constant("OUTPUT_BF16")
# quantization flags
STATIC_SCALE = abi_constant("STATIC_SCALE")
ASYMMETRIC = abi_constant("ASYMMETRIC")
# fused decode GEMM flags: B_SCALE_PER_CHANNEL and OUTPUT_BF16 as above, plus
FUSED_STATIC_SCALE = abi_constant("FUSED_STATIC_SCALE")
FUSED_ASYMMETRIC = abi_constant("FUSED_ASYMMETRIC")

QUANT_BLOCK_THREADS = abi_constant("QUANT_BLOCK_THREADS")
# Rows loaded whole start on this boundary. The fused decode GEMMs read activations only in
# such loads of FUSED_ELEMENTS_PER_LOAD fp16/bf16 values (kernels/common/decode_quant.h):
# rows aligned and K a multiple of it.
ALIGNMENT_BYTES = abi_constant("ALIGNMENT_BYTES")
FUSED_ELEMENTS_PER_LOAD = abi_constant("FUSED_ELEMENTS_PER_LOAD")


if TYPE_CHECKING:  # the launcher is imported on first use (see _launcher)
    from vllm_rdna_w8a8.dispatch import TileConfig
    from vllm_rdna_w8a8.runtime.launcher import PreparedLaunch


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
    if tensor.data_ptr() % ALIGNMENT_BYTES:
        raise ValueError(f"{name} must start on a {ALIGNMENT_BYTES}-byte boundary")


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
    w8a8_i8_gemm_<tag>. Both give the same bits.

    The hot path of an int8 layer: the arguments are checked once per `_LayerPlan` (see there),
    and each call checks only what differs per call (x's rows, M)."""
    device_index, stream = _device_and_stream(x) if isinstance(x, torch.Tensor) else (0, 0)
    try:
        m, k = x.shape
        key = (device_index, x.dtype, x.device, k, symmetric, symmetric.__class__, out_dtype, _facts(b),
               _facts(b_scale), _facts(x_scale), _facts(x_azp), _facts(azp_adj), _facts(bias))
    except (AttributeError, TypeError, ValueError):  # not tensors, or x not 2-D: the checks say why
        key = None
    plans = _thread_plans()
    plan = plans.get(key)
    if plan is None:
        check_quant_gemm_args(x, b, x_scale, x_azp, symmetric, b_scale, out_dtype, azp_adj, bias)
        plan = _LayerPlan(device_index, x, b, x_scale, x_azp, symmetric, b_scale, out_dtype, azp_adj, bias)
        if key is not None:
            if len(plans) >= _MAX_PLANS_PER_THREAD:
                plans.clear()
            plans[key] = plan
    ldx = _check_rows("x", x)
    out = torch.empty((m, plan.n), dtype=out_dtype, device=plan.device)
    if m == 0 or plan.n == 0:
        return out
    x_address = x.data_ptr()
    if plan.loads_whole and ldx % FUSED_ELEMENTS_PER_LOAD == 0 and x_address % ALIGNMENT_BYTES == 0:
        config = fused_decode_config(plan.target, m, plan.n, plan.k_padded)
        if config is not None:
            launch, grid = plan.fused_launch(m, config)
            launch.launch(grid, stream, x_address, out.data_ptr(), ldx)
            return out
    plan.quantize_then_gemm(m, x_address, ldx, out.data_ptr(), stream)
    return out


# Plans per thread (each owns kernarg buffers it rewrites per launch); a process that keeps
# creating layers (tests) forgets them all past this many, a model's layers stay far below.
_MAX_PLANS_PER_THREAD = 4096
_per_thread = threading.local()


def _thread_plans() -> dict:
    plans = getattr(_per_thread, "plans", None)
    if plans is None:
        plans = _per_thread.plans = {}
    return plans


def _facts(tensor: torch.Tensor | None) -> tuple | None:
    """What the checks of a layer tensor read: where it is and how it is laid out (not its values)."""
    if tensor is None:
        return None
    return tensor.data_ptr(), tensor.dtype, tensor.device, tensor.shape, tensor.stride()


class _LayerPlan:
    """The launches of one int8 layer for every M, prepared once for the facts in its key: the
    device, x's dtype, device and K, and each other tensor's address, dtype, device, shape and
    strides (`_facts`), `symmetric` and `out_dtype`. Everything `check_quant_gemm_args` and the
    kernels' layout rules check depends only on these, so they hold for every call with the same
    key; a call checks x's rows (`_check_rows`), the rest of what may differ per call. Pointers to
    the layer's tensors are packed once (`PreparedLaunch`); a call writes x, the output and M.
    The tile choice is asked per call (`fused_decode_config`, `pick_gemm_config`: cached), so a
    new table or a forced config takes effect as before."""

    def __init__(self, device_index: int, x: torch.Tensor, b: torch.Tensor, x_scale: torch.Tensor | None,
                 x_azp: torch.Tensor | None, symmetric: bool, b_scale: torch.Tensor, out_dtype: torch.dtype,
                 azp_adj: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        ldb = _check_rows("b", b, K_ALIGNMENT)
        _check_aligned("b", b)
        for name, tensor in (("x_scale", x_scale), ("x_azp", x_azp), ("b_scale", b_scale),
                             ("azp_adj", azp_adj), ("bias", bias)):
            _check_vector(name, tensor)
        self.device_index = device_index
        self.target = _target(device_index)
        self.n, self.k_padded = b.shape
        self.k = x.shape[1]
        self.loads_whole = self.k % FUSED_ELEMENTS_PER_LOAD == 0
        self.static = x_scale is not None
        self.symmetric = symmetric
        self.input_dtype = "bf16" if x.dtype == torch.bfloat16 else "f16"
        channel_flag = B_SCALE_PER_CHANNEL if b_scale.numel() == self.n and self.n > 1 else 0
        output_flag = OUTPUT_BF16 if out_dtype == torch.bfloat16 else 0
        self.gemm_flags = channel_flag | output_flag
        self.fused_flags = (self.gemm_flags | (FUSED_STATIC_SCALE if self.static else 0)
                            | (0 if symmetric else FUSED_ASYMMETRIC))
        self.quant_flags = (STATIC_SCALE if self.static else 0) | (0 if symmetric else ASYMMETRIC)
        self.ldb = ldb
        self.device = x.device
        self.pointers = dict(b=b.data_ptr(), x_scale=_address(x_scale), x_azp=_address(x_azp),
                             b_scale=b_scale.data_ptr(), azp_adj=_address(azp_adj), bias=_address(bias))
        self._fused: dict[tuple[int, str], tuple[PreparedLaunch, tuple[int, int, int]]] = {}
        self._gemms: dict[str, PreparedLaunch] = {}
        self._quant: PreparedLaunch | None = None

    def fused_launch(self, m: int, config: TileConfig) -> tuple[PreparedLaunch, tuple[int, int, int]]:
        """The fused decode launch at M = m with `config` and its grid; variable: x, c, ldx."""
        prepared = self._fused.get((m, config.tag))
        if prepared is None:
            p = self.pointers
            kernel = _kernel(self.device_index, config.fused_kernel_name(self.input_dtype))
            prepared = self._fused[(m, config.tag)] = (kernel.prepare(
                (config.threads, 1, 1), _FUSED_ARG_KINDS,
                (0, p["b"], 0, p["x_scale"], p["x_azp"], p["b_scale"], p["azp_adj"], p["bias"],
                 m, self.n, self.k, 0, self.ldb, self.n, self.fused_flags),
                _FUSED_VARIABLE), config.grid(m, self.n))
        return prepared

    def quantize_then_gemm(self, m: int, x_address: int, ldx: int, out_address: int, stream: int) -> None:
        """w8a8_quant_i8_* then w8a8_i8_gemm_<tag>. The int8 rows and their dynamic scales (and
        zero points) share one scratch allocation that lives until both launches are queued
        (as the separate tensors of `scaled_int8_quant` did: ROCm's caching allocator hands
        the memory out again only in stream order)."""
        p = self.pointers
        scale_offset = m * self.k_padded  # a multiple of 16: the scales that follow stay aligned
        if self.static:
            scratch = torch.empty((scale_offset,), dtype=torch.uint8, device=self.device)
            q_address = scratch.data_ptr()
            scale_address, azp_address, gemm_azp_address = p["x_scale"], p["x_azp"], 0  # zero point folded
        else:
            per_token_azp_bytes = 0 if self.symmetric else 4 * m
            scratch = torch.empty((scale_offset + 4 * m + per_token_azp_bytes,), dtype=torch.uint8,
                                  device=self.device)
            q_address = scratch.data_ptr()
            scale_address = q_address + scale_offset
            azp_address = gemm_azp_address = 0 if self.symmetric else scale_address + 4 * m
        if self._quant is None:
            kernel = _kernel(self.device_index, f"w8a8_quant_i8_{self.input_dtype}")
            self._quant = kernel.prepare((QUANT_BLOCK_THREADS, 1, 1), _QUANT_ARG_KINDS,
                                         (0, 0, 0, 0, 1, self.k, 0, self.k_padded, self.quant_flags),
                                         _QUANT_VARIABLE)
        self._quant.launch((m, 1, 1), stream, x_address, q_address, scale_address, azp_address, m, ldx)
        config = pick_gemm_config(self.target, m, self.n, self.k_padded, "i8")
        gemm = self._gemms.get(config.tag)
        if gemm is None:
            kernel = _kernel(self.device_index, config.kernel_name("i8"))
            gemm = self._gemms[config.tag] = kernel.prepare(
                (config.threads, 1, 1), _GEMM_ARG_KINDS,
                (0, p["b"], 0, 0, p["b_scale"], 0, p["azp_adj"], p["bias"], 1, self.n, self.k_padded,
                 self.k_padded, self.ldb, self.n, 0),
                _GEMM_VARIABLE)
        per_token = A_SCALE_PER_TOKEN if not self.static and m > 1 else 0
        gemm.launch(config.grid(m, self.n), stream, q_address, out_address, scale_address, gemm_azp_address,
                    m, self.gemm_flags | per_token)


# Per-call arguments of the prepared launches, as indices into their kernels' argument lists:
# fused decode GEMM: x, c, ldx; quantization: x, q, scale, azp, M, ldx; GEMM: a, c, a_scale, azp,
# M, flags (per-token scales need M > 1).
_FUSED_VARIABLE = (0, 2, 11)
_QUANT_VARIABLE = (0, 1, 2, 3, 4, 6)
_GEMM_VARIABLE = (0, 2, 3, 5, 8, 14)


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
    """One launch of w8a8_<kind>_gemm_<tag>; kind "i8" (int8) or "f8" (fp8 e4m3fn). The weight
    side is checked once per `_GemmPlan` (see there); a call checks a's rows and its per-row terms
    (a_scale, azp)."""
    plans = _thread_plans()
    try:
        device_index, stream = _device_and_stream(a)
        m, k = a.shape
        key = (kind, device_index, a.dtype, a.device, k, out_dtype, _facts(b), _facts(b_scale), _facts(azp_adj),
               _facts(bias))
        plan = plans.get(key)
    except (AttributeError, TypeError, ValueError):  # not tensors, a not 2-D, ...: the checks say why
        key = plan = None
    if plan is None:
        operand_dtype = torch.int8 if kind == "i8" else torch.float8_e4m3fn
        m, _, k = check_gemm_args(a, b, a_scale, b_scale, out_dtype, azp, azp_adj, bias, operand_dtype)
        device_index, stream = _device_and_stream(a)
        plan = _GemmPlan(kind, device_index, b, b_scale, out_dtype, azp_adj, bias)
        if key is not None:
            if len(plans) >= _MAX_PLANS_PER_THREAD:
                plans.clear()
            plans[key] = plan
    else:
        check_gemm_row_terms(a, a_scale, azp, azp_adj)
    lda = _check_rows("a", a, K_ALIGNMENT)
    _check_aligned("a", a)
    _check_vector("a_scale", a_scale)
    _check_vector("azp", azp)
    out = torch.empty((m, plan.n), dtype=out_dtype, device=a.device)
    if m == 0 or plan.n == 0:
        return out
    plan.launch(m, a.data_ptr(), lda, a_scale, _address(azp), out.data_ptr(), stream)
    return out


class _GemmPlan:
    """The GEMM launch of one weight side (an fp8 layer's, or the bare int8 GEMM's) for every M,
    prepared once for the facts in its key: the kind, the device, a's dtype, device and K,
    `out_dtype`, and of b, b_scale, azp_adj and bias the address, dtype, device, shape and strides
    (`_facts`). What `check_gemm_args` checks of the weight side and the kernels' layout rules for
    b depend only on these; a call checks a's rows and its per-row terms. The weight-side
    pointers are packed once per tile (`PreparedLaunch`); a call writes a, c, a_scale, azp, M, lda
    and the flags. The tile is asked per call (`pick_gemm_config`: cached), as `_LayerPlan` does."""

    def __init__(self, kind: str, device_index: int, b: torch.Tensor, b_scale: torch.Tensor, out_dtype: torch.dtype,
                 azp_adj: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        self.n, self.k = b.shape
        if self.k % K_ALIGNMENT:
            raise ValueError(f"K={self.k} must be a multiple of {K_ALIGNMENT}: pad the weight and activations")
        self.ldb = _check_rows("b", b, K_ALIGNMENT)
        _check_aligned("b", b)
        for name, tensor in (("b_scale", b_scale), ("azp_adj", azp_adj), ("bias", bias)):
            _check_vector(name, tensor)
        self.kind = kind
        self.device_index = device_index
        self.target = _target(device_index)
        self.flags = ((B_SCALE_PER_CHANNEL if b_scale.numel() == self.n and self.n > 1 else 0)
                      | (OUTPUT_BF16 if out_dtype == torch.bfloat16 else 0))
        self.pointers = (b.data_ptr(), b_scale.data_ptr(), _address(azp_adj), _address(bias))
        self._launches: dict[str, PreparedLaunch] = {}

    def launch(self, m: int, a_address: int, lda: int, a_scale: torch.Tensor, azp_address: int, out_address: int,
               stream: int) -> None:
        config = pick_gemm_config(self.target, m, self.n, self.k, self.kind)
        prepared = self._launches.get(config.tag)
        if prepared is None:
            b, b_scale, azp_adj, bias = self.pointers
            kernel = _kernel(self.device_index, config.kernel_name(self.kind))
            prepared = self._launches[config.tag] = kernel.prepare(
                (config.threads, 1, 1), _GEMM_ARG_KINDS,
                (0, b, 0, 0, b_scale, 0, azp_adj, bias, 1, self.n, self.k, self.k, self.ldb, self.n, 0),
                _SCALED_MM_VARIABLE)
        per_token = A_SCALE_PER_TOKEN if a_scale.numel() == m and m > 1 else 0
        prepared.launch(config.grid(m, self.n), stream, a_address, out_address, a_scale.data_ptr(), azp_address, m,
                        lda, self.flags | per_token)


# The GEMM's per-call arguments in `_GemmPlan`: a, c, a_scale, azp, M, lda, flags.
_SCALED_MM_VARIABLE = (0, 2, 3, 5, 8, 11, 14)


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
