"""Facts that decide whether our HIP kernels can serve a layer in this process.

Hardware and build facts only (platform, device target, code objects); layer facts
belong to the kernel classes' `can_implement`. Everything GPU-related is imported
lazily so that the plugin's registration stays cheap on machines without ROCm.
"""

from __future__ import annotations

import functools

from vllm.platforms import current_platform

from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8 import settings

QUANT_KERNELS = ("w8a8_quant_i8_f16", "w8a8_quant_i8_bf16")
SILU_MUL_QUANT_KERNELS = ("w8a8_silu_mul_quant_i8_f16", "w8a8_silu_mul_quant_i8_bf16")
MOE_KIND = "moe"  # W8A8 expert layers, int8 and fp8 (moe/hip_backend.py)


def kernel_names(kind: str) -> list[str]:
    """Every kernel a layer of `kind` may launch: each GEMM tile config, and for int8
    ("i8") both quantizers and the fused decode GEMMs (fp8 ("f8") activations are quantized
    by vLLM's QuantFP8); for MoE expert layers (MOE_KIND) both quantizers, both fused
    SiLU-and-mul quantizers and each tile config's int8 and fp8 grouped GEMMs."""
    from vllm_rdna_w8a8.dispatch import load_tile_configs
    from vllm_rdna_w8a8.dispatch.tile_configs import FUSED_INPUT_DTYPES, MOE_ACTIVATION_DTYPES

    configs = load_tile_configs()
    if kind == MOE_KIND:
        return [*QUANT_KERNELS, *SILU_MUL_QUANT_KERNELS,
                *(config.moe_kernel_name(dtype, operand) for config in configs
                  for dtype in MOE_ACTIVATION_DTYPES for operand in ("i8", "f8"))]
    gemms = [config.kernel_name(kind) for config in configs]
    if kind != "i8":
        return gemms
    fused = [config.fused_kernel_name(dtype) for config in configs if config.is_decode
             for dtype in FUSED_INPUT_DTYPES]
    return [*QUANT_KERNELS, *gemms, *fused]


def current_device_index() -> int | None:
    """The device this process runs layers on: torch's current ROCm device, the thread's
    emulated device when emulated (`runtime.device.emulated_device`), None on any other
    platform."""
    if current_platform.is_rocm():
        import torch

        return torch.cuda.current_device()
    if current_platform.is_cpu() and settings.emulated_target() is not None:
        from vllm_rdna_w8a8.runtime.device import emulated_device_index

        return emulated_device_index()
    return None


def device_target(device_index: int) -> str | None:
    from vllm_rdna_w8a8.runtime.device import gfx_target

    return gfx_target(device_index)


@functools.lru_cache(maxsize=None)
def code_object_problem(device_index: int, target: str, kind: str = "i8") -> str | None:
    """Why the code objects for `target` cannot serve `kind` layers on device
    `device_index`, or None.

    Cached: is_supported runs for every linear layer, the answer never changes in a
    process (code objects are package data).
    """
    try:
        from vllm_rdna_w8a8.runtime import launcher
    except ImportError as exc:
        return f"needs the HIP runtime module ({exc})"
    names = kernel_names(kind)
    missing = launcher.missing_reason(target, names)
    if missing:
        return missing
    # Load every kernel the kind may launch (so every code object) now: a load first tried
    # during vLLM's profile run would stop the engine instead of leaving the layer on
    # upstream kernels, and one inside HIP graph capture must not happen.
    try:
        for name in names:
            launcher.get_kernel(device_index, name)
    except Exception as exc:  # any load failure means: stay on upstream kernels
        return f"cannot load the {target} code object ({type(exc).__name__}: {exc})"
    return None


def hip_kernels_usable(kind: str = "i8") -> tuple[bool, str | None]:
    """(ok, reason) for vLLM's `is_supported`: ROCm gfx11 or the emulated gfx11
    backend, with a loadable code object for the device's exact target. Never raises:
    a failed query is a reason to stay on upstream kernels."""
    try:
        return _hip_kernels_usable(kind)
    except Exception as exc:
        return False, f"could not check the device ({type(exc).__name__}: {exc})"


def _hip_kernels_usable(kind: str) -> tuple[bool, str | None]:
    device_index = current_device_index()
    if device_index is None:
        return False, (
            "requires ROCm on a gfx11 GPU (or VLLM_RDNA_W8A8_EMULATE on CPU); "
            f"platform is {current_platform.device_name or 'unspecified'}"
        )
    target = device_target(device_index)
    if not settings.is_gfx11(target):
        return False, (
            f"requires a gfx11 target ({', '.join(GFX11_TARGETS)}); "
            f"device {device_index} is {target or 'unknown'}"
        )
    if settings.ops_backend() == "reference":
        return True, None  # the ops run in plain torch: no code object needed
    problem = code_object_problem(device_index, target, kind)
    if problem:
        return False, problem
    return True, None
