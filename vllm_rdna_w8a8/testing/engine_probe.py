"""Ask a running vLLM engine which kernel serves each linear layer, inside its workers.

`LLM.apply_model(describe_linear_kernels)` runs `describe_linear_kernels` on the model in
every worker process (one result per tensor-parallel rank). vLLM sends the function to
the engine process by pickle, which it only allows with
``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` (set it for trusted, local engines only).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Any

# Objects hanging off a linear layer that may hold the scaled-mm kernel: compressed-tensors
# keeps it on `layer.scheme` (`kernel`, or `fp8_linear` for fp8), other methods on the
# quant method itself.
_KERNEL_HOLDERS = ("scheme", "quant_method")


def _kernel_base_classes() -> tuple[type, ...]:
    bases: list[type] = []
    try:
        from vllm.model_executor.kernels.linear.scaled_mm.ScaledMMLinearKernel import ScaledMMLinearKernel

        bases.append(ScaledMMLinearKernel)
    except ImportError:
        pass
    try:
        from vllm.model_executor.kernels.linear.base import MMLinearKernel

        bases.append(MMLinearKernel)
    except ImportError:
        pass
    return tuple(bases)


def _find_kernel(layer: Any, kernel_bases: tuple[type, ...]) -> Any | None:
    for holder_name in _KERNEL_HOLDERS:
        holder = getattr(layer, holder_name, None)
        if holder is None:
            continue
        if kernel_bases and isinstance(holder, kernel_bases):
            return holder
        for value in getattr(holder, "__dict__", {}).values():
            if kernel_bases and isinstance(value, kernel_bases):
                return value
    return None


def describe_linear_kernels(model: Any) -> dict[str, Any]:
    """What serves the linear layers of `model` in this process.

    Returns ``{"pid", "plugin_loaded", "layers": {layer name: class name}, "experts":
    {MoE layer name: experts class name}, "hip_kernels_loaded", "hip_kernels_launched"}``
    where a linear layer's class is the scaled-mm kernel's when the layer has one, else the
    layer's quant method's (e.g. ``UnquantizedEmbeddingMethod`` for an unquantized lm_head), and a MoE
    layer's is the experts class of its method's modular kernel.
    """
    from vllm.model_executor.layers.linear import LinearBase
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    kernel_bases = _kernel_base_classes()
    layers: dict[str, str] = {}
    experts: dict[str, str] = {}
    for name, module in model.named_modules():
        quant_method = getattr(module, "quant_method", None)
        moe_kernel = getattr(quant_method, "moe_kernel", None)
        if moe_kernel is not None:
            experts[name] = type(moe_kernel.fused_experts).__name__
        if quant_method is None or not isinstance(module, (LinearBase, ParallelLMHead)):
            continue
        kernel = _find_kernel(module, kernel_bases)
        layers[name] = type(kernel if kernel is not None else quant_method).__name__
    return {
        "pid": os.getpid(),
        "plugin_loaded": "vllm_rdna_w8a8.plugin" in sys.modules,
        "layers": layers,
        "experts": experts,
        "hip_kernels_loaded": _loaded_hip_kernels(),
        "hip_kernels_launched": _launch_counts(),
    }


def count_hip_launches(model: Any) -> None:
    """For `LLM.apply_model` before generating: from now on count, in every worker, the launches
    of our HIP kernels per name (`describe_linear_kernels` reports them). Loading proves little:
    readiness loads every kernel a layer kind may launch."""
    from vllm_rdna_w8a8.testing.launch_counter import count_launches_from_now

    count_launches_from_now()


def _launch_counts() -> dict[str, int] | None:
    """Launches per kernel name since `count_hip_launches`, None if it did not run here."""
    counter = sys.modules.get("vllm_rdna_w8a8.testing.launch_counter")
    return None if counter is None else counter.process_launch_counts()


def _loaded_hip_kernels() -> list[str]:
    """Names of our HIP kernels this process has loaded through the launcher (on a GPU or
    in the emulator); empty when the ops ran on the reference implementation."""
    launcher = sys.modules.get("vllm_rdna_w8a8.runtime.launcher")
    if launcher is None:  # never imported: nothing launched (and no import just to ask)
        return []
    return launcher.loaded_kernels()


def summarize(per_worker: list[dict[str, Any]]) -> dict[str, int]:
    """Count of linear layers per serving class over all workers, most frequent first."""
    counts: Counter[str] = Counter()
    for worker in per_worker:
        counts.update(worker["layers"].values())
    return dict(counts.most_common())
