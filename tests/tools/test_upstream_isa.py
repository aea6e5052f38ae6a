"""Upstream's Triton scaled_mm beside ours at the ISA level (tools/upstream_isa.py)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch.perf_model import MainLoopMix
from vllm_rdna_w8a8.tools import upstream_isa
from vllm_rdna_w8a8.tools.upstream_isa import Resources, Side


@pytest.mark.parametrize(("m", "n", "tile"), [
    (1, 4096, (64, 64, 256)), (32, 4096, (64, 64, 256)), (32, 8192, (64, 128, 256)), (33, 8192, (64, 64, 256)),
    (64, 4096, (64, 64, 256)), (65, 4096, (64, 128, 128)), (128, 28672, (64, 128, 128)), (129, 4096, (128, 128, 128)),
])
def test_upstream_tile_heuristic(m: int, n: int, tile: tuple[int, int, int]) -> None:
    assert upstream_isa.upstream_tile(m, n) == tile


def test_default_shapes_cover_every_heuristic_tile() -> None:
    tiles = {upstream_isa.upstream_tile(m, n) for m, n, _ in upstream_isa.DEFAULT_SHAPES}
    assert tiles == {(64, 64, 256), (64, 128, 256), (64, 128, 128), (128, 128, 128)}


def _side(kernel: str, spills: int, scratch: int, mix: MainLoopMix) -> Side:
    return Side(kernel, Resources("gfx1100", 256 if spills else 90, spills, scratch, 32768, 4.0), mix)


def test_row_is_upstream_beside_ours_per_wmma_and_flags_spills() -> None:
    upstream = _side("64x64x256", 59, 192, MainLoopMix(128, 35, 112, 20, 18, 14, 63, 3))
    ours = _side("i8_gemm_x", 0, 0, MainLoopMix(8, 58, 0, 10, 0, 46, 1, 30))
    cells = [cell.strip() for cell in upstream_isa.table_row((16, 4096, 4096), upstream, ours).strip("|").split("|")]
    assert len(cells) == len(upstream_isa.COLUMNS)
    row = dict(zip(upstream_isa.COLUMNS, cells))
    assert row["VGPR spills"] == "59 / 0" and row["scratch B/lane"] == "192 / 0"
    assert row["loop WMMA"] == "128 / 8"
    assert row["VALU/WMMA"] == "0.3 / 7.2" and row["scratch/WMMA"] == "0.1 / 0.0" and row["SALU/WMMA"] == "0.1 / 5.8"
    assert row["flag"] == "upstream spills 59 VGPRs (192 B scratch/lane)"
    # our own spills are flagged too (the compile policy forbids them)
    both = upstream_isa.spill_flag(upstream, _side("i8_gemm_x", 3, 16, ours.mix))
    assert both.endswith("OURS spills 3 VGPRs (16 B scratch/lane)")
    assert upstream_isa.spill_flag(ours, ours) == ""


@pytest.mark.parametrize("text", ["16x4096", "0x1x1", "ax1x1", "16x4096x-1"])
def test_bad_shape_argument_is_named(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="MxNxK with positive integers"):
        upstream_isa._shape(text)


@pytest.fixture(scope="module")
def upstream_module():
    pytest.importorskip("triton")
    pytest.importorskip("vllm")
    with tempfile.TemporaryDirectory() as work:
        yield Path(work), upstream_isa._upstream_kernel_module(Path(work))


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(GFX11_TARGETS))
def test_upstream_compiles_for_every_gfx11_target_with_consistent_counts(upstream_module, target: str) -> None:
    """Upstream's decode tile compiles for each gfx11 target; its figures agree with its code
    object: WMMAs in the loop are whole k-iterations of the tile over 4 waves, a spill count
    comes with scratch bytes and scratch instructions, VGPRs within the 256 a wave can have."""
    from vllm_rdna_w8a8.tools.isa_report import disassemble, find_objdump

    work_dir, module = upstream_module
    tile = (64, 64, 256)
    side = upstream_isa.upstream_side(module, tile, target, find_objdump(), work_dir)
    per_iteration = (64 // 16) * (64 // 16) * (256 // 16) // 4
    assert side.mix.wmma > 0 and side.mix.wmma % per_iteration == 0, side.mix
    assert side.resources.vgprs <= 256 and side.resources.waves_per_simd >= 1
    instructions = next(iter(disassemble(find_objdump(), work_dir / target / "upstream_m64n64k256.hsaco",
                                         target).values()))
    scratch_instructions = sum(i.mnemonic.startswith("scratch_") for i in instructions)
    assert (side.resources.vgpr_spills > 0) == (side.resources.scratch_bytes > 0) == (scratch_instructions > 0)
    assert side.mix.scratch <= scratch_instructions and side.mix.scratch <= side.mix.vmem


@pytest.mark.slow
def test_table_on_gfx1100_is_ours_from_the_isa_report_and_flags_upstream_spills() -> None:
    pytest.importorskip("triton")
    pytest.importorskip("vllm")
    from vllm_rdna_w8a8.tools.isa_report import isa_report

    table = upstream_isa.comparison_table(["gfx1100"], ((16, 4096, 4096), (4096, 4096, 4096)))
    lines = table.splitlines()
    assert lines[0] == "| " + " | ".join(upstream_isa.COLUMNS) + " |" and len(lines) == 4
    reports = {r.kernel: r for r in isa_report(targets=["gfx1100"])}
    for line, m in zip(lines[2:], (16, 4096)):
        row = dict(zip(upstream_isa.COLUMNS, (cell.strip() for cell in line.strip("|").split("|"))))
        ours = "w8a8_" + row["upstream tile / our kernel"].split(" / ")[1]
        assert ours == upstream_isa.our_kernel("gfx1100", m, 4096, 4096)
        assert row["VGPRs"].split(" / ")[1] == str(reports[ours].vgprs)
        assert row["LDS B"].split(" / ")[1] == str(reports[ours].lds_bytes)
        upstream_spills = int(row["VGPR spills"].split(" / ")[0])
        assert row["flag"].startswith("upstream spills") == (upstream_spills > 0)
