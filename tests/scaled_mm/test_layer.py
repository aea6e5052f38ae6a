"""Weight preparation and apply_weights of our int8 kernel class, every variant, against
float64 math; the ops run on the reference implementation (CPU)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from vllm.model_executor.layers.quantization.compressed_tensors.schemes import CompressedTensorsW8A8Int8

from vllm_rdna_w8a8.ops import reference

OURS = "RdnaHipInt8ScaledMMLinearKernel"
SHARDS = {"single": [24], "fused": [16, 8, 8]}  # fused: e.g. q, k, v of a QKV layer


def _build_layer(strategy: str, static: bool, symmetric: bool, widths: list[int], k: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    scheme = CompressedTensorsW8A8Int8(strategy=strategy, is_static_input_scheme=static, input_symmetric=symmetric)
    layer = torch.nn.Module()
    scheme.create_weights(layer, output_partition_sizes=widths, input_size_per_partition=k,
                          params_dtype=torch.float16, weight_loader=lambda *args: None)
    n = sum(widths)
    layer.weight.data.copy_(torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=generator))
    layer.weight.data[0] = -128  # an extreme row
    if strategy == "channel":
        layer.weight_scale.data.copy_(torch.rand(n, 1, generator=generator) * 0.01 + 1e-3)
    else:
        layer.weight_scale.data.copy_(torch.rand(len(widths), generator=generator) * 0.01 + 1e-3)
    if static:
        layer.input_scale.data.fill_(0.05)
        if not symmetric:
            layer.input_zero_point.data.fill_(-9)
    return scheme, layer


def _float64_reference(x: torch.Tensor, checkpoint: SimpleNamespace, processed: torch.nn.Module, strategy: str,
                       static: bool, symmetric: bool, widths: list[int], bias: torch.Tensor | None) -> torch.Tensor:
    """out = dequant(q_x) @ dequant(w).T + bias in float64, from the checkpoint tensors.

    q_x, its scales and zero points come from the reference quantizer, which
    tests/ops proves bit-exact against vLLM's kernel formula (float32 rounding that a
    float64 re-derivation would not reproduce at ties).
    """
    rows = x.reshape(-1, x.shape[-1])
    if static:
        q, scale, zero = reference.scaled_int8_quant(rows, processed.input_scale, processed.input_zero_point,
                                                     symmetric=symmetric)
    else:
        q, scale, zero = reference.scaled_int8_quant(rows, symmetric=symmetric)
    x_deq = (q[:, : x.shape[-1]].double() - (0 if zero is None else zero.double().reshape(-1, 1)))
    x_deq = x_deq * scale.double().reshape(-1, 1)
    if strategy == "channel":
        w_scale = checkpoint.weight_scale.double().reshape(-1)
    else:
        w_scale = torch.cat([s.double().expand(w) for s, w in zip(checkpoint.weight_scale, widths)])
    out = x_deq @ (checkpoint.weight.double() * w_scale[:, None]).T
    if bias is not None:
        out = out + bias.double()
    return out.reshape(*x.shape[:-1], -1)


def _snapshot(layer: torch.nn.Module) -> SimpleNamespace:
    """Plain copies of the checkpoint tensors (vLLM's parameters do not deep-copy)."""
    return SimpleNamespace(**{name: None if p is None else p.detach().clone()
                              for name, p in layer.named_parameters(recurse=False)})


VARIANTS = list(itertools.product(["channel", "tensor"], [False, True], [True, False], SHARDS))


@pytest.mark.parametrize(("strategy", "static", "symmetric", "shards"), VARIANTS)
@pytest.mark.parametrize("k", [64, 40])  # 40: K padded to 48
def test_every_int8_variant_matches_float64(simulate, strategy, static, symmetric, shards, k) -> None:
    simulate("rocm", "gfx1100")
    widths = SHARDS[shards]
    scheme, layer = _build_layer(strategy, static, symmetric, widths, k, seed=len(VARIANTS) * k)
    assert type(scheme.kernel).__name__ == OURS
    checkpoint = _snapshot(layer)
    scheme.process_weights_after_loading(layer)

    n = sum(widths)
    k_pad = -(-k // 16) * 16
    assert layer.weight.shape == (n, k_pad) and layer.weight.is_contiguous()
    assert torch.equal(layer.weight[:, :k], checkpoint.weight) and not layer.weight[:, k:].any()
    assert layer.weight_scale.shape == (n,) and layer.weight_scale.dtype == torch.float32
    assert (layer.input_scale is not None) == static
    assert (layer.azp_adj is not None) == (not symmetric)
    if not symmetric:
        column_sums = checkpoint.weight.sum(dim=1, dtype=torch.int32)
        folded = column_sums * layer.input_zero_point if static else column_sums
        assert layer.azp_adj.dtype == torch.int32 and torch.equal(layer.azp_adj, folded)

    generator = torch.Generator().manual_seed(7)
    x = (torch.randn(2, 3, k, generator=generator) * 2).to(torch.float16)
    x[0, 0] = 0  # a zero token
    bias = torch.randn(n, generator=generator).to(torch.float16)
    out = scheme.apply_weights(layer, x, bias)
    assert out.shape == (2, 3, n) and out.dtype == torch.float16
    want = _float64_reference(x, checkpoint, layer, strategy, static, symmetric, widths, bias)
    scale = want.abs().max().item()
    torch.testing.assert_close(out.double(), want, rtol=2e-3, atol=2e-3 * scale)


@pytest.mark.parametrize("shards", list(SHARDS))
def test_static_asymmetric_parameters_match_upstream(simulate, shards) -> None:
    """Our static scale / zero point / azp_adj are the ones vLLM's Triton kernel derives."""
    simulate("rocm", "gfx1100")
    from vllm.model_executor.kernels.linear import TritonInt8ScaledMMLinearKernel

    widths = SHARDS[shards]
    scheme, layer = _build_layer("tensor", True, False, widths, 32, seed=3)
    _, upstream_layer = _build_layer("tensor", True, False, widths, 32, seed=3)
    for each in (layer, upstream_layer):
        each.input_scale.data.fill_(0.0123)
        each.input_zero_point.data.fill_(5)
    triton = TritonInt8ScaledMMLinearKernel(scheme.kernel.config, scheme.kernel.layer_param_names)
    triton.process_weights_after_loading(upstream_layer)
    scheme.process_weights_after_loading(layer)
    assert torch.equal(layer.input_scale.reshape(()), upstream_layer.input_scale.reshape(()))
    assert torch.equal(layer.input_zero_point.reshape(()), upstream_layer.input_zero_point.reshape(()))
    assert torch.equal(layer.azp_adj, upstream_layer.azp_adj.reshape(-1))
    # Upstream keeps a single shard's per-tensor scale as [1]; ours is always [N].
    assert torch.equal(layer.weight_scale, upstream_layer.weight_scale.reshape(-1).expand(sum(widths)))


def test_apply_weights_matches_vllms_cpu_kernel(monkeypatch) -> None:
    """Same layer, same input: our path (reference ops) vs vLLM's CPU int8 kernel."""
    from vllm.model_executor.kernels.linear import CPUInt8ScaledMMLinearKernel

    from vllm_rdna_w8a8.cpu_stack import apply_workarounds
    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipInt8ScaledMMLinearKernel
    from vllm_rdna_w8a8.scaled_mm import support

    monkeypatch.setattr(support, "hip_kernels_usable", lambda: (True, None))
    # As in every vLLM process of the tests: on AMX machines vLLM-CPU would send this fp16
    # layer to an int8 kernel that aborts on fp16 (cpu_stack ledger, item 2).
    apply_workarounds()
    scheme, layer = _build_layer("channel", False, True, [32], 64, seed=11)
    _, upstream_layer = _build_layer("channel", False, True, [32], 64, seed=11)
    # vLLM's oneDNN path on AVX2 CPUs saturates u8*s8 pair sums at int16 (measured on an
    # AVX2 machine: wrong outputs with |w| = 128 weights); |w| <= 63 keeps 2 * 255 * 63 below 32767.
    for each in (layer, upstream_layer):
        each.weight.data.clamp_(-63, 63)
    ours = RdnaHipInt8ScaledMMLinearKernel(scheme.kernel.config, scheme.kernel.layer_param_names)
    upstream = CPUInt8ScaledMMLinearKernel(scheme.kernel.config, scheme.kernel.layer_param_names)
    ours.process_weights_after_loading(layer)
    upstream.process_weights_after_loading(upstream_layer)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(2)).to(torch.float16)
    torch.testing.assert_close(ours.apply_weights(layer, x), upstream.apply_weights(upstream_layer, x),
                               rtol=2e-3, atol=2e-3)


def _fp8_layer(monkeypatch, strategy: str, static_input: bool, widths: list[int], k: int, input_scale: float = 0.02,
               weight_scale: float | None = None):
    """A compressed-tensors W8A8 fp8 layer with random checkpoint tensors (or the weight scale
    `weight_scale` everywhere), through vLLM's scheme (and so our fp8 class's
    process_weights_after_loading)."""
    from compressed_tensors.quantization import QuantizationArgs
    from vllm.model_executor.layers.quantization.compressed_tensors.schemes import compressed_tensors_w8a8_fp8

    # The scheme reads the model dtype from the engine's config (there is no model here).
    engine_config = SimpleNamespace(model_config=SimpleNamespace(dtype=torch.float16))
    monkeypatch.setattr(compressed_tensors_w8a8_fp8, "get_current_vllm_config", lambda: engine_config)
    # vLLM requantizes per-tensor shards with a _C kernel the CPU build lacks: plain torch here.
    import vllm._custom_ops as vllm_ops

    def static_fp8_quant(x: torch.Tensor, scale: torch.Tensor, *args, **kwargs):
        return (x.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn), scale

    monkeypatch.setattr(vllm_ops, "scaled_fp8_quant", static_fp8_quant)
    weight_args = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy=strategy, dynamic=False)
    scheme = compressed_tensors_w8a8_fp8.CompressedTensorsW8A8Fp8(weight_quant=weight_args,
                                                                  is_static_input_scheme=static_input)
    n = sum(widths)
    layer = torch.nn.Module()
    scheme.create_weights(layer, output_partition_sizes=widths, input_size_per_partition=k,
                          params_dtype=torch.float16, weight_loader=lambda *args: None, output_size=n, input_size=k)
    assert type(scheme.fp8_linear).__name__ == "RdnaHipFp8ScaledMMLinearKernel"
    generator = torch.Generator().manual_seed(9)
    layer.weight.data.copy_((torch.randn(n, k, generator=generator) * 60).clamp(-448, 448).to(torch.float8_e4m3fn))
    layer.weight_scale.data.copy_(torch.rand(layer.weight_scale.shape, generator=generator) * 0.01 + 1e-3)
    if weight_scale is not None:
        layer.weight_scale.data.fill_(weight_scale)
    if static_input:
        layer.input_scale.data.fill_(input_scale)
    scheme.process_weights_after_loading(layer)
    return scheme, layer


@pytest.mark.parametrize("strategy", ["channel", "tensor"])
@pytest.mark.parametrize("static_input", [False, True])
@pytest.mark.parametrize("shards", list(SHARDS))
@pytest.mark.parametrize("k", [64, 40, 344])  # 40 -> 48 and 344 (the tiny model's down_proj) -> 352
def test_fp8_layer_matches_float64(simulate, current_vllm_config, monkeypatch, strategy, static_input,
                                   shards, k) -> None:
    """A compressed-tensors W8A8 fp8 layer on our fp8 class: vLLM's weight preparation and
    activation quantization, our GEMM (K padded to a multiple of 16 where needed); output
    vs float64 math on the same fp8 operands at the checkpoint's K.

    Under vLLM 0.33, whose replace_parameter keeps the parameter object and copies the new
    tensor's attributes onto it, the padded K cases load only because our re-stored weight
    carries no attribute that cannot be set there (0.33's input_dim is a read-only property)."""
    simulate("rocm", "gfx1100")
    widths = SHARDS[shards]
    n = sum(widths)
    scheme, layer = _fp8_layer(monkeypatch, strategy, static_input, widths, k)
    generator = torch.Generator().manual_seed(10)

    k_pad = -(-k // 16) * 16
    weight_nk = layer.weight.t()
    assert layer.weight.shape == (k_pad, n) and weight_nk.dtype == torch.float8_e4m3fn
    assert weight_nk.stride(1) == 1  # rows of K contiguous, as our GEMM reads them
    assert not weight_nk[:, k:].view(torch.uint8).any()  # padding is e4m3fn zero (byte 0x00)

    x = (torch.randn(5, k, generator=generator) * 2).to(torch.float16)
    x[1] = 0
    bias = torch.randn(n, generator=generator).to(torch.float16)
    out = scheme.apply_weights(layer, x, bias)
    # Same operands as the layer used: vLLM's prepared weight and its activation quantizer.
    x_q, x_scale = scheme.fp8_linear.quant_fp8(x, getattr(layer, "input_scale", None), None)
    weight = weight_nk[:, :k].double() * layer.weight_scale.double().reshape(-1, 1)
    want = (x_q.double() * x_scale.double().reshape(-1, 1)) @ weight.T + bias.double()
    assert out.shape == (5, n) and out.dtype == torch.float16
    torch.testing.assert_close(out.double(), want, rtol=2e-3, atol=2e-3 * want.abs().max().item())


def test_fp8_weight_keeps_the_schemes_attributes_when_k_is_padded(simulate, current_vllm_config,
                                                                 monkeypatch) -> None:
    """Re-storing the weight with K padding keeps what vLLM's scheme put on the parameter:
    the same attributes as a layer whose K needs no padding (0.32: input_dim / output_dim
    tags; 0.33: its parameter class's fields)."""
    simulate("rocm", "gfx1100")

    def plain_attributes(k: int) -> dict:
        _, layer = _fp8_layer(monkeypatch, "channel", False, [16], k)
        return {name: value for name, value in vars(layer.weight).items() if not callable(value)}

    unpadded, padded = plain_attributes(48), plain_attributes(40)
    assert unpadded, "vLLM's scheme put no attribute on the weight: nothing to compare"
    assert padded == unpadded


@pytest.mark.slow  # ~8 s on this loaded 2-core machine (emulator)
def test_fp8_layer_with_k_344_on_the_emulated_hip_kernels(current_vllm_config, monkeypatch) -> None:
    """K = 344 (the tiny model's down_proj) through our fp8 class on the emulated gfx1100
    backend: the padded weight and activations reach our real fp8 GEMM kernel (running
    in the emulator), which refuses an unpadded K; output vs float64."""
    from vllm.model_executor.kernels.linear import FP8ScaledMMLinearLayerConfig
    from vllm.model_executor.layers.quantization.utils import quant_utils as keys

    from vllm_rdna_w8a8.scaled_mm import support
    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipFp8ScaledMMLinearKernel

    monkeypatch.setenv("VLLM_RDNA_W8A8_EMULATE", "gfx1100")
    monkeypatch.setattr(support, "hip_kernels_usable", lambda *kernel_kind: (True, None))
    n, k = 32, 344
    config = FP8ScaledMMLinearLayerConfig(weight_quant_key=keys.kFp8StaticChannelSym,
                                          activation_quant_key=keys.kFp8DynamicTokenSym, weight_shape=(n, k),
                                          input_dtype=torch.float16, out_dtype=torch.float16)
    kernel = RdnaHipFp8ScaledMMLinearKernel(config, ["weight", "weight_scale", "input_scale", "input_scale_ub"])
    generator = torch.Generator().manual_seed(4)
    weight_nk = (torch.randn(n, k, generator=generator) * 60).clamp(-448, 448).to(torch.float8_e4m3fn)
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(weight_nk.t(), requires_grad=False)  # vLLM's [K, N] view
    layer.weight_scale = torch.nn.Parameter(torch.rand(n, 1, generator=generator, dtype=torch.float32) * 0.01 + 1e-3,
                                            requires_grad=False)
    layer.input_scale = None
    kernel.process_weights_after_loading(layer)
    assert layer.weight.shape == (352, n)

    x = (torch.randn(3, k, generator=generator) * 2).to(torch.float16)
    out = kernel.apply_weights(layer, x)
    x_q, x_scale = kernel.quant_fp8(x, None, None)
    want = (x_q.double() * x_scale.double().reshape(-1, 1)) @ (
        weight_nk.double() * layer.weight_scale.double().reshape(-1, 1)).T
    assert out.shape == (3, n) and out.dtype == torch.float16
    torch.testing.assert_close(out.double(), want, rtol=2e-3, atol=2e-3 * want.abs().max().item())
    with pytest.raises(ValueError, match="K=344 must be a multiple of 16"):
        kernel.apply_scaled_mm(A=x_q, B=weight_nk.t(), out_dtype=torch.float16, As=x_scale,
                               Bs=layer.weight_scale, bias=None, output_shape=[3, n])


# K beyond what the int8 GEMMs' int32 sums hold: vLLM's int8 layer config carries no shape, so
# our class takes the layer at selection and hands it to upstream's class once the weight shows K.

@pytest.mark.parametrize(("k", "upstream"), [(131056, None), (131057, "TritonInt8ScaledMMLinearKernel"),
                                             (131072, "TritonInt8ScaledMMLinearKernel")])
def test_int8_layers_longer_than_the_int32_sums_hold_stay_on_upstream(simulate, caplog, k, upstream) -> None:
    simulate("rocm", "gfx1100")
    scheme, layer = _build_layer("channel", False, True, [16], k, seed=5)
    assert type(scheme.kernel).__name__ == OURS
    with caplog.at_level("INFO", logger="vllm.rdna_w8a8"):
        scheme.process_weights_after_loading(layer)
    if upstream is None:
        assert scheme.kernel.upstream is None and layer.weight.shape == (16, k)
        return
    assert type(scheme.kernel.upstream).__name__ == upstream
    assert layer.weight.shape == (k, 16)  # prepared by upstream's class: its [K, N] view
    assert (f"{OURS} requires K <= 131056 (K padded to 16 within 131071, the largest K whose int8 sums always fit "
            f"the int32 accumulator), the layer has K={k}; such int8 layers stay on {upstream}") in caplog.text


def test_a_layer_handed_to_upstream_computes_through_upstreams_class(monkeypatch) -> None:
    """On this CPU the upstream class is vLLM's CPU int8 kernel: the layer's output through
    our class is that kernel's, right against float64."""
    from vllm_rdna_w8a8.cpu_stack import apply_workarounds
    from vllm_rdna_w8a8.scaled_mm import support
    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipInt8ScaledMMLinearKernel

    monkeypatch.setattr(support, "hip_kernels_usable", lambda: (True, None))
    apply_workarounds()  # as in every vLLM process of the tests (see the test above)
    k = 131072
    scheme, layer = _build_layer("channel", False, True, [16], k, seed=6)
    layer.weight.data.clamp_(-63, 63)  # vLLM's oneDNN path on AVX2 (see the test above)
    checkpoint = _snapshot(layer)
    ours = RdnaHipInt8ScaledMMLinearKernel(scheme.kernel.config, scheme.kernel.layer_param_names)
    ours.process_weights_after_loading(layer)
    x = torch.randn(3, k, generator=torch.Generator().manual_seed(1)).to(torch.float16)
    out = ours.apply_weights(layer, x)  # our op would refuse K = 131072
    want = _float64_reference(x, checkpoint, layer, "channel", False, True, [16], None)
    torch.testing.assert_close(out.double(), want, rtol=2e-3, atol=2e-3 * want.abs().max().item())
    assert type(ours.upstream).__name__ == "CPUInt8ScaledMMLinearKernel"


# Checkpoint scales that would make NaN or inf outputs are refused at load, naming the layer
# and the value; a zero weight scale (an all-zero channel) is loaded, as upstream does.

BAD_INPUT_SCALES = [(0.0, "0"), (-0.05, "-0.05"), (float("nan"), "nan"), (float("inf"), "inf")]


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("value", "shown"), BAD_INPUT_SCALES)
def test_int8_static_input_scale_that_is_not_finite_and_positive_is_refused(simulate, symmetric, value,
                                                                             shown) -> None:
    simulate("rocm", "gfx1100")
    scheme, layer = _build_layer("channel", True, symmetric, [16], 32, seed=11)
    layer.prefix = "model.layers.3.mlp.down_proj"
    layer.input_scale.data.fill_(value)
    with pytest.raises(ValueError, match=rf"^layer model\.layers\.3\.mlp\.down_proj: the checkpoint's static "
                                         rf"input scale is {shown}; it must be finite and > 0"):
        scheme.process_weights_after_loading(layer)


@pytest.mark.parametrize(("value", "shown"), [(float("nan"), "nan"), (float("-inf"), "-inf")])
def test_int8_weight_scale_that_is_not_finite_is_refused(simulate, value, shown) -> None:
    simulate("rocm", "gfx1100")
    scheme, layer = _build_layer("channel", False, True, [16], 32, seed=12)
    layer.weight_scale.data[5] = value
    with pytest.raises(ValueError, match=rf"^the checkpoint's weight scale\[5\] is {shown}; it must be finite$"):
        scheme.process_weights_after_loading(layer)


def test_int8_zero_weight_scale_gives_a_zero_channel(simulate) -> None:
    simulate("rocm", "gfx1100")
    scheme, layer = _build_layer("channel", True, True, [16], 32, seed=13)
    layer.weight_scale.data[2] = 0.0
    scheme.process_weights_after_loading(layer)
    out = scheme.apply_weights(layer, torch.randn(3, 32, generator=torch.Generator().manual_seed(3)).half(), None)
    assert torch.isfinite(out).all() and not out[:, 2].any() and out[:, 3].any()


@pytest.mark.parametrize(("value", "shown"), BAD_INPUT_SCALES)
def test_fp8_static_input_scale_that_is_not_finite_and_positive_is_refused(simulate, current_vllm_config,
                                                                           monkeypatch, value, shown) -> None:
    simulate("rocm", "gfx1100")
    with pytest.raises(ValueError, match=rf"^the checkpoint's static input scale is {shown}; it must be finite and > 0"):
        _fp8_layer(monkeypatch, "channel", True, [16], 32, input_scale=value)


@pytest.mark.parametrize(("strategy", "value", "shown", "rule"), [
    ("channel", float("nan"), r"\[0\] is nan", "finite$"),
    ("tensor", float("inf"), " is inf", "finite and > 0"),
    ("tensor", 0.0, " is 0", "finite and > 0"),  # vLLM re-quantized the shards dividing by it: NaN weights
])
def test_fp8_weight_scale_that_makes_nan_outputs_is_refused(simulate, current_vllm_config, monkeypatch, strategy,
                                                             value, shown, rule) -> None:
    simulate("rocm", "gfx1100")
    with pytest.raises(ValueError, match=rf"^the checkpoint's weight scale{shown}; it must be {rule}"):
        _fp8_layer(monkeypatch, strategy, False, [16], 32, weight_scale=value)
