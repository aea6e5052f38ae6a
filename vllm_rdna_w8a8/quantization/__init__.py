"""The `rdna_w8a8` quantization method (`--quantization rdna_w8a8`).

Registration is cheap: vLLM gets `LazyRdnaW8A8Config`, a stand-in that answers vLLM's
class-level questions itself and builds the real config (an import of about two
seconds) only when a model is actually loaded with this method: `RdnaW8A8Config` (a
compressed-tensors subclass) for compressed-tensors checkpoints and unquantized ones,
`RdnaW8A8QuarkConfig` (a Quark subclass) for AMD Quark checkpoints.
"""

from __future__ import annotations

from typing import Any

from vllm.model_executor.layers.quantization.base_config import QuantizationConfig

QUANTIZATION_NAME = "rdna_w8a8"
COMPRESSED_TENSORS = "compressed-tensors"
QUARK = "quark"
CHECKPOINT_METHODS = (COMPRESSED_TENSORS, QUARK)


def accepts_checkpoint(hf_quant_cfg: dict[str, Any], user_quant: str | None) -> bool:
    """True when the user asked for rdna_w8a8 on a compressed-tensors or Quark checkpoint."""
    return user_quant == QUANTIZATION_NAME and hf_quant_cfg.get("quant_method") in CHECKPOINT_METHODS


def _real_config_class(quant_method: str = COMPRESSED_TENSORS) -> type[QuantizationConfig]:
    from vllm_rdna_w8a8.quantization.rdna_w8a8 import RdnaW8A8Config, RdnaW8A8QuarkConfig

    return RdnaW8A8QuarkConfig if quant_method == QUARK else RdnaW8A8Config


class LazyRdnaW8A8Config(QuantizationConfig):
    """What vLLM's registry holds under "rdna_w8a8"; every instance it makes is a
    `RdnaW8A8Config`.

    vLLM only touches the registered class through the class methods below and by
    calling it with no arguments (unquantized checkpoint: online quantization); the
    abstract instance methods live on the real classes, as this one is never built.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> QuantizationConfig:  # type: ignore[misc]
        return _real_config_class()(*args, **kwargs)

    @classmethod
    def get_config_filenames(cls) -> list[str]:
        # Empty: with no quantization_config in the checkpoint vLLM calls cls().
        return []

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> QuantizationConfig:
        return _real_config_class(config.get("quant_method", COMPRESSED_TENSORS)).from_config(config)

    @classmethod
    def override_quantization_method(
        cls, hf_quant_cfg: dict[str, Any], user_quant: str | None, hf_config: Any = None
    ) -> str | None:
        # Asked by vLLM for every quantized checkpoint: answer without the heavy import.
        return QUANTIZATION_NAME if accepts_checkpoint(hf_quant_cfg, user_quant) else None


def register_quantization_method() -> None:
    """Register `rdna_w8a8` with vLLM (idempotent: re-registering replaces the entry)."""
    from vllm.model_executor.layers.quantization import register_quantization_config

    register_quantization_config(QUANTIZATION_NAME)(LazyRdnaW8A8Config)
