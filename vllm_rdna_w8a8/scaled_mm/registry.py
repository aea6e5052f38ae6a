"""The one place that edits vLLM's private scaled-mm kernel lists.

Ledger (vllm-ascend style):
- What: put our kernel classes at index 0 of `_POSSIBLE_INT8_KERNELS[ROCM]` and
  `_POSSIBLE_FP8_KERNELS[ROCM]` (and of their `[CPU]` lists only when the gfx11 backend
  is emulated on the CPU), in
  `vllm/model_executor/kernels/linear/__init__.py` (vLLM 0.32 and 0.33).
- Why index 0: the lists are priority order and `choose_scaled_mm_linear_kernel`
  takes the first class whose `is_supported` and `can_implement` say yes. vLLM's own
  `register_linear_kernel` appends, which would put us behind
  `TritonInt8ScaledMMLinearKernel`, which accepts every int8 layer on ROCm (fp8: behind
  the torch fallbacks).
  The dicts are read at call time, so inserting before model construction works.
- Safe off gfx11: our `is_supported` says no there, and selection moves on to the
  next (upstream) class; `VLLM_DISABLED_KERNELS=RdnaHipInt8ScaledMMLinearKernel`
  (or `...,RdnaHipFp8ScaledMMLinearKernel`) returns a user to upstream.
- Remove when: vLLM offers a public way to register a scaled-mm kernel with a
  priority (or ships gfx11-tuned kernels of its own).
"""

from __future__ import annotations

import logging

from vllm.platforms import PlatformEnum

logger = logging.getLogger("vllm.rdna_w8a8")

# Names of vLLM's registries this module edits, by precision.
INT8_REGISTRY = "_POSSIBLE_INT8_KERNELS"
FP8_REGISTRY = "_POSSIBLE_FP8_KERNELS"


def _kernel_registries() -> dict[str, tuple[dict, list[type]]]:
    """registry name -> (vLLM's dict, our classes for it, highest priority first)."""
    from vllm.model_executor.kernels import linear

    from vllm_rdna_w8a8.scaled_mm.rdna_hip import (
        RdnaHipFp8ScaledMMLinearKernel,
        RdnaHipInt8ScaledMMLinearKernel,
    )

    ours = {INT8_REGISTRY: [RdnaHipInt8ScaledMMLinearKernel], FP8_REGISTRY: [RdnaHipFp8ScaledMMLinearKernel]}
    registries = {}
    for name, classes in ours.items():
        table = getattr(linear, name, None)
        if not isinstance(table, dict):
            raise RuntimeError(
                f"vllm.model_executor.kernels.linear.{name} not found: this vLLM's kernel "
                "registry differs from 0.32/0.33"
            )
        registries[name] = (table, classes)
    return registries


def insert_kernels(platform: PlatformEnum) -> list[str]:
    """Put our kernel classes first in vLLM's lists for `platform`. Idempotent.

    Returns the names of the classes now at the front (for the plugin's log line).
    """
    inserted: list[str] = []
    for registry_name, (table, classes) in _kernel_registries().items():
        kernels = table.setdefault(platform, [])
        for kernel in reversed(classes):
            # Compare by name: a re-imported module gives a new class object.
            kernels[:] = [k for k in kernels if k.__name__ != kernel.__name__]
            kernels.insert(0, kernel)
        names = [k.__name__ for k in classes]
        inserted += names
        logger.debug(
            "rdna_w8a8: %s[%s] now starts with %s", registry_name, platform.name, names
        )
    return inserted


def upstream_int8_kernel(config: object) -> type:
    """The int8 class vLLM picks for the layer `config` when ours is left out of its list: for
    a layer ours took that turns out, once its weight is loaded, to be one it cannot serve."""
    from vllm.model_executor.kernels import linear

    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipInt8ScaledMMLinearKernel

    ours = RdnaHipInt8ScaledMMLinearKernel.__name__
    without_ours = {platform: [k for k in kernels if k.__name__ != ours]
                    for platform, kernels in getattr(linear, INT8_REGISTRY).items()}
    return linear.choose_scaled_mm_linear_kernel(config, without_ours, quantization="int8_w8a8")
