"""Which int8 / fp8 kernel class vLLM picks, with the platform and device simulated."""

from __future__ import annotations

import pytest
from vllm.model_executor.kernels.linear import (
    Int8ScaledMMLinearLayerConfig,
    choose_scaled_mm_linear_kernel,
)
from vllm.platforms import PlatformEnum

OURS = "RdnaHipInt8ScaledMMLinearKernel"
GFX11 = ["gfx1100", "gfx1101", "gfx1102", "gfx1103", "gfx1150", "gfx1151"]
INT8_VARIANTS = [
    Int8ScaledMMLinearLayerConfig(is_static_input_scheme=static, is_channelwise=channelwise,
                                  input_symmetric=symmetric)
    for static in (False, True) for channelwise in (False, True) for symmetric in (False, True)
]


def _choose(config: Int8ScaledMMLinearLayerConfig) -> str:
    from vllm.model_executor.kernels import linear

    return choose_scaled_mm_linear_kernel(config, linear._POSSIBLE_INT8_KERNELS, quantization="int8_w8a8").__name__


@pytest.mark.parametrize("arch", GFX11)
@pytest.mark.parametrize("config", INT8_VARIANTS, ids=repr)
def test_every_gfx11_target_picks_ours_for_every_int8_variant(simulate, arch, config) -> None:
    simulate("rocm", arch)
    assert _choose(config) == OURS


@pytest.mark.parametrize("arch", ["gfx942", "gfx90a", "gfx1201"])
def test_other_rocm_targets_pick_upstream_triton(simulate, arch) -> None:
    simulate("rocm", arch)
    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipInt8ScaledMMLinearKernel

    ok, reason = RdnaHipInt8ScaledMMLinearKernel.is_supported()
    assert not ok and f"device 0 is {arch}" in reason
    assert _choose(INT8_VARIANTS[0]) == "TritonInt8ScaledMMLinearKernel"


@pytest.mark.parametrize(("platform", "upstream"), [
    ("cuda", "CutlassInt8ScaledMMLinearKernel"),
    ("cpu", "CPUInt8ScaledMMLinearKernel"),
])
def test_cuda_and_cpu_pick_upstream(simulate, platform, upstream) -> None:
    simulate(platform)
    assert _choose(INT8_VARIANTS[0]) == upstream


def test_unspecified_platform_has_no_int8_kernel_and_ours_declines(simulate) -> None:
    simulate("unspecified")
    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipInt8ScaledMMLinearKernel

    ok, reason = RdnaHipInt8ScaledMMLinearKernel.is_supported()
    assert not ok and "platform is unspecified" in reason
    with pytest.raises(ValueError, match="Failed to find a kernel"):
        _choose(INT8_VARIANTS[0])


@pytest.mark.parametrize(("state", "reason"), [
    ("missing", "no code object for gfx1102"),
    ("unloadable", "cannot load the gfx1102 code object (OSError: hipModuleLoadData failed"),
])
def test_gfx11_without_a_usable_code_object_picks_upstream_with_a_reason(simulate, state, reason) -> None:
    simulate("rocm", "gfx1102", code_objects=state)
    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipInt8ScaledMMLinearKernel

    ok, why = RdnaHipInt8ScaledMMLinearKernel.is_supported()
    assert not ok and why.startswith(reason)
    assert _choose(INT8_VARIANTS[0]) == "TritonInt8ScaledMMLinearKernel"


def test_vllm_disabled_kernels_returns_users_to_upstream(simulate, monkeypatch) -> None:
    simulate("rocm", "gfx1100")
    monkeypatch.setenv("VLLM_DISABLED_KERNELS", OURS)
    assert _choose(INT8_VARIANTS[0]) == "TritonInt8ScaledMMLinearKernel"


def test_emulated_gfx11_on_cpu_picks_ours(simulate) -> None:
    simulate("cpu", "gfx1151", emulated=True)
    assert _choose(INT8_VARIANTS[0]) == OURS


def test_ops_forced_to_reference_need_no_code_object(simulate, monkeypatch) -> None:
    simulate("rocm", "gfx1100", code_objects="missing")
    monkeypatch.setenv("VLLM_RDNA_W8A8_OPS", "reference")
    assert _choose(INT8_VARIANTS[0]) == OURS


def test_fp32_models_stay_upstream(simulate) -> None:
    import torch

    simulate("rocm", "gfx1100")
    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipInt8ScaledMMLinearKernel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        ok, reason = RdnaHipInt8ScaledMMLinearKernel.can_implement(INT8_VARIANTS[0])
        assert not ok and "float16 or bfloat16" in reason
        assert _choose(INT8_VARIANTS[0]) == "TritonInt8ScaledMMLinearKernel"
    finally:
        torch.set_default_dtype(previous)


def test_final_list_order_after_registration(simulate, kernel_lists) -> None:
    simulate("rocm", "gfx1100")
    from vllm_rdna_w8a8.scaled_mm import registry

    registry.insert_kernels(PlatformEnum.ROCM)  # twice: idempotent
    assert [k.__name__ for k in kernel_lists[PlatformEnum.ROCM]] == [
        OURS, "AiterInt8ScaledMMLinearKernel", "TritonInt8ScaledMMLinearKernel"]
    assert [k.__name__ for k in kernel_lists[PlatformEnum.CPU]] == [
        "ZentorchInt8ScaledMMLinearKernel", "CPUInt8ScaledMMLinearKernel"]


def _fp8_config(activation: str, weight: str, k: int = 4096):
    import torch
    from vllm.model_executor.kernels.linear import FP8ScaledMMLinearLayerConfig
    from vllm.model_executor.layers.quantization.utils import quant_utils as keys

    activation_keys = {"token": keys.kFp8DynamicTokenSym, "tensor-static": keys.kFp8StaticTensorSym,
                       "tensor-dynamic": keys.kFp8DynamicTensorSym, "group": keys.kFp8Dynamic128Sym}
    weight_keys = {"channel": keys.kFp8StaticChannelSym, "tensor": keys.kFp8StaticTensorSym,
                   "block": keys.kFp8Static128BlockSym}
    return FP8ScaledMMLinearLayerConfig(weight_quant_key=weight_keys[weight], activation_quant_key=activation_keys[activation],
                                        weight_shape=(4096, k), input_dtype=torch.float16, out_dtype=torch.float16)


def _choose_fp8(config) -> str:
    from vllm.model_executor.kernels import linear

    return choose_scaled_mm_linear_kernel(config, linear._POSSIBLE_FP8_KERNELS, quantization="fp8_w8a8").__name__


@pytest.mark.parametrize("arch", GFX11)
@pytest.mark.parametrize(("activation", "weight"), [("token", "channel"), ("token", "tensor"),
                                                    ("tensor-static", "tensor"), ("tensor-dynamic", "channel")])
def test_every_gfx11_target_picks_our_fp8_kernel(simulate, arch, activation, weight) -> None:
    simulate("rocm", arch)
    assert _choose_fp8(_fp8_config(activation, weight)) == "RdnaHipFp8ScaledMMLinearKernel"


@pytest.mark.parametrize("k", [344, 4100])
def test_fp8_layers_with_k_not_a_multiple_of_16_pick_our_kernel(simulate, k) -> None:
    """The weight and activations are padded to a multiple of 16 (see test_layer)."""
    simulate("rocm", "gfx1100")
    assert _choose_fp8(_fp8_config("token", "channel", k)) == "RdnaHipFp8ScaledMMLinearKernel"


@pytest.mark.parametrize(("config_args", "reason"), [
    (("group", "block"), "requires per-tensor or per-token activation scales"),
    (("token", "block"), "requires static per-tensor or per-channel weight scales"),
])
def test_fp8_layers_we_cannot_serve_are_declined_with_a_reason(config_args, reason) -> None:
    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipFp8ScaledMMLinearKernel

    assert RdnaHipFp8ScaledMMLinearKernel.can_implement(_fp8_config(*config_args)) == (False, reason)


@pytest.mark.parametrize("arch", ["gfx942", "gfx1201"])
def test_other_rocm_targets_do_not_pick_our_fp8_kernel(simulate, arch) -> None:
    simulate("rocm", arch)
    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipFp8ScaledMMLinearKernel

    assert RdnaHipFp8ScaledMMLinearKernel.is_supported() == (
        False, f"requires a gfx11 target (gfx1100, gfx1101, gfx1102, gfx1103, gfx1150, gfx1151); device 0 is {arch}")


def test_disabling_our_fp8_kernel_is_honoured(simulate, monkeypatch) -> None:
    # Only our class is asked: upstream's ROCm fp8 candidates call into ROCm libraries
    # that this CPU machine does not have.
    from vllm.model_executor.kernels.linear import is_supported_and_can_implement_kernel

    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipFp8ScaledMMLinearKernel

    simulate("rocm", "gfx1100")
    config = _fp8_config("token", "channel")
    assert is_supported_and_can_implement_kernel(RdnaHipFp8ScaledMMLinearKernel, config, None) == (True, "")
    monkeypatch.setenv("VLLM_DISABLED_KERNELS", "RdnaHipFp8ScaledMMLinearKernel")
    ok, reason = is_supported_and_can_implement_kernel(RdnaHipFp8ScaledMMLinearKernel, config, None)
    assert not ok and "disabled by environment variable" in reason


def test_a_failing_device_query_is_a_reason_not_a_crash(simulate, monkeypatch) -> None:
    from vllm_rdna_w8a8.scaled_mm import support

    simulate("rocm", "gfx1100")

    def refuse(index: int) -> str:
        raise RuntimeError("VLLM_RDNA_W8A8_EMULATE=gfx1100 is set on a machine with 1 real ROCm GPU(s)")

    monkeypatch.setattr(support, "device_target", refuse)
    ok, reason = support.hip_kernels_usable()
    assert not ok and reason.startswith("could not check the device (RuntimeError: VLLM_RDNA_W8A8_EMULATE")
    assert _choose(INT8_VARIANTS[0]) == "TritonInt8ScaledMMLinearKernel"
