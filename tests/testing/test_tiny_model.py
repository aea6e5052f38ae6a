"""The tiny checkpoint builder: shapes, compressed-tensors format, tokenizer, caching."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vllm_rdna_w8a8.testing import tiny_model
from vllm_rdna_w8a8.testing.tiny_model import TinyModelSpec, build_tiny_model

QUANTIZED_PROJECTIONS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def _projection_shapes(spec: TinyModelSpec) -> dict[str, tuple[int, int]]:
    kv_width = spec.num_key_value_heads * spec.head_dim
    return {
        "self_attn.q_proj": (spec.hidden_size, spec.hidden_size),
        "self_attn.k_proj": (kv_width, spec.hidden_size),
        "self_attn.v_proj": (kv_width, spec.hidden_size),
        "self_attn.o_proj": (spec.hidden_size, spec.hidden_size),
        "mlp.gate_proj": (spec.intermediate_size, spec.hidden_size),
        "mlp.up_proj": (spec.intermediate_size, spec.hidden_size),
        "mlp.down_proj": (spec.hidden_size, spec.intermediate_size),
    }


def test_config_dimensions(tiny_models: dict[str, Path]) -> None:
    spec = TinyModelSpec()
    for scheme, path in tiny_models.items():
        config = _config(path)
        assert config["architectures"] == ["LlamaForCausalLM"], scheme
        assert config["hidden_size"] == spec.hidden_size
        assert config["intermediate_size"] == spec.intermediate_size
        assert config["num_hidden_layers"] == spec.num_hidden_layers
        assert config["num_attention_heads"] == spec.num_attention_heads
        assert config["num_key_value_heads"] == spec.num_key_value_heads
        assert config["vocab_size"] == spec.vocab_size
        assert config["dtype"] == "float16"
    # down_proj's K is not a multiple of 16, also per shard at tensor parallelism 2:
    # the kernels' K padding is exercised end to end.
    assert spec.intermediate_size % 16 != 0
    assert (spec.intermediate_size // 2) % 16 != 0


def test_fp16_checkpoint_is_unquantized(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["fp16"]
    assert "quantization_config" not in _config(path)
    tensors = _tensors(path)
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    shapes = _projection_shapes(TinyModelSpec())
    for layer in range(TinyModelSpec().num_hidden_layers):
        for name, shape in shapes.items():
            assert tuple(tensors[f"model.layers.{layer}.{name}.weight"].shape) == shape


@pytest.mark.parametrize(
    ("scheme", "quant_type", "fmt", "weight_dtype"),
    [("int8", "int", "int-quantized", torch.int8), ("fp8", "float", "float-quantized", torch.float8_e4m3fn)],
)
def test_compressed_tensors_format(
    tiny_models: dict[str, Path], scheme: str, quant_type: str, fmt: str, weight_dtype: torch.dtype
) -> None:
    quant = _config(tiny_models[scheme])["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors"
    assert quant["format"] == fmt
    assert quant["quantization_status"] == "compressed"
    assert quant["ignore"] == ["lm_head"]
    (group,) = quant["config_groups"].values()
    assert group["targets"] == ["Linear"]
    weights, activations = group["weights"], group["input_activations"]
    assert (weights["num_bits"], weights["type"], weights["strategy"]) == (8, quant_type, "channel")
    assert weights["symmetric"] is True and weights["dynamic"] is False
    assert (activations["num_bits"], activations["type"], activations["strategy"]) == (8, quant_type, "token")
    assert activations["symmetric"] is True and activations["dynamic"] is True

    tensors = _tensors(tiny_models[scheme])
    shapes = _projection_shapes(TinyModelSpec())
    for layer in range(TinyModelSpec().num_hidden_layers):
        for name in QUANTIZED_PROJECTIONS:
            prefix = f"model.layers.{layer}.{name}"
            assert tensors[f"{prefix}.weight"].dtype == weight_dtype, prefix
            assert tuple(tensors[f"{prefix}.weight"].shape) == shapes[name]
            assert tuple(tensors[f"{prefix}.weight_scale"].shape) == (shapes[name][0], 1)
            # symmetric schemes carry no zero points (vLLM would refuse to load them)
            assert f"{prefix}.weight_zero_point" not in tensors
    assert tensors["lm_head.weight"].dtype == torch.float16


@pytest.mark.parametrize("scheme", ["int8", "fp8"])
def test_compressed_weights_dequantize_to_the_fp16_weights(tiny_models: dict[str, Path], scheme: str) -> None:
    dense = _tensors(tiny_models["fp16"])
    compressed = _tensors(tiny_models[scheme])
    name = "model.layers.1.mlp.down_proj"
    original = dense[f"{name}.weight"].double()
    scale = compressed[f"{name}.weight_scale"].double()
    restored = compressed[f"{name}.weight"].double() * scale
    if scheme == "int8":
        # round to nearest of w / scale, which the library computes in the model's fp16
        # (relative error 2^-11 before rounding); each row's extreme value is at the limit
        steps = original / scale
        assert (restored / scale - steps).abs().le(0.5 + steps.abs() * 2**-10).all()
        row_max = compressed[f"{name}.weight"].double().abs().amax(dim=1)
        assert row_max.eq(TinyModelSpec().int8_weight_limit).all()
    else:
        # e4m3 has 3 mantissa bits: relative error at most 2^-4 for normal values
        assert (restored - original).abs().le(original.abs() / 16 + scale * 2**-9).all()


def test_tokenizer_round_trip(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["int8"])
    text = "Hello, world! The capital of France is Paris. Ünïcode 🙂 and 123 unseen-words"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id == 0
    assert tokenizer.eos_token_id == 1
    assert all(0 <= i < TinyModelSpec().vocab_size for i in ids)
    # the BPE merges learned from the corpus make known words shorter than their bytes
    assert len(tokenizer("The capital of France").input_ids) < len("The capital of France")
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def _weights_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(_tensors(path).items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_builds_are_deterministic(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    rebuilt = build_tiny_model("int8", out_dir=tmp_path / "again")
    assert rebuilt != tiny_models["int8"]
    assert _weights_digest(rebuilt) == _weights_digest(tiny_models["int8"])
    assert (rebuilt / "tokenizer.json").read_bytes() == (tiny_models["int8"] / "tokenizer.json").read_bytes()
    other_seed = build_tiny_model("int8", spec=TinyModelSpec(seed=1), out_dir=tmp_path / "seed1")
    assert _weights_digest(other_seed) != _weights_digest(tiny_models["int8"])


def test_cache_reuses_a_build(tiny_models: dict[str, Path], tiny_cache: Path) -> None:
    path = tiny_models["int8"]
    assert path.parent == tiny_cache
    weights = path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_model("int8", cache_dir=tiny_cache) == path
    assert weights.stat().st_mtime_ns == before
    assert not [p for p in tiny_cache.iterdir() if p.name.startswith(".")], "staging left behind"


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(tiny_model.CACHE_ENV, str(tmp_path))
    assert tiny_model.default_cache_dir() == tmp_path
    monkeypatch.delenv(tiny_model.CACHE_ENV)
    assert tiny_model.default_cache_dir() == Path.home() / ".cache" / "vllm_rdna_w8a8" / "tiny-models"


def test_refuses_a_foreign_output_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="does not hold this tiny-model build"):
        build_tiny_model("int8", out_dir=tmp_path)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown scheme 'int4'"):
        build_tiny_model("int4")
    with pytest.raises(TypeError, match="spec must be a TinyModelSpec"):
        build_tiny_model("int8", spec={"hidden_size": 64})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not divisible by num_attention_heads"):
        TinyModelSpec(hidden_size=130)
    with pytest.raises(ValueError, match="hidden_size must be positive"):
        TinyModelSpec(hidden_size=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        TinyModelSpec(seed="0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="int8_weight_limit 128 exceeds"):
        TinyModelSpec(int8_weight_limit=128)
    with pytest.raises(ValueError, match="vocab_size 100 is too small"):
        TinyModelSpec(vocab_size=100)


def test_command_line(tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tiny_model.main(["--scheme", "fp16", "--out", str(tmp_path / "cli")]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == tmp_path / "cli"
    assert _weights_digest(printed) == _weights_digest(tiny_models["fp16"])
    with pytest.raises(SystemExit):
        tiny_model.main(["--scheme", "w4a16"])
