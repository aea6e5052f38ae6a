"""Table generation's occupancy from the ISA report of the compiled objects (a developer
step: serving estimates occupancy, see test_pick.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from vllm_rdna_w8a8.dispatch import perf_model
from vllm_rdna_w8a8.tune import generate_tables
from vllm_rdna_w8a8.dispatch.tile_configs import TileConfig

PREFILL = TileConfig("m128n128k64_w2x2x1", 128, 128, 64, 2, 2, 1, "lds_double_buffer")


def test_occupancy_from_isa_report_rows() -> None:
    rows = [
        SimpleNamespace(target="gfx1100", kernel="w8a8_i8_gemm_m128n128k64_w2x2x1", waves_per_simd=5,
                        lds_bytes=40960, main_loop_loads={"global_load_b128": 4, "ds_load_b128": 8}),
        SimpleNamespace(target="gfx1101", kernel="w8a8_i8_gemm_m128n128k64_w2x2x1", waves_per_simd=5,
                        lds_bytes=40960, main_loop_loads={"global_load_b128": 4}),
        SimpleNamespace(target="gfx1100", kernel="w8a8_quant_i8_f16", waves_per_simd=16,
                        lds_bytes=0, main_loop_loads={}),
    ]
    occupancies = generate_tables.occupancies_from_isa_report(rows, "gfx1100")
    assert set(occupancies) == {"w8a8_i8_gemm_m128n128k64_w2x2x1"}
    occupancy = occupancies["w8a8_i8_gemm_m128n128k64_w2x2x1"]
    assert occupancy == perf_model.Occupancy(5, 40960, 4 * 16 * 32, "isa_report")
    prediction = perf_model.predict("gfx1100", PREFILL, 4096, 4096, 4096, occupancy=occupancy)
    assert prediction.occupancy_source == "isa_report"


@pytest.mark.parametrize(("opcode", "width"), [
    ("global_load_b128", 16), ("buffer_load_b64", 8), ("global_load_b32", 4), ("global_load_u8", 1),
    ("global_load_d16_b16", 2), ("global_load_i16", 2), ("global_load_lds_dword", 4),
])
def test_load_widths(opcode: str, width: int) -> None:
    assert generate_tables._load_width_bytes(opcode) == width


def test_missing_objects_or_report_tool_means_assumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert generate_tables.load_occupancies("gfx1100", tmp_path) == {}  # no objects there
    (tmp_path / "gfx1100").mkdir()
    from vllm_rdna_w8a8.tools import isa_report

    def no_objdump(environ: object = None) -> Path:
        raise isa_report.IsaReportError("no llvm-objdump found")

    monkeypatch.setattr(isa_report, "find_objdump", no_objdump)
    assert generate_tables.load_occupancies("gfx1100", tmp_path) == {}
