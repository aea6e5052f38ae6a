"""Compile policy over the real kernels/: every GEMM instantiation, compiled by our build
module for every gfx11 target, must use its WMMA, never spill or use scratch, stay within
the target's VGPR and LDS limits, and read global memory 128 bits wide in its main loop."""

from __future__ import annotations

import re

import pytest

from vllm_rdna_w8a8.build import DEFAULT_KERNELS_DIR, CompilerNotFound, build, find_clang
from vllm_rdna_w8a8.build.compile import DEFAULT_OBJECTS_DIR
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch.tile_configs import FUSED_INPUT_DTYPES, KERNEL_KINDS, load_tile_configs
from vllm_rdna_w8a8.tools.isa_report import (
    GEMM_KERNEL_RE,
    KernelReport,
    gemm_policy_violations,
    isa_report,
)

pytestmark = pytest.mark.slow  # a fresh build compiles every source for six targets
_CONFIG_ROW_RE = re.compile(r"^\s*W8A8_GEMM_CONFIG\(\s*(\w+)\s*,", re.M)


@pytest.fixture(scope="module")
def gemm_reports() -> list[KernelReport]:
    """Builds the package's code objects (up-to-date ones are kept) and reports on them."""
    try:
        clang = find_clang()
    except CompilerNotFound as exc:
        pytest.skip(f"no gfx11-capable clang here: {exc}")
    build(clang, list(GFX11_TARGETS.values()), log=lambda _: None)
    reports = [r for r in isa_report(DEFAULT_OBJECTS_DIR) if GEMM_KERNEL_RE.match(r.kernel)]
    assert reports, f"no w8a8_*_gemm_* kernel compiled from {DEFAULT_KERNELS_DIR}"
    return reports


def test_every_table_row_is_instantiated_for_every_target(gemm_reports: list[KernelReport]) -> None:
    tags = _CONFIG_ROW_RE.findall((DEFAULT_KERNELS_DIR / "gemm_configs.def").read_text())
    assert tags, "gemm_configs.def has no W8A8_GEMM_CONFIG rows"
    present = {(r.kernel, r.target) for r in gemm_reports}
    missing = [f"w8a8_{kind}_gemm_{tag} for {target}" for kind in KERNEL_KINDS for tag in tags
               for target in GFX11_TARGETS if (f"w8a8_{kind}_gemm_{tag}", target) not in present]
    assert not missing, "not compiled: " + "; ".join(missing)


def test_every_decode_row_has_its_fused_kernels_for_every_target(gemm_reports: list[KernelReport]) -> None:
    decode_rows = [config for config in load_tile_configs(DEFAULT_KERNELS_DIR / "gemm_configs.def")
                   if config.is_decode]
    assert decode_rows, "gemm_configs.def has no decode rows (BLOCK_M == 16)"
    present = {(r.kernel, r.target) for r in gemm_reports}
    missing = [f"{config.fused_kernel_name(dtype)} for {target}" for config in decode_rows
               for dtype in FUSED_INPUT_DTYPES for target in GFX11_TARGETS
               if (config.fused_kernel_name(dtype), target) not in present]
    assert not missing, "not compiled: " + "; ".join(missing)


def test_every_table_row_has_its_moe_kernels_for_every_target(gemm_reports: list[KernelReport]) -> None:
    import torch

    from vllm_rdna_w8a8.moe.hip_backend import moe_kernel_name

    rows = load_tile_configs(DEFAULT_KERNELS_DIR / "gemm_configs.def")
    present = {(r.kernel, r.target) for r in gemm_reports}
    wanted = [moe_kernel_name(config, dtype, kind) for config in rows for dtype in (torch.float16, torch.bfloat16)
              for kind in KERNEL_KINDS]
    missing = [f"{name} for {target}" for name in wanted for target in GFX11_TARGETS
               if (name, target) not in present]
    assert not missing, "not compiled: " + "; ".join(missing)


def test_gemm_kernels_follow_the_compile_policy(gemm_reports: list[KernelReport]) -> None:
    problems = [problem for report in gemm_reports for problem in gemm_policy_violations(report)]
    assert not problems, "\n".join(problems)
