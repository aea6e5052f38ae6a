"""torch.library ops `rdna_w8a8::int8_moe` and `rdna_w8a8::fp8_moe`: a W8A8 (int8 or fp8)
mixture-of-experts layer (SwiGLU experts) from fp16/bf16 activations and the router's top-k
choice, in the style of `ops/custom_ops.py` (registered in the same library, a fake beside
each, the implementation chosen per call):

- ROCm tensors, or CPU tensors with VLLM_RDNA_W8A8_EMULATE set -> `moe.hip_backend`'s function
  of the op's name (our grouped-GEMM HIP kernels; the emulator's stand-in runtime on the CPU);
- anything else, or VLLM_RDNA_W8A8_OPS=reference -> `moe.reference`'s (plain torch, the
  exact math: see that module).

It lives in `moe/`, not `ops/`: it calls `moe.reference`, which builds on the dense ops, and
the package's parts must not import each other both ways (tests/test_package_imports.py).

`prepare_moe_weights` puts checkpoint weights into the layout the implementation that will
serve them reads (load time, not an op).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

import torch

from vllm_rdna_w8a8.moe import reference as moe_reference
from vllm_rdna_w8a8.ops import reference as dense_reference
from vllm_rdna_w8a8.ops.custom_ops import _implementation, _register

HIP_MODULE = "vllm_rdna_w8a8.moe.hip_backend"


def _hip_module() -> ModuleType:
    try:
        return importlib.import_module(HIP_MODULE)
    except ModuleNotFoundError as missing:
        if missing.name != HIP_MODULE:
            raise
        raise NotImplementedError(
            f"rdna_w8a8's MoE ops have no HIP implementation in this build ({HIP_MODULE} is missing); "
            "set VLLM_RDNA_W8A8_OPS=reference to run the plain-torch one"
        ) from None


def hip_available() -> bool:
    """True when this build has the HIP implementation (`moe/hip_backend.py`)."""
    try:
        _hip_module()
    except NotImplementedError:
        return False
    return True


def _serves_with_hip(x: torch.Tensor) -> bool:
    # the dense ops' rule (device, emulation switch, VLLM_RDNA_W8A8_OPS), asked once
    return _implementation(x) is not dense_reference


def _moe_implementation(name: str, x: torch.Tensor) -> Callable[..., torch.Tensor]:
    """The function `name` of the implementation that serves `x` (same signature in both)."""
    return getattr(_hip_module() if _serves_with_hip(x) else moe_reference, name)


def _int8_moe_fake(
    x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor, w2_scale: torch.Tensor,
    topk_weights: torch.Tensor, topk_ids: torch.Tensor,
) -> torch.Tensor:
    moe_reference.check_int8_moe_args(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids)
    return x.new_empty(x.shape)


@_register(_int8_moe_fake)
def _int8_moe(
    x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor, w2_scale: torch.Tensor,
    topk_weights: torch.Tensor, topk_ids: torch.Tensor,
) -> torch.Tensor:
    return _moe_implementation("int8_moe", x)(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids)


def _fp8_moe_fake(
    x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor, w2_scale: torch.Tensor,
    topk_weights: torch.Tensor, topk_ids: torch.Tensor, a13_scale: torch.Tensor | None = None,
    a2_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    moe_reference.check_fp8_moe_args(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids)
    return x.new_empty(x.shape)


@_register(_fp8_moe_fake)
def _fp8_moe(
    x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor, w2_scale: torch.Tensor,
    topk_weights: torch.Tensor, topk_ids: torch.Tensor, a13_scale: torch.Tensor | None = None,
    a2_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    return _moe_implementation("fp8_moe", x)(x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids,
                                             a13_scale, a2_scale)


# int8_moe: x [M, H] fp16/bf16, w13 [E, 2I, H] int8 (gate rows, then up rows) with
# per-channel scales [E, 2I] float32, w2 [E, H, I] int8 with scales [E, H], the top-k
# choice (weights [M, top_k] float32, expert ids [M, top_k] int32/int64) -> [M, H].
int8_moe = torch.ops.rdna_w8a8.int8_moe.default
# fp8_moe: as int8_moe with float8_e4m3fn weights, scales [E, N] (per channel) or [E, 1]
# (per tensor), and the static per-tensor activation scales of the two GEMM stages (one
# element each; None: dynamic per-token) -> [M, H].
fp8_moe = torch.ops.rdna_w8a8.fp8_moe.default


def prepare_moe_weights(w13: torch.Tensor, w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The checkpoint's (w13, w2), int8 or float8_e4m3fn, in the layout the MoE ops read on
    their device: the HIP implementation's (`hip_backend.store_expert_weight`), or unchanged
    for the reference."""
    if _serves_with_hip(w13):
        return _hip_module().store_expert_weight(w13), _hip_module().store_expert_weight(w2)
    return w13, w2
