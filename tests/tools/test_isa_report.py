from __future__ import annotations

import dataclasses
import json

import pytest

from vllm_rdna_w8a8.build.targets import get_target
from vllm_rdna_w8a8.runtime.code_object import read_code_object
from vllm_rdna_w8a8.tools.isa_report import (
    KernelReport,
    format_table,
    gemm_policy_violations,
    main,
    format_mix_table,
    loop_counts,
    main_loop,
    main_loops,
    occupancy,
    parse_disassembly,
)

Reports = dict[tuple[str, str], KernelReport]


@pytest.mark.parametrize(
    ("target", "vgprs", "lds", "workgroup", "waves", "limit"),
    [
        # 206 VGPRs -> 216 allocated (granule 24), 1536 // 216 = 7 waves; but 128 KiB // 40 KiB
        # = 3 workgroups of 4 waves per WGP = 3 waves per SIMD.
        ("gfx1100", 206, 40960, 128, 3.0, "lds"),
        # 1024 // 128 = 8 waves per SIMD; 4 SIMDs * 8 // 8 waves = 4 workgroups of 256.
        ("gfx1102", 128, 0, 256, 8.0, "vgprs"),
        # 24 VGPRs would allow 64 waves: the 16-wave cap binds.
        ("gfx1100", 24, 1024, 64, 16.0, "wave cap"),
        # 100 VGPRs: granule 16 -> 112 on gfx1103 (9 waves), 24 -> 120 on gfx1151 (12 waves).
        ("gfx1103", 100, 0, 32, 9.0, "vgprs"),
        ("gfx1151", 100, 0, 32, 12.0, "vgprs"),
        # 256 VGPRs: 4 waves per SIMD; the WGP holds 4 workgroups of 4 waves.
        ("gfx1102", 256, 0, 128, 4.0, "vgprs"),
        # A 1024-thread workgroup needs 8 waves per SIMD; 256 VGPRs allow 4: it cannot run.
        ("gfx1102", 256, 0, 1024, 0.0, "vgprs"),
        # More LDS than a workgroup may have.
        ("gfx1100", 32, 65537, 64, 0.0, "lds"),
    ],
)
def test_occupancy(target: str, vgprs: int, lds: int, workgroup: int, waves: float, limit: str) -> None:
    fit = occupancy(get_target(target), vgprs, lds, workgroup)
    assert (fit.waves_per_simd, fit.limited_by) == (waves, limit)


def test_occupancy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="bad kernel resources"):
        occupancy(get_target("gfx1100"), 0, 0, 64)


DISASSEMBLY = """
0000000000001000 <outer_inner>:
	s_load_b64 s[2:3], s[0:1], 0x18                            // 000000001000: F4040080 F8000018
	global_load_b32 v1, v0, s[2:3]                             // 000000001008: DC500000 01020000
	global_load_b128 v[4:7], v0, s[2:3]                        // 000000001010: DC5E0000 04020000
	ds_load_b128 v[8:11], v1                                   // 000000001018: DBFC0000 08000001
	v_wmma_i32_16x16x16_iu8 v[12:19], v[4:7], v[8:11], v[12:19] // 000000001020: CC444002 7C0A2114
	s_cbranch_scc0 65531                                       // 000000001028: BFA1FFFB <outer_inner+0x10>
	s_cbranch_scc0 65529                                       // 00000000102C: BFA1FFF9 <outer_inner+0x8>
	s_cbranch_execz 2                                          // 000000001030: BFA50002 <outer_inner+0x3c>
	s_endpgm                                                   // 000000001034: BFB00000

0000000000001100 <no_loop>:
	s_endpgm                                                   // 000000001100: BFB00000
"""


def test_disassembly_parsing_and_main_loop_choice() -> None:
    symbols = parse_disassembly(DISASSEMBLY)
    assert set(symbols) == {"outer_inner", "no_loop"}
    instructions = symbols["outer_inner"]
    assert [i.offset for i in instructions][:3] == [0x0, 0x8, 0x10]
    assert instructions[5].branch_target == 0x10 and instructions[7].branch_target == 0x3C
    loop = main_loop(instructions)
    # Both loops hold the one WMMA; the outer one also holds the b32 load, so it has more
    # loads and wins: the report must show the narrow load that the outer loop repeats.
    assert loop is not None
    assert [i.mnemonic for i in loop if "load" in i.mnemonic] == [
        "global_load_b32", "global_load_b128", "ds_load_b128"]
    assert main_loop(symbols["no_loop"]) is None


# One main loop compiled twice (a kernel that picks a mode once and runs one body per mode):
# two disjoint copies, the second with two more VALU instructions; an outer loop around the
# first copy holds the same WMMA and loads and must not count as a third copy.
TWO_COPIES = """
0000000000002000 <two_modes>:
	global_load_b128 v[4:7], v0, s[2:3]                        // 000000002000: DC5E0000 04020000
	v_mul_f32_e32 v1, v2, v1                                   // 000000002008: 10020302
	v_wmma_i32_16x16x16_iu8 v[12:19], v[4:7], v[8:11], v[12:19] // 00000000200C: CC444002 7C0A2114
	s_cbranch_scc0 65532                                       // 000000002014: BFA1FFFC <two_modes>
	s_cbranch_scc1 65531                                       // 000000002018: BFA2FFFB <two_modes>
	global_load_b128 v[4:7], v0, s[2:3]                        // 00000000201C: DC5E0000 04020000
	v_mul_f32_e32 v1, v2, v1                                   // 000000002024: 10020302
	v_div_scale_f32 v3, null, v2, v2, v1                       // 000000002028: D6FC7C03 04060502
	v_div_fixup_f32 v1, v3, v2, v1                             // 000000002030: D6270001 04060503
	v_wmma_i32_16x16x16_iu8 v[12:19], v[4:7], v[8:11], v[12:19] // 000000002038: CC444002 7C0A2114
	s_delay_alu instid0(VALU_DEP_1)                            // 000000002040: BF870001
	s_cbranch_scc0 65526                                       // 000000002044: BFA1FFF6 <two_modes+0x1c>
	s_endpgm                                                   // 000000002048: BFB00000
"""


def test_main_loops_finds_every_copy_once() -> None:
    instructions = parse_disassembly(TWO_COPIES)["two_modes"]
    copies = main_loops(instructions)
    assert [[i.offset for i in copy][::len(copy) - 1] for copy in copies] == [[0x0, 0x14], [0x1C, 0x44]]
    assert main_loop(instructions) == copies[0]  # the shortest copy
    light, heavy = (loop_counts(copy) for copy in copies)
    assert (light.wmma, light.valu, light.vmem, light.salu, light.hints) == (1, 1, 1, 1, 0)
    assert (heavy.wmma, heavy.valu, heavy.vmem, heavy.salu, heavy.hints) == (1, 3, 1, 1, 1)


# A loop, the one-off step after it (another WMMA), and a backward jump of the block layout
# that encloses both: not a loop around the loop (it would repeat the same WMMAs).
LOOP_THEN_TAIL = """
0000000000003000 <loop_then_tail>:
	global_load_b128 v[4:7], v0, s[2:3]                        // 000000003000: DC5E0000 04020000
	v_wmma_i32_16x16x16_iu8 v[12:19], v[4:7], v[8:11], v[12:19] // 000000003008: CC444002 7C0A2114
	s_cbranch_scc0 65533                                       // 000000003010: BFA1FFFD <loop_then_tail>
	global_load_b128 v[4:7], v0, s[2:3]                        // 000000003014: DC5E0000 04020000
	v_wmma_i32_16x16x16_iu8 v[12:19], v[4:7], v[8:11], v[12:19] // 00000000301C: CC444002 7C0A2114
	s_cbranch_execz 65528                                      // 000000003024: BFA5FFF8 <loop_then_tail>
	s_endpgm                                                   // 000000003028: BFB00000
"""


def test_a_jump_around_a_loop_and_more_wmmas_is_not_the_main_loop() -> None:
    instructions = parse_disassembly(LOOP_THEN_TAIL)["loop_then_tail"]
    assert [[i.offset for i in copy][::len(copy) - 1] for copy in main_loops(instructions)] == [[0x0, 0x10]]


def test_probe_reports_match_metadata(probe_reports: Reports, tmp_path_factory) -> None:
    good = probe_reports[("w8a8_i8_gemm_probe_good", "gfx1100")]
    assert good.wmma_count == 1 and good.wmma_mnemonics == {"v_wmma_i32_16x16x16_iu8": 1}
    assert good.main_loop_found and good.main_loop_wmma_count == 1
    assert good.main_loop_loads == {"ds_load_b128": 1, "global_load_b128": 2}
    assert good.lds_bytes == 64 * 16 and good.workgroup_size == 64
    assert good.scratch_bytes == 0 and good.vgpr_spills == 0
    assert good.stores and all(m.startswith("global_store_") for m in good.stores)  # its output c
    assert set(probe_reports) == {(kernel, target) for kernel in (
        "w8a8_i8_gemm_probe_good", "w8a8_i8_gemm_probe_narrow", "w8a8_f8_gemm_probe_scratch")
        for target in ("gfx1100", "gfx1102")}
    narrow = probe_reports[("w8a8_i8_gemm_probe_narrow", "gfx1102")]
    assert narrow.main_loop_loads.get("global_load_b128", 0) == 0
    assert narrow.main_loop_loads["global_load_b32"] >= 8
    assert probe_reports[("w8a8_f8_gemm_probe_scratch", "gfx1100")].scratch_bytes >= 256


def test_policy_passes_the_good_probe(probe_reports: Reports) -> None:
    for target in ("gfx1100", "gfx1102"):
        assert gemm_policy_violations(probe_reports[("w8a8_i8_gemm_probe_good", target)]) == []


def test_policy_names_kernel_target_and_figure(probe_reports: Reports) -> None:
    narrow = gemm_policy_violations(probe_reports[("w8a8_i8_gemm_probe_narrow", "gfx1100")])
    assert len(narrow) == 1
    assert narrow[0].startswith("w8a8_i8_gemm_probe_narrow on gfx1100: main loop global loads "
                                "are not all 128-bit: {'global_load_b32': ")
    scratch_report = probe_reports[("w8a8_f8_gemm_probe_scratch", "gfx1102")]
    scratch = gemm_policy_violations(scratch_report)
    assert (f"w8a8_f8_gemm_probe_scratch on gfx1102: uses {scratch_report.scratch_bytes} bytes of "
            "scratch per lane") in scratch
    assert any("no v_wmma_f32_16x16x16_f16 (WMMA used: none)" in p for p in scratch)
    assert any("no main loop" in p for p in scratch)


def test_policy_limits_on_synthetic_figures(probe_reports: Reports) -> None:
    good = probe_reports[("w8a8_i8_gemm_probe_good", "gfx1102")]
    bad = dataclasses.replace(good, vgpr_spills=3, sgpr_spills=1, vgprs=300, lds_bytes=70000,
                              waves_per_simd=0.0, occupancy_limited_by="lds")
    problems = "\n".join(gemm_policy_violations(bad))
    assert "w8a8_i8_gemm_probe_good on gfx1102: spills 3 VGPRs, 1 SGPRs" in problems
    assert "300 VGPRs > 256" in problems
    assert "70000 bytes of LDS > 65536" in problems
    assert "does not fit (lds)" in problems
    with pytest.raises(ValueError, match="not a GEMM kernel"):
        gemm_policy_violations(dataclasses.replace(good, kernel="w8a8_quant_i8_f16"))


def test_table_and_cli(probe_reports: Reports, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    table = format_table(list(probe_reports.values()))
    assert table.splitlines()[0].split()[:3] == ["target", "kernel", "vgpr"]
    assert "global_load_b128: 2" in table and "no loop" in table
    assert table.splitlines()[0].split()[-1] == "stores" and "global_store_" in table
    mix = format_mix_table(list(probe_reports.values())).splitlines()
    assert mix[0].split()[:4] == ["target", "kernel", "loops", "loop"]
    good = next(line.split() for line in mix if "probe_good" in line)
    assert good[2:4] == ["1", "1"]  # one loop copy with one WMMA
    assert main([str(tmp_path)]) == 1
    assert "no kernels in" in capsys.readouterr().err


def test_cli_json_on_real_objects(probe_reports: Reports, capsys: pytest.CaptureFixture[str],
                                  tmp_path_factory) -> None:
    objects = next(tmp_path_factory.getbasetemp().glob("isa-probe*/objects"))
    assert main([str(objects), "--target", "gfx1102", "--kernel", "good", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kernel"], r["target"]) for r in rows] == [("w8a8_i8_gemm_probe_good", "gfx1102")]
    metadata = read_code_object(objects / "gfx1102" / "isa_probe.hsaco").kernels[rows[0]["kernel"]]
    assert rows[0]["vgprs"] == metadata.vgpr_count and rows[0]["sgprs"] == metadata.sgpr_count
