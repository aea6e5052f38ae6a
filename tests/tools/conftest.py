"""Fixtures of the tools tests: the ISA probe kernels compiled by our build module."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_rdna_w8a8.build import CompilerNotFound, build, find_clang, get_target
from vllm_rdna_w8a8.tools.isa_report import KernelReport, isa_report

HERE = Path(__file__).parent
PROBE_TARGETS = ("gfx1100", "gfx1102")


@pytest.fixture(scope="session")
def probe_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], KernelReport]:
    """ISA reports of tests/tools/kernels/isa_probe.hip, keyed by (kernel, target)."""
    try:
        clang = find_clang()
    except CompilerNotFound as exc:
        pytest.skip(f"no gfx11-capable clang here: {exc}")
    root = tmp_path_factory.mktemp("isa-probe")
    build(clang, [get_target(t) for t in PROBE_TARGETS], HERE / "kernels", root / "objects",
          root / "work", log=lambda _: None)
    return {(r.kernel, r.target): r for r in isa_report(root / "objects")}
