"""`--quantization rdna_w8a8` on AMD Quark checkpoints (`quant_method: quark`).

The quantization configs in quark_configs/ are what amd-quark exported for the tiny
checkpoints (`vllm_rdna_w8a8.testing.tiny_model`, schemes quark-*); the slow test
tests/testing/test_tiny_model_quark.py rebuilds them with amd-quark and checks they still
match, so these fast tests never import Quark (its import alone takes about 30 s here).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from vllm.model_executor.layers.linear import ReplicatedLinear, UnquantizedLinearMethod
from vllm.model_executor.layers.quantization.quark.quark import QuarkConfig, QuarkLinearMethod
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

from vllm_rdna_w8a8.quantization import LazyRdnaW8A8Config
from vllm_rdna_w8a8.quantization.rdna_w8a8 import RdnaW8A8QuarkConfig
from vllm_rdna_w8a8.testing.tiny_model import QUARK_SCHEMES, TinyModelSpec, build_tokenizer

QUARK_CONFIGS = Path(__file__).with_name("quark_configs")
# checkpoint scheme -> (upstream Quark scheme class, our kernel class on gfx11)
EXPECTED = {
    "quark-int8": ("QuarkW8A8Int8", "RdnaHipInt8ScaledMMLinearKernel"),
    "quark-int8-dynamic": ("QuarkW8A8Int8", "RdnaHipInt8ScaledMMLinearKernel"),
    "quark-fp8": ("QuarkW8A8Fp8", "RdnaHipFp8ScaledMMLinearKernel"),
    "quark-ptpc-fp8": ("QuarkW8A8Fp8", "RdnaHipFp8ScaledMMLinearKernel"),
}


def quark_config(scheme: str) -> dict:
    return json.loads((QUARK_CONFIGS / f"{scheme}.json").read_text())


def test_every_quark_scheme_has_its_exported_config() -> None:
    assert sorted(EXPECTED) == sorted(QUARK_SCHEMES)
    assert sorted(path.stem for path in QUARK_CONFIGS.glob("*.json")) == sorted(QUARK_SCHEMES)


@pytest.mark.parametrize(("user", "expected"), [("rdna_w8a8", "rdna_w8a8"), (None, None), ("quark", None)])
def test_override_claims_quark_checkpoints_only_when_asked(user: str | None, expected: str | None) -> None:
    cfg = quark_config("quark-int8")
    assert LazyRdnaW8A8Config.override_quantization_method(cfg, user) == expected
    assert RdnaW8A8QuarkConfig.override_quantization_method(cfg, user) == expected


@pytest.mark.parametrize("scheme", sorted(EXPECTED))
def test_parsing_is_upstream_quarks(scheme: str) -> None:
    ours = LazyRdnaW8A8Config.from_config(quark_config(scheme))
    upstream = QuarkConfig.from_config(quark_config(scheme))
    assert type(ours) is RdnaW8A8QuarkConfig and isinstance(ours, QuarkConfig)
    assert ours.get_name() == "rdna_w8a8"
    assert ours.quant_config == upstream.quant_config
    assert (ours.kv_cache_group, ours.kv_cache_config, ours.pack_method) == (
        upstream.kv_cache_group, upstream.kv_cache_config, upstream.pack_method)


@pytest.fixture
def fp8_engine_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quark's fp8 scheme reads the model dtype from the engine's config, absent in a unit test."""
    from vllm.model_executor.layers.quantization.quark.schemes import quark_w8a8_fp8

    engine_config = SimpleNamespace(model_config=SimpleNamespace(dtype=torch.float16))
    monkeypatch.setattr(quark_w8a8_fp8, "get_current_vllm_config", lambda: engine_config)


def _down_proj(config: object) -> ReplicatedLinear:
    from vllm.config import CompilationConfig, VllmConfig, set_current_vllm_config

    # K = 344 as in the tiny model: not a multiple of 16, our classes pad it
    with set_current_vllm_config(VllmConfig(compilation_config=CompilationConfig(custom_ops=["none"]))):
        return ReplicatedLinear(344, 32, bias=False, quant_config=config, prefix="model.layers.0.mlp.down_proj")


def _serving_kernel(layer: ReplicatedLinear) -> str:
    scheme = layer.scheme
    return type(getattr(scheme, "kernel", None) or scheme.fp8_linear).__name__


@pytest.mark.parametrize("scheme", sorted(EXPECTED))
def test_quark_w8a8_layers_get_our_kernel_where_usable(ours_on_cpu, fp8_engine_dtype, plugin_messages,
                                                       scheme: str) -> None:
    """Where our class is usable (gfx11, emulated here as our class first in the CPU
    lists and usable) every Quark W8A8 scheme's layer is served by it, and nothing is
    logged as left upstream."""
    layer = _down_proj(LazyRdnaW8A8Config.from_config(quark_config(scheme)))
    scheme_class, our_kernel = EXPECTED[scheme]
    assert isinstance(layer.quant_method, QuarkLinearMethod)
    assert type(layer.scheme).__name__ == scheme_class
    assert _serving_kernel(layer) == our_kernel
    assert plugin_messages() == []


@pytest.mark.parametrize("scheme", sorted(EXPECTED))
def test_upstream_kernel_where_ours_is_not_supported(fp8_engine_dtype, scheme: str) -> None:
    ours = _down_proj(LazyRdnaW8A8Config.from_config(quark_config(scheme)))
    upstream = _down_proj(QuarkConfig.from_config(quark_config(scheme)))
    assert _serving_kernel(ours) == _serving_kernel(upstream)
    assert not _serving_kernel(ours).startswith("RdnaHip")


def test_excluded_lm_head_stays_unquantized() -> None:
    config = LazyRdnaW8A8Config.from_config(quark_config("quark-int8-dynamic"))
    assert config.quant_config["exclude"] == ["lm_head"]
    lm_head = ParallelLMHead.__new__(ParallelLMHead)
    torch.nn.Module.__init__(lm_head)
    assert config.get_quant_method(lm_head, "lm_head") is None
    layer = ReplicatedLinear(64, 32, bias=False, quant_config=config, prefix="lm_head")
    assert isinstance(layer.quant_method, UnquantizedLinearMethod)


def test_non_w8a8_quark_layers_are_named_once_in_the_log(plugin_messages) -> None:
    cfg = quark_config("quark-int8-dynamic")
    int4 = {"dtype": "int4", "qscheme": "per_group", "group_size": 32, "ch_axis": 1, "symmetric": True,
            "is_dynamic": False, "scale_type": "float"}
    cfg["global_quant_config"] = {**cfg["global_quant_config"], "weight": int4, "input_tensors": None}
    config = LazyRdnaW8A8Config.from_config(cfg)
    for prefix in ("model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"):
        ReplicatedLinear(128, 64, bias=False, quant_config=config, prefix=prefix)
    assert plugin_messages() == [
        "rdna_w8a8: QuarkW4A16Int4 layers (first: model.layers.0.mlp.down_proj) are not W8A8 int8 or fp8, "
        "served by upstream kernels"]


def test_vllm_accepts_a_quark_checkpoint_under_rdna_w8a8(tmp_path: Path) -> None:
    """vLLM's config validation: before rdna_w8a8 claimed Quark checkpoints it stopped with
    'Quantization method specified in the model config (quark) does not match'."""
    from transformers import LlamaConfig
    from vllm.config import ModelConfig

    from vllm_rdna_w8a8.quantization import register_quantization_method

    register_quantization_method()
    spec = TinyModelSpec()
    hf_config = LlamaConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
                            intermediate_size=spec.intermediate_size, num_hidden_layers=1,
                            num_attention_heads=spec.num_attention_heads,
                            num_key_value_heads=spec.num_key_value_heads)
    hf_config.architectures = ["LlamaForCausalLM"]
    hf_config.quantization_config = quark_config("quark-int8")
    hf_config.save_pretrained(tmp_path)
    build_tokenizer(spec).save_pretrained(tmp_path)
    assert ModelConfig(model=str(tmp_path), dtype="float16").quantization == "quark"
    assert ModelConfig(model=str(tmp_path), dtype="float16", quantization="rdna_w8a8").quantization == "rdna_w8a8"
