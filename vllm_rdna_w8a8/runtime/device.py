"""Which gfx target a device is: real ROCm devices, or the emulated gfx11 device."""

from __future__ import annotations

import functools
import os

from vllm_rdna_w8a8.build.targets import GFX11_TARGETS

EMULATE_ENV = "VLLM_RDNA_W8A8_EMULATE"


def emulated_target() -> str | None:
    """The target VLLM_RDNA_W8A8_EMULATE names (validated by the emulation module), or None."""
    try:
        from vllm_rdna_w8a8.emulation import emulated_target as read_emulated_target
    except ImportError as exc:
        if os.environ.get(EMULATE_ENV, "").strip():
            raise RuntimeError(f"{EMULATE_ENV} is set but the emulator is unavailable: {exc}") from exc
        return None
    return read_emulated_target()


def torch_is_rocm() -> bool:
    import torch

    return getattr(torch.version, "hip", None) is not None


# Devices and their targets do not change within a process, and the ops ask per call.
@functools.cache
def _real_rocm_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch_is_rocm() and torch.cuda.is_available() else 0


@functools.cache
def _rocm_target(device_index: int) -> str:
    import torch

    count = torch.cuda.device_count()
    if device_index >= count:
        raise ValueError(f"device_index {device_index} out of range: {count} ROCm device(s)")
    return torch.cuda.get_device_properties(device_index).gcnArchName.split(":", 1)[0]


def clear_caches() -> None:
    """Forget the cached device facts (tests that fake devices call this)."""
    _real_rocm_device_count.cache_clear()
    _rocm_target.cache_clear()


def _check_device_index(device_index: int) -> None:
    if isinstance(device_index, bool) or not isinstance(device_index, int):
        raise TypeError(f"device_index must be an int, got {type(device_index).__name__}")
    if device_index < 0:
        raise ValueError(f"device_index must be >= 0, got {device_index}")


def gfx_target(device_index: int) -> str | None:
    """The gfx target of device `device_index` without feature suffixes (e.g. 'gfx1100'),
    the emulated target in emulated mode (one device, index 0), or None if not ROCm."""
    _check_device_index(device_index)
    emulated = emulated_target()
    if emulated is not None:
        real_devices = _real_rocm_device_count()
        if real_devices:
            raise RuntimeError(
                f"{EMULATE_ENV}={emulated} is set on a machine with {real_devices} real ROCm "
                f"GPU(s): the emulated backend is for machines without one; unset {EMULATE_ENV}"
            )
        if device_index != 0:
            raise ValueError(f"the emulated {emulated} backend has one device (0), "
                             f"asked for device {device_index}")
        return emulated
    if not torch_is_rocm():
        return None
    return _rocm_target(device_index)


def is_gfx11(target: str | None) -> bool:
    """True for the gfx11 targets this package ships kernels for (suffixes ignored)."""
    return target is not None and target.split(":", 1)[0] in GFX11_TARGETS
