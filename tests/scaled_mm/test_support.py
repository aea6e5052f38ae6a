"""scaled_mm/support.kernel_names: the kernels the readiness check loads before a layer kind is
ours must be every kernel that kind's op may launch, and only kernels the shipped objects hold."""

from __future__ import annotations

import pytest
import torch

from vllm_rdna_w8a8.dispatch import load_tile_configs
from vllm_rdna_w8a8.moe import hip_backend as moe_hip_backend
from vllm_rdna_w8a8.runtime import launcher
from vllm_rdna_w8a8.scaled_mm import support


def test_moe_readiness_names_every_grouped_gemm_the_int8_and_fp8_experts_launch() -> None:
    names = set(support.kernel_names(support.MOE_KIND))
    launchable = {moe_hip_backend.moe_kernel_name(config, dtype, kind)
                  for config in load_tile_configs()
                  for dtype in (torch.float16, torch.bfloat16) for kind in ("i8", "f8")}
    assert launchable <= names, sorted(launchable - names)
    assert set(support.SILU_MUL_QUANT_KERNELS) <= names and set(support.QUANT_KERNELS) <= names


@pytest.mark.parametrize("kind", ["i8", "f8", support.MOE_KIND])
def test_readiness_names_only_kernels_the_shipped_objects_define(kind: str) -> None:
    if launcher.missing_reason("gfx1100"):
        pytest.skip(f"no gfx1100 code objects built: {launcher.missing_reason('gfx1100')}")
    defined = set(launcher.kernel_names("gfx1100"))
    assert set(support.kernel_names(kind)) <= defined, sorted(set(support.kernel_names(kind)) - defined)
