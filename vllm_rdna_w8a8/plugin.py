"""What `vllm_rdna_w8a8.register()` does, once per process, summed up in one log line.

- Always (on a supported vLLM): registers the `rdna_w8a8` quantization method, so one
  serve command works on every machine (upstream kernels off gfx11).
- On ROCm: puts our HIP kernel classes first in vLLM's ROCm scaled-mm lists; their
  `is_supported` decides per device (gfx11 with a loadable code object) at model
  construction, so a non-gfx11 GPU in the same box stays on upstream kernels.
- With `VLLM_RDNA_W8A8_EMULATE=<gfx11 target>` on the CPU: the same, in the CPU lists.
- On the CPU with the emulated backend or `VLLM_RDNA_W8A8_CPU_WORKAROUNDS=1` (our tests and
  CPU examples): the workarounds of vLLM-CPU defects in `cpu_stack.py`'s ledger.

No GPU is initialised here: the ROCm arch comes from vLLM's amdsmi query.

The line goes to vLLM's "vllm" logger. vLLM 0.32 configures that logger only at its
entry points (`LLM(...)`, the CLI, engine and worker processes), and `LLM(...)` loads
plugins before it does so; a line logged then would be dropped, so we apply vLLM's own
default configuration first when nothing is configured yet (see `_ensure_vllm_logging`).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vllm.platforms import PlatformEnum

logger = logging.getLogger("vllm.rdna_w8a8")

SUPPORTED_VLLM = ((0, 32), (0, 33))

_outcome: str | None = None


def vllm_version() -> str:
    from vllm.version import __version__

    return __version__


def is_supported_vllm(version: str) -> bool:
    match = re.match(r"(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) in SUPPORTED_VLLM


def register_plugin() -> str:
    """Register everything once per process and log one line; returns that line."""
    global _outcome
    if _outcome is None:
        try:
            _outcome, level = _register(), logging.INFO
        except Exception as exc:  # never raise into vLLM
            _outcome = f"rdna_w8a8: registration failed ({type(exc).__name__}: {exc}), staying out of the way"
            level = logging.WARNING
        _ensure_vllm_logging()
        logger.log(level, _outcome)
    return _outcome


def _ensure_vllm_logging() -> None:
    """Give the "vllm" logger vLLM's default configuration if it has no handler yet.

    Done the way vLLM's entry points do it (`configure_logging_if_needed`, which
    honours VLLM_CONFIGURE_LOGGING and VLLM_LOGGING_*): an entry point that later
    brings the same config skips it, one with a different config re-applies its own.
    Left alone when any handler is set (vLLM's, or an application's on the root logger).
    """
    if logging.getLogger("vllm").hasHandlers():
        return
    try:
        from vllm.config.logging import LoggingConfig
        from vllm.logger import configure_logging_if_needed

        configure_logging_if_needed(LoggingConfig())
    except Exception:  # another vLLM layout, or a bad logging setting vLLM will report itself
        return


def _rocm_arch() -> str:
    # Resolved by vLLM at import through amdsmi (device 0), without initialising the GPU.
    from vllm.platforms import rocm

    arch = getattr(rocm, "_GCN_ARCH", None) or "unknown arch"
    return arch.split(":", 1)[0]


def _code_object_problem(target: str, kind: str) -> str | None:
    """Why `target`'s code objects cannot serve layers of `kind` ("i8", "f8"), or None: a
    damaged object takes away only the kernels it holds."""
    from vllm_rdna_w8a8.runtime.launcher import missing_reason
    from vllm_rdna_w8a8.scaled_mm.support import kernel_names

    return missing_reason(target, kernel_names(kind))


def _route(platform: "PlatformEnum", label: str, target: str) -> str:
    """Put our classes first in `platform`'s lists; the log line for `target`."""
    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipFp8ScaledMMLinearKernel, RdnaHipInt8ScaledMMLinearKernel
    from vllm_rdna_w8a8.scaled_mm.registry import insert_kernels
    from vllm_rdna_w8a8.settings import is_gfx11

    classes = ", ".join(insert_kernels(platform))
    if not is_gfx11(target):
        return f"rdna_w8a8: {label} is not gfx11, {classes} registered but will decline; staying on upstream kernels"
    ours = {"int8": ("i8", RdnaHipInt8ScaledMMLinearKernel), "fp8": ("f8", RdnaHipFp8ScaledMMLinearKernel)}
    problems = {precision: problem for precision, (kind, _class) in ours.items()
                if (problem := _code_object_problem(target, kind))}
    served = [precision for precision in ours if precision not in problems]
    if not problems:
        return f"rdna_w8a8: {label}, HIP code objects present, int8+fp8 W8A8 routed to {classes}"
    if not served:
        why = "; ".join(dict.fromkeys(problems.values()))
        return (f"rdna_w8a8: {label}, no usable code object ({why}), {classes} registered but will "
                f"decline; staying on upstream kernels")
    staying = "; ".join(f"{precision} W8A8 staying on upstream kernels ({why})" for precision, why in problems.items())
    return (f"rdna_w8a8: {label}, {'+'.join(served)} W8A8 routed to "
            f"{', '.join(ours[precision][1].__name__ for precision in served)}; {staying}")


def _register() -> str:
    version = vllm_version()
    if not is_supported_vllm(version):
        supported = "/".join(f"{major}.{minor}" for major, minor in SUPPORTED_VLLM)
        return f"rdna_w8a8: vLLM {version} unsupported (need {supported}), staying out of the way"

    from vllm.platforms import PlatformEnum, current_platform

    from vllm_rdna_w8a8 import cpu_stack
    from vllm_rdna_w8a8.quantization import register_quantization_method
    from vllm_rdna_w8a8.settings import emulated_targets, is_gfx11

    register_quantization_method()
    if current_platform.is_rocm():
        arch = _rocm_arch()
        return _route(PlatformEnum.ROCM, arch, arch)
    emulated = emulated_targets()
    workarounds = ""
    if current_platform.is_cpu() and (emulated or cpu_stack.workarounds_requested()):
        cpu_stack.apply_workarounds()  # vLLM-CPU defects: cpu_stack's ledger
        workarounds = f", vLLM-CPU defect workarounds on ({cpu_stack.WORKAROUNDS_ENV})"
    if emulated and current_platform.is_cpu():
        # A mixed list (gfx1030,gfx1100) is served on its gfx11 devices: name them all.
        served = next(target for target in emulated if is_gfx11(target))
        return _route(PlatformEnum.CPU, f"emulated {','.join(emulated)} on CPU", served)
    platform = current_platform.device_name or "unspecified"
    return f"rdna_w8a8: platform {platform}, quantization method registered, staying on upstream kernels{workarounds}"
