"""The package's settings and device policy, in one place that imports neither torch nor vLLM
(`ops/`, `runtime/`, the plugin and the tools read them here):

- `VLLM_RDNA_W8A8_EMULATE` (`emulated_targets`): the emulated gfx11 backend's devices;
- `VLLM_RDNA_W8A8_OPS` (`ops_backend`): "auto" (our kernels where available) or "reference"
  (plain torch);
- `is_gfx11`: the targets this package ships kernels for.

The ops ask for every call, so each value is parsed once (per distinct value: a process
that changes the environment, as tests do, sees the change).
"""

from __future__ import annotations

import functools
import os
import re

from vllm_rdna_w8a8.build.targets import GFX11_TARGETS

EMULATE_ENV = "VLLM_RDNA_W8A8_EMULATE"
OPS_ENV = "VLLM_RDNA_W8A8_OPS"
OPS_CHOICES = ("auto", "reference")

# A gfx target name as ROCm reports it without feature suffixes (gfx1100, gfx90a, gfx942).
_TARGET_NAME = re.compile(r"gfx[0-9a-f]{3,4}")


def emulated_targets() -> tuple[str, ...]:
    """The emulated devices' targets in device order, from $VLLM_RDNA_W8A8_EMULATE: one
    gfx11 target, or a comma-separated list such as "gfx1100,gfx1151"; () when unset or
    empty. Non-gfx11 names in a list (e.g. "gfx1100,gfx1030") model the other GPUs of a mixed
    machine: they run none of our code objects. At least one device must be gfx11."""
    return _parse_emulated_targets(os.environ.get(EMULATE_ENV, "").strip())


@functools.lru_cache(maxsize=16)
def _parse_emulated_targets(value: str) -> tuple[str, ...]:
    if not value:
        return ()
    targets = tuple(name.strip() for name in value.split(","))
    if not all(_TARGET_NAME.fullmatch(name) for name in targets) or not any(
        name in GFX11_TARGETS for name in targets
    ):
        raise ValueError(
            f"{EMULATE_ENV}={value!r} is not an emulated device list; use one of "
            f"{', '.join(GFX11_TARGETS)}, or several gfx targets separated by commas with at "
            "least one of those (e.g. gfx1100,gfx1151)"
        )
    return targets


def emulated_target() -> str | None:
    """The target of the first emulated device, or None when emulation is off."""
    targets = emulated_targets()
    return targets[0] if targets else None


def ops_backend() -> str:
    """`VLLM_RDNA_W8A8_OPS`: "auto" (kernels where available) or "reference" (plain torch)."""
    return _parse_ops_backend(os.environ.get(OPS_ENV, "auto"))


@functools.lru_cache(maxsize=16)
def _parse_ops_backend(value: str) -> str:
    backend = value.strip().lower() or "auto"
    if backend not in OPS_CHOICES:
        raise ValueError(f"{OPS_ENV}={backend!r} is not one of {', '.join(OPS_CHOICES)}")
    return backend


def is_gfx11(target: str | None) -> bool:
    """True for the gfx11 targets this package ships kernels for (suffixes ignored)."""
    return target is not None and target.split(":", 1)[0] in GFX11_TARGETS
