"""vLLM plugin: shape-tuned HIP W8A8 (int8 / fp8) scaled-mm kernels for AMD RDNA3 (gfx11).

Only `register()` lives here: vLLM calls it through the `vllm.general_plugins` entry
point in every process, so importing this package must stay cheap (no torch, no vLLM,
no GPU) and `register()` must never raise into vLLM.
"""

import logging

__all__ = ["register"]

_import_failure_logged = False


def register() -> None:
    """Entry point of `vllm.general_plugins`: idempotent, logs one line per process."""
    global _import_failure_logged
    try:
        from vllm_rdna_w8a8.plugin import register_plugin
    except Exception as exc:  # vLLM must start even if the plugin cannot
        if not _import_failure_logged:
            _import_failure_logged = True
            logging.getLogger("vllm.rdna_w8a8").warning(
                "rdna_w8a8: registration failed (%s: %s), staying out of the way",
                type(exc).__name__,
                exc,
            )
        return
    register_plugin()  # catches and logs its own failures
