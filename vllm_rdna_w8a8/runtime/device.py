"""Which gfx target a device is: real ROCm devices, or the emulated gfx11 device."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

from vllm_rdna_w8a8 import settings
from vllm_rdna_w8a8.settings import EMULATE_ENV


# CPU tensors carry no device index: on the emulated backend, the device a thread's CPU
# tensors are on (what `tensor.device.index` says on ROCm) is set with `emulated_device`.
_emulated_placement = threading.local()


def emulated_device_index() -> int:
    """The emulated device this thread's CPU tensors are on (0 unless `emulated_device`)."""
    return getattr(_emulated_placement, "index", 0)


@contextlib.contextmanager
def emulated_device(device_index: int) -> Iterator[None]:
    """Within the block, this thread's CPU tensors are on emulated device `device_index`
    (the stand-in for a ROCm tensor on cuda:<index>; the HIP runtime's current device is
    not changed, just as a tensor's device does not change torch's current device)."""
    gfx_target(device_index)  # checks the index
    previous = emulated_device_index()
    _emulated_placement.index = device_index
    try:
        yield
    finally:
        _emulated_placement.index = previous


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
    the emulated device's target in emulated mode, or None if not ROCm."""
    _check_device_index(device_index)
    emulated = settings.emulated_targets()
    if emulated:
        setting = ",".join(emulated)
        real_devices = _real_rocm_device_count()
        if real_devices:
            raise RuntimeError(
                f"{EMULATE_ENV}={setting} is set on a machine with {real_devices} real ROCm "
                f"GPU(s): the emulated backend is for machines without one; unset {EMULATE_ENV}"
            )
        if device_index >= len(emulated):
            raise ValueError(f"the emulated backend has {len(emulated)} device(s) "
                             f"({EMULATE_ENV}={setting}), asked for device {device_index}")
        return emulated[device_index]
    if not torch_is_rocm():
        return None
    return _rocm_target(device_index)

