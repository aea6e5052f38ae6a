"""How our kernel classes store weights: K padding and the gfx11 cache-aliasing row-stride
pad (vLLM 0.33's rule), which changes where rows start, never the results."""

from __future__ import annotations

import pytest
import torch

from vllm_rdna_w8a8.scaled_mm import weights

DTYPES = [torch.int8, torch.float8_e4m3fn]


@pytest.mark.parametrize(("k", "row_stride"), [
    (4096, 4096 + 128),    # Llama/Qwen hidden size: 2 x 2048 bytes
    (14336, 14336 + 128),  # Llama-3-8B intermediate size: 7 x 2048 bytes
    (2048, 2048 + 128),
    (2040, 2048 + 128),    # K padded to 16 first, and that stride aliases
    (4100, 4112),          # K padded to 16 only: 4112 bytes do not alias
    (1024, 1024),          # half the aliasing stride: not padded (vLLM's rule)
    (344, 352),
])
def test_weight_row_stride(k: int, row_stride: int) -> None:
    assert weights.weight_row_stride(k) == row_stride


def _weight(dtype: torch.dtype, n: int, k: int) -> torch.Tensor:
    values = torch.randint(-100, 100, (n, k), generator=torch.Generator().manual_seed(k), dtype=torch.int8)
    return values if dtype == torch.int8 else values.to(torch.float16).to(dtype)


def _hidden_row_bytes(stored: torch.Tensor) -> torch.Tensor:
    """The bytes of each stored row, the padding past K_pad included."""
    n, stride = stored.shape[0], stored.stride(0)
    return torch.as_strided(stored, (n, stride), (stride, 1)).view(torch.uint8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("k", "k_pad", "row_stride"), [(4096, 4096, 4224), (4100, 4112, 4112), (40, 48, 48)])
def test_stored_weight_keeps_values_behind_padded_rows(dtype: torch.dtype, k: int, k_pad: int,
                                                       row_stride: int) -> None:
    weight = _weight(dtype, 5, k)
    stored = weights.store_weight(weight)
    assert stored.dtype == dtype and stored.shape == (5, k_pad) and stored.stride() == (row_stride, 1)
    assert torch.equal(stored[:, :k].view(torch.uint8), weight.view(torch.uint8))
    assert not _hidden_row_bytes(stored)[:, k:].any()  # K and stride padding are byte 0 (zero in both dtypes)


def test_unpadded_weight_is_not_copied() -> None:
    weight = _weight(torch.int8, 3, 4112)
    assert weights.store_weight(weight) is weight


def test_activations_are_padded_to_k_only() -> None:
    """The per-call A operand stays contiguous: the row-stride pad is for stored weights."""
    activations = _weight(torch.float8_e4m3fn, 3, 4096)
    assert weights.pad_k(activations) is activations
    assert weights.pad_k(_weight(torch.int8, 3, 40)).stride() == (48, 1)


@pytest.mark.parametrize("bad", [torch.zeros(4, 4096, dtype=torch.float16), torch.zeros(4096, dtype=torch.int8)])
def test_store_weight_refuses_what_it_cannot_store(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"expected an \[R, K\] int8 or float8_e4m3fn operand, got torch\."):
        weights.store_weight(bad)


# Through the kernel classes: their process_weights_after_loading stores the weight this way
# (vLLM's replace_parameter in 0.32 and 0.33 keeps the strides), and the GEMM reads it
# through its row stride.

def _int8_layer(n: int, k: int):
    from vllm.model_executor.kernels.linear import Int8ScaledMMLinearLayerConfig

    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipInt8ScaledMMLinearKernel

    config = Int8ScaledMMLinearLayerConfig(is_static_input_scheme=False, is_channelwise=True, input_symmetric=True)
    kernel = RdnaHipInt8ScaledMMLinearKernel(config, ["weight", "weight_scale", "input_scale", "input_zero_point",
                                                      "azp_adj"])
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(_weight(torch.int8, n, k), requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(torch.full((n, 1), 2e-3, dtype=torch.float32), requires_grad=False)
    layer.input_scale = layer.input_zero_point = layer.azp_adj = None
    layer.logical_widths = [n]
    kernel.process_weights_after_loading(layer)
    return kernel, layer, layer.weight  # [N, K_pad]


def _fp8_layer(n: int, k: int):
    from vllm.model_executor.kernels.linear import FP8ScaledMMLinearLayerConfig
    from vllm.model_executor.layers.quantization.utils import quant_utils as keys

    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipFp8ScaledMMLinearKernel

    config = FP8ScaledMMLinearLayerConfig(weight_quant_key=keys.kFp8StaticChannelSym,
                                          activation_quant_key=keys.kFp8DynamicTokenSym, weight_shape=(n, k),
                                          input_dtype=torch.float16, out_dtype=torch.float16)
    kernel = RdnaHipFp8ScaledMMLinearKernel(config, ["weight", "weight_scale", "input_scale", "input_scale_ub"])
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(_weight(torch.float8_e4m3fn, n, k).t(), requires_grad=False)  # vLLM's [K, N]
    layer.weight_scale = torch.nn.Parameter(torch.full((n, 1), 2e-3, dtype=torch.float32), requires_grad=False)
    layer.input_scale = None
    kernel.process_weights_after_loading(layer)
    return kernel, layer, layer.weight.t()  # [N, K_pad]


LAYERS = {"int8": _int8_layer, "fp8": _fp8_layer}


@pytest.fixture
def our_kernels_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our classes' is_supported says yes (their own tests cover when it does)."""
    from vllm_rdna_w8a8.scaled_mm import support

    monkeypatch.setattr(support, "hip_kernels_usable", lambda *kernel_kind: (True, None))


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize(("k", "row_stride"), [(4096, 4224), (4100, 4112)])
def test_kernel_classes_store_the_padded_row_stride(current_vllm_config, our_kernels_usable, kind: str, k: int, row_stride: int) -> None:
    _, layer, weight_nk = LAYERS[kind](16, k)
    assert isinstance(layer.weight, torch.nn.Parameter)
    assert weight_nk.shape == (16, weights.padded_k(k)) and weight_nk.stride() == (row_stride, 1)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_padded_row_stride_gives_identical_outputs_on_the_emulated_kernels(current_vllm_config, our_kernels_usable,
                                                                           monkeypatch, kind: str) -> None:
    """K = 2048 through our class on the emulated gfx1100 kernels: the output with the
    weight on padded rows (its hidden bytes set to non-zero, so reading past K would
    show) is bit-identical to the output with the same weight contiguous."""
    from vllm_rdna_w8a8.runtime import launcher

    monkeypatch.setenv("VLLM_RDNA_W8A8_EMULATE", "gfx1100")
    n, k = 32, 2048
    kernel, layer, weight_nk = LAYERS[kind](n, k)
    assert weight_nk.stride() == (k + 128, 1)
    _hidden_row_bytes(weight_nk)[:, k:] = 0x5A  # int8 90, e4m3fn 20.0
    x = (torch.randn(3, k, generator=torch.Generator().manual_seed(1)) * 2).to(torch.float16)
    padded_rows_out = kernel.apply_weights(layer, x)

    contiguous = weight_nk.contiguous()
    layer.weight.data = contiguous if kind == "int8" else contiguous.t()
    contiguous_out = kernel.apply_weights(layer, x)
    assert padded_rows_out.abs().max() > 0
    assert torch.equal(padded_rows_out, contiguous_out)
    # int8 at M = 3: the fused decode GEMM (quantization inside), w8a8_i8q_f16_gemm_<tag>
    prefix = "w8a8_i8q_f16_gemm_" if kind == "int8" else "w8a8_f8_gemm_"
    assert any(name.startswith(prefix) for name in launcher.loaded_kernels()), \
        "our GEMM kernel did not run: the emulated backend was not used"


# azp_adj: upstream's terms (column sums, times a static zero point), formed in int64 and
# refused where the int32 the kernels read would wrap.

def test_azp_adjustment_refuses_a_product_beyond_int32() -> None:
    column_of_127s = torch.full((2, 32), 127, dtype=torch.int8)  # column sums 4064
    with pytest.raises(ValueError, match=r"azp_adj\[0\] = 4261412864 \(the weight's column sum 4064 times the "
                                         r"static input zero point 1048576\) does not fit the int32 the kernels read"):
        weights.azp_adjustment(column_of_127s, torch.tensor([2**20], dtype=torch.int32))


def test_azp_adjustment_refuses_the_zero_point_of_a_zero_input_scale() -> None:
    # A zero input scale rebuilds the zero point as NaN, which converts to -2**31 (x86).
    _, zero_point = weights.static_input_params(torch.zeros(1), torch.zeros(1, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"times the static input zero point -2147483648\) does not fit"):
        weights.azp_adjustment(torch.full((1, 16), 1, dtype=torch.int8), zero_point)


@pytest.mark.parametrize("zero_point", [None, -128, 127])
def test_azp_adjustment_fits_at_the_longest_k_and_extreme_values(zero_point: int | None) -> None:
    """What the int8 GEMMs take (K_pad <= MAX_INT8_K) with int8 zero points always fits:
    |azp_adj| <= 128 * 128 * K < 2**31."""
    from vllm_rdna_w8a8.ops.validation import MAX_INT8_K

    longest = MAX_INT8_K // 16 * 16
    weight = torch.full((2, longest), -128, dtype=torch.int8)
    static = None if zero_point is None else torch.tensor([zero_point], dtype=torch.int32)
    adjustment = weights.azp_adjustment(weight, static)
    want = -128 * longest * (1 if zero_point is None else zero_point)
    assert adjustment.dtype == torch.int32 and adjustment.tolist() == [want, want]
