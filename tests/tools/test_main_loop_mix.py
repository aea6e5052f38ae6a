"""The main-loop mix file the performance model reads: counted right, and equal to the code objects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build.compile import DEFAULT_OBJECTS_DIR
from vllm_rdna_w8a8.dispatch import perf_model
from vllm_rdna_w8a8.tools import main_loop_mix
from vllm_rdna_w8a8.tools.isa_report import OBJDUMP_CANDIDATES, Instruction, parse_disassembly

LOOP = """
0000000000001000 <w8a8_i8_gemm_probe>:
	s_load_b64 s[2:3], s[0:1], 0x18                            // 000000001000: F4040080 F8000018
	s_clause 0x1                                               // 000000001008: BF850001
	global_load_b128 v[4:7], v0, s[2:3]                        // 00000000100C: DC5E0000 04020000
	scratch_load_b32 v9, off, off offset:4                     // 000000001014: DC510004 097C0000
	ds_load_b128 v[8:11], v1                                   // 00000000101C: DBFC0000 08000001
	s_waitcnt vmcnt(0) lgkmcnt(0)                              // 000000001024: BF890007
	s_delay_alu instid0(VALU_DEP_1)                            // 000000001028: BF870001
	v_add_nc_u32_e32 v1, 16, v1                                // 00000000102C: 4A020290
	v_wmma_i32_16x16x16_iu8 v[12:19], v[4:7], v[8:11], v[12:19] // 000000001030: CC444002 7C0A2114
	v_wmma_i32_16x16x16_iu8 v[20:27], v[4:7], v[8:11], v[20:27] // 000000001038: CC444002 7C0A2114
	s_add_i32 s4, s4, 1                                        // 000000001040: 81048104
	s_cbranch_scc0 65529                                       // 000000001044: BFA1FFF9 <w8a8_i8_gemm_probe+0xc>
	s_endpgm                                                   // 000000001048: BFB00000
"""


def test_loop_counts_by_class() -> None:
    """The loop runs from the global load back-branched to, to the branch: each instruction in
    exactly one class, scratch also counted as VMEM, hints apart from SALU."""
    mix = main_loop_mix.kernel_mix(parse_disassembly(LOOP)["w8a8_i8_gemm_probe"])
    assert mix == perf_model.MainLoopMix(wmma=2, valu=1, lds=1, vmem=2, scratch=1, salu=2, waits=1, hints=1)
    # one pass: 2 WMMAs of 32 clocks, one VALU clock, one issue clock per SALU, LDS and VMEM
    assert mix.issue_clk() == 2 * 32 + 1 + 2 + 1 + 2
    assert main_loop_mix.kernel_mix(parse_disassembly(LOOP.replace("v_wmma_i32_16x16x16_iu8", "v_mov_b32"))
                                    ["w8a8_i8_gemm_probe"]) is None  # no WMMA in the loop: no mix


def test_a_kernel_with_a_loop_per_mode_is_priced_by_its_costliest_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused decode GEMMs compile one main loop per quantization mode: the model takes the
    dearest (isa_report.main_loops finds the copies; tests/tools/test_isa_report.py)."""
    light = parse_disassembly(LOOP)["w8a8_i8_gemm_probe"]
    heavy = light + [Instruction(0x100 + 4 * i, "v_div_fixup_f32", None) for i in range(3)]
    monkeypatch.setattr(main_loop_mix, "main_loops", lambda instructions: [light, heavy])
    assert main_loop_mix.kernel_mix([]).valu == 4


def test_rendered_file_is_what_the_model_reads() -> None:
    mixes = {"gfx1100": {"w8a8_i8_gemm_b": perf_model.MainLoopMix(8, 7, 0, 16, 0, 20, 1, 30),
                         "w8a8_i8_gemm_a": perf_model.MainLoopMix(16, 45, 16, 9, 0, 73, 9, 22)}}
    text = main_loop_mix.render(mixes)
    assert perf_model.parse_main_loop_mixes(json.loads(text)) == {
        ("gfx1100", name): mix for name, mix in mixes["gfx1100"].items()}
    assert text.index("w8a8_i8_gemm_a") < text.index("w8a8_i8_gemm_b")  # sorted: diffs line by line


@pytest.mark.slow
def test_shipped_mix_file_matches_the_code_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Developer-side: the shipped file equals what the built code objects give now; after a
    kernel change, rebuild and run `python -m vllm_rdna_w8a8.tools.main_loop_mix`."""
    if not any(shutil.which(name) for name in OBJDUMP_CANDIDATES):
        pytest.skip("no llvm-objdump here")
    if not any(DEFAULT_OBJECTS_DIR.glob("gfx*/*.hsaco")):
        pytest.skip("no code objects built")
    assert main_loop_mix.main(["--check"]) == 0, capsys.readouterr().err
    # and the check does fail on a file that differs
    stale = tmp_path / "mix.json"
    stale.write_text(perf_model.MAIN_LOOP_MIX_PATH.read_text().replace('"wmma": 16', '"wmma": 15', 1))
    assert main_loop_mix.main(["--check", "--output", str(stale)]) == 1
