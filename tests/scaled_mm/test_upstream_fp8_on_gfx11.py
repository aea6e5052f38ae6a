"""Issue 5's proof of what we fix, at kernel-selection level: on gfx11, vLLM alone has no
kernel for a compressed-tensors W8A8 fp8 layer; with our registry, ours serves it.

How faithful the simulation is (see the `real_rocm_platform` fixture): vLLM's own
`vllm/platforms/rocm.py` is executed from its source with amdsmi reporting a gfx1100,
so `_GCN_ARCH`, the on_gfx*() answers, `get_cdna_version()`, the capability (11.0) and
the fp8 dtype (e4m3fn) are vLLM's own derivations, and its real `RocmPlatform` is the
`current_platform` of the scheme, the kernel lists, the candidate classes and aiter's
switches. The layer is built by vLLM's `CompressedTensorsW8A8Fp8.create_weights`, which
asks `init_fp8_linear_kernel` -> `choose_scaled_mm_linear_kernel` as in a real model.
Every upstream candidate then declines for a gfx11 reason of its own:
- the three aiter classes: aiter's linear switches are off, because
  `is_aiter_found_and_supported()` requires `get_cdna_version() > 2` (CDNA3+); this
  machine also lacks the aiter package, but a gfx11 with aiter installed gives the
  same answer (the arch check comes after the package check and fails on gfx11);
- ROCmFP8ScaledMMLinearKernel: "requires CDNA3+ (gfx942/gfx950) or RDNA4 (gfx12x)";
- the three torch._scaled_mm classes: `_rocm_torch_fp8_scaled_mm_supported()` is
  gfx942/gfx950/gfx12x/gfx1250 only.
What is not simulated: environment switches are vLLM's defaults (VLLM_ROCM_USE_AITER
unset). The control tests show the simulation is not what makes them fail: on a
simulated gfx942 and gfx1201 the same upstream list serves the same layers.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from vllm.platforms import PlatformEnum

OURS = "RdnaHipFp8ScaledMMLinearKernel"
UPSTREAM_ROCM_FP8 = ["AiterHipbMMPerTokenFp8ScaledMMLinearKernel", "AiterPreshuffledPerTokenFp8ScaledMMLinearKernel",
                     "AiterPerTokenFp8ScaledMMLinearKernel", "ROCmFP8ScaledMMLinearKernel",
                     "PerTensorTorchFP8ScaledMMLinearKernel", "RowWiseTorchFP8ScaledMMLinearKernel",
                     "ChannelWiseTorchFP8ScaledMMLinearKernel"]
GFX11_REASONS = [
    "AiterHipbMMPerTokenFp8ScaledMMLinearKernel requires setting `VLLM_ROCM_USE_AITER=1`",
    "AiterPreshuffledPerTokenFp8ScaledMMLinearKernel requires setting `VLLM_ROCM_USE_AITER=1`",
    "AiterPerTokenFp8ScaledMMLinearKernel requires setting `VLLM_ROCM_USE_AITER=1`",
    "ROCmFP8ScaledMMLinearKernel requires CDNA3+ (gfx942/gfx950) or RDNA4 (gfx12x).",
    "PerTensorTorchFP8ScaledMMLinearKernel requires a platform with torch FP8 scaled-MM support.",
    "RowWiseTorchFP8ScaledMMLinearKernel requires platform with torch FP8 scaled-MM support.",
    "ChannelWiseTorchFP8ScaledMMLinearKernel requires a platform with torch FP8 scaled-MM support.",
]
WEIGHT_STRATEGIES = ["tensor", "channel"]


def _build_fp8_layer(monkeypatch: pytest.MonkeyPatch, strategy: str, k: int = 4096) -> object:
    """vLLM's compressed-tensors W8A8 fp8 scheme (static weights of `strategy`, dynamic
    per-token activations) creating a layer's weights, which selects its kernel."""
    from compressed_tensors.quantization import QuantizationArgs
    from vllm.model_executor.layers.quantization.compressed_tensors.schemes import compressed_tensors_w8a8_fp8

    # The scheme reads the model dtype from the engine's config (there is no model here).
    engine_config = SimpleNamespace(model_config=SimpleNamespace(dtype=torch.float16))
    monkeypatch.setattr(compressed_tensors_w8a8_fp8, "get_current_vllm_config", lambda: engine_config)
    weight_args = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy=strategy, dynamic=False)
    scheme = compressed_tensors_w8a8_fp8.CompressedTensorsW8A8Fp8(weight_quant=weight_args,
                                                                  is_static_input_scheme=False)
    scheme.create_weights(torch.nn.Module(), output_partition_sizes=[4096], input_size_per_partition=k,
                          params_dtype=torch.float16, weight_loader=lambda *args: None, output_size=4096,
                          input_size=k)
    return scheme


@pytest.fixture
def upstream_rocm_fp8_only(kernel_lists) -> None:
    """vLLM's ROCm fp8 list as shipped (the plugin absent)."""
    from vllm.model_executor.kernels import linear

    rocm = linear._POSSIBLE_FP8_KERNELS[PlatformEnum.ROCM]
    rocm[:] = [k for k in rocm if not k.__module__.startswith("vllm_rdna_w8a8")]
    assert [k.__name__ for k in rocm] == UPSTREAM_ROCM_FP8


@pytest.mark.parametrize("strategy", WEIGHT_STRATEGIES)
def test_without_the_plugin_vllm_finds_no_fp8_kernel_on_gfx1100(real_rocm_platform, upstream_rocm_fp8_only,
                                                                monkeypatch, strategy) -> None:
    monkeypatch.delenv("VLLM_DISABLED_KERNELS", raising=False)
    platform = real_rocm_platform("gfx1100")
    assert platform.get_device_capability() == (11, 0) and platform.fp8_dtype() == torch.float8_e4m3fn
    with pytest.raises(ValueError, match="Failed to find a kernel that can implement the ScaledMM linear layer") as err:
        _build_fp8_layer(monkeypatch, strategy)
    reasons = str(err.value).split("Reasons: \n", 1)[1].splitlines()
    assert len(reasons) == len(GFX11_REASONS)
    for reason, expected in zip(reasons, GFX11_REASONS):
        assert reason.strip().startswith(expected), reason


@pytest.mark.parametrize("strategy", WEIGHT_STRATEGIES)
@pytest.mark.parametrize("k", [4096, 344])
def test_with_our_registry_our_fp8_kernel_serves_it_on_gfx1100(simulate, real_rocm_platform, current_vllm_config,
                                                               monkeypatch, strategy, k) -> None:
    simulate("rocm", "gfx1100")  # our registry applied, our code objects present
    real_rocm_platform("gfx1100")
    assert type(_build_fp8_layer(monkeypatch, strategy, k).fp8_linear).__name__ == OURS


@pytest.mark.parametrize("arch", ["gfx942", "gfx1201"])
@pytest.mark.parametrize("strategy", WEIGHT_STRATEGIES)
def test_control_the_same_simulation_serves_fp8_on_cdna3_and_rdna4(real_rocm_platform, upstream_rocm_fp8_only,
                                                                   current_vllm_config, monkeypatch, arch,
                                                                   strategy) -> None:
    """Per-token activations rule out the per-tensor-only ROCmFP8 class; with aiter off,
    vLLM's torch._scaled_mm channel-wise class serves both weight strategies there."""
    real_rocm_platform(arch)
    assert type(_build_fp8_layer(monkeypatch, strategy).fp8_linear).__name__ == "ChannelWiseTorchFP8ScaledMMLinearKernel"
