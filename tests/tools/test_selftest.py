"""`python -m vllm_rdna_w8a8 selftest` (issue 10 section 3): its comparisons, its plan, its
refusals, its report as the tuner's measured input; on the emulated gfx1100 and gfx1151 it
passes and writes its report (slow), and a test-only code object with a wrong epilogue makes
it fail naming the shape and the first differing element (slow)."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vllm_rdna_w8a8.__main__ import main as cli
from vllm_rdna_w8a8.build.compile import KERNEL_DATA_NAMES
from vllm_rdna_w8a8.emulation import KERNELS_DIR, build_emulator
from vllm_rdna_w8a8.ops import reference
from vllm_rdna_w8a8.runtime import device, hip
from vllm_rdna_w8a8.runtime.code_object import read_code_object
from vllm_rdna_w8a8.runtime.launcher import OBJECTS_DIR
from vllm_rdna_w8a8.settings import EMULATE_ENV, OPS_ENV
from vllm_rdna_w8a8.tools import selftest
from vllm_rdna_w8a8.tune.run import main as tune

HERE = Path(__file__).parent
EMULATED = selftest.Placement(0, "gfx1100", emulated=True)
ROCM = selftest.Placement(0, "gfx1100", emulated=False)


@pytest.fixture
def no_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EMULATE_ENV, raising=False)
    monkeypatch.delenv(OPS_ENV, raising=False)
    device.clear_caches()


# --- comparisons -----------------------------------------------------------------------------

def test_bit_difference_names_the_first_differing_element() -> None:
    expected = torch.arange(12, dtype=torch.float16).reshape(3, 4)
    got = expected.clone()
    got[1, 2] = 6.5
    got[2, 0] = -1
    assert selftest.bit_difference("out", expected.clone(), expected) is None
    assert selftest.bit_difference("out", got, expected) == (
        "out[1, 2]: got 6.5 (0x4680), expected 6.0 (0x4600) (2 of 12 elements differ)")


def test_bit_difference_matches_nan_with_nan_only() -> None:
    expected = torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)
    other_nan = expected.view(torch.int16).clone()
    other_nan[1] |= -0x8000  # a NaN of the other sign
    assert selftest.bit_difference("out", other_nan.view(torch.bfloat16), expected) is None
    assert "out[1]: got 2.0" in selftest.bit_difference("out", torch.tensor([1.0, 2.0], dtype=torch.bfloat16),
                                                         expected)
    assert "got torch.int32 [2], expected torch.float32 [2]" in selftest.bit_difference(
        "scale", torch.zeros(2, dtype=torch.int32), torch.zeros(2))


def test_fp8_difference_allows_the_fp32_sum_error_and_no_more() -> None:
    generator = torch.Generator().manual_seed(3)
    shape = selftest.GemmShape(5, 24, 208)
    a, b = selftest.fp8_operands(shape, generator)
    a_scale, b_scale = torch.full((1,), 0.01), torch.rand(24, generator=generator) / 100
    expected = reference.fp8_scaled_mm(a, b, a_scale, b_scale, torch.float16)
    one_ulp_up = (expected.view(torch.int16) + 1).view(torch.float16)  # within: both sides rounded
    assert selftest.fp8_difference(one_ulp_up, expected, a, b, a_scale, b_scale, None) is None
    wrong = expected.clone()
    wrong[3, 7] = expected[3, 7] * 1.01 + 0.01
    message = selftest.fp8_difference(wrong, expected, a, b, a_scale, b_scale, None)
    assert message.startswith("out[3, 7]: got ") and "allowed difference" in message
    assert "(1 of 120 elements differ)" in message


# --- the plan --------------------------------------------------------------------------------

def test_every_epilogue_variant_runs_on_the_edge_shape() -> None:
    assert len(selftest.ALL_VARIANTS) == 48 and len(selftest.FP8_VARIANTS) == 16
    modes = {(v.per_token_a, v.zero_point) for v in selftest.FUSED_VARIANTS}
    assert modes == {(True, "none"), (True, "dynamic"), (False, "none"), (False, "static")}
    cases = selftest.kernel_cases(EMULATED, "w8a8_i8_gemm_m64n64k64_w2x2x1", quick=False)
    edge = [c.case for c in cases if c.case.startswith(selftest.EDGE_GEMM_SHAPE.label() + ",")]
    assert len(edge) == 48 == len(set(edge))
    labels = {c.case.split(",")[0] for c in cases}
    assert labels == {"M=1 N=72 K=208", "M=16 N=136 K=208 lda=240", "M=17 N=136 K=208 lda=240 ldb=224",
                      "M=4096 N=136 K=208 ldb=240"}
    fused = selftest.kernel_cases(EMULATED, "w8a8_i8q_bf16_gemm_m16n16k512_w1x1x4", quick=False)
    assert {c.check for c in fused} == {"fused decode GEMM"} and len(fused) == 32 + 2


def test_the_hardware_run_adds_the_large_shapes() -> None:
    def labels(placement: selftest.Placement, kernel: str, quick: bool = False) -> set[str]:
        return {c.case.split(",")[0] for c in selftest.kernel_cases(placement, kernel, quick)}

    gemm = "w8a8_f8_gemm_m128n128k64_w2x2x1"
    hardware_only = {shape.label() for shape in selftest.HARDWARE_GEMM_SHAPES}
    assert not hardware_only & labels(EMULATED, gemm)
    assert hardware_only <= labels(ROCM, gemm)
    assert labels(ROCM, gemm, quick=True) == labels(EMULATED, gemm, quick=True) == {
        shape.label() for shape in selftest.QUICK_GEMM_SHAPES}
    assert "M=4096 K=14336 ldx=14400, dynamic symmetric" in {
        c.case for c in selftest.kernel_cases(ROCM, "w8a8_quant_i8_f16", quick=False)}


@pytest.mark.parametrize(("kernel", "why"), [
    ("w8a8_i4_gemm_m64n64k64_w2x2x1", "selftest has no cases for this kind of kernel"),
    ("w8a8_i8_gemm_m8n8k8_w1x1x1", "its tile config 'm8n8k8_w1x1x1' is not a row of gemm_configs.def"),
])
def test_a_kernel_it_cannot_test_is_a_failure(kernel: str, why: str) -> None:
    [case] = selftest.kernel_cases(EMULATED, kernel, quick=False)
    result = selftest.run_case(EMULATED, case)
    assert (result.status, result.kernel) == ("fail", kernel) and why in result.detail


def test_a_case_that_does_not_reach_its_kernel_fails() -> None:
    case = selftest.PlannedCase("int8 GEMM", "w8a8_i8_gemm_m64n64k64_w2x2x1", "M=1", lambda: None)
    result = selftest.run_case(EMULATED, case)
    assert result.status == "fail"
    assert result.detail == "the case did not launch w8a8_i8_gemm_m64n64k64_w2x2x1 (launched: nothing)"


def test_the_graph_is_a_skipped_row_on_the_stand_in_runtime() -> None:
    results = [selftest.run_case(EMULATED, case) for case in selftest.graph_cases(EMULATED)]
    assert [r.status for r in results] == ["skip"] * 3
    assert {r.detail for r in results} == {"not available on the stand-in runtime (HIP graphs need ROCm)"}


def test_progress_outside_a_terminal_is_a_line_per_tenth() -> None:
    stream = io.StringIO()
    progress = selftest.Progress(20, stream)
    for _ in range(20):
        progress.advance("case")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1] == f"selftest [{'#' * 30}] 20/20"


# --- refusals --------------------------------------------------------------------------------

def test_without_a_gfx11_device_it_says_how_to_emulate(no_emulation, capsys: pytest.CaptureFixture) -> None:
    assert cli(["selftest"]) == selftest.EXIT_NO_GFX11
    assert "VLLM_RDNA_W8A8_EMULATE=gfx1100 runs selftest on the CPU emulator" in capsys.readouterr().err


@pytest.mark.parametrize(("setting", "arguments", "message"), [
    ("gfx1100", ["--device", "3"], "--device 3: this machine has 1 device(s) (0..0)"),
    ("gfx1100,gfx1030", ["--device", "1"], "no gfx11 device among 1: gfx1030"),
])
def test_a_device_it_cannot_test_is_refused(no_emulation, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture, setting: str, arguments: list[str],
                                            message: str) -> None:
    monkeypatch.setenv(EMULATE_ENV, setting)
    assert cli(["selftest", *arguments]) == selftest.EXIT_NO_GFX11
    assert message in capsys.readouterr().err


def test_reference_ops_are_refused(no_emulation, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(EMULATE_ENV, "gfx1100")
    monkeypatch.setenv(OPS_ENV, "reference")
    assert cli(["selftest"]) == selftest.EXIT_USAGE
    assert "would compare the reference with itself" in capsys.readouterr().err


# --- the report as the tuner's input -----------------------------------------------------------

def _report(tmp_path: Path, emulated: bool, verdict_fail: bool = False) -> Path:
    """A report written by selftest's own writer for one device with these timings."""
    report = selftest.DeviceReport(0, "gfx1100", "AMD Radeon RX 7900 XTX", emulated)
    report.results.append(selftest.CaseResult("int8 GEMM", "k", "M=1", "fail" if verdict_fail else "pass"))
    for tag, ours in (("m64n64k64_w2x2x1", 30.0), ("m16n16k512_w1x1x4", 12.5), ("m16n32k256_w1x1x4", None)):
        report.timings.append(selftest.Timing("i8", "o_proj", 1, 4096, 4096, tag, ours,
                                              {"triton_scaled_mm": 40.0}))
    report.timings.append(selftest.Timing("f8", "o_proj", 4096, 4096, 4096, "m128n128k64_w2x2x1", 900.0, {}))
    path = tmp_path / "report.json"
    path.write_text(json.dumps(selftest.report_data([report], argparse.Namespace(device=None, quick=False))))
    return path


def test_tune_writes_the_fastest_measured_config_from_a_report(no_emulation, tmp_path: Path) -> None:
    report = _report(tmp_path, emulated=False)
    assert tune(["--from-selftest", str(report), "--output-dir", str(tmp_path / "tables")]) == 0
    table = json.loads((tmp_path / "tables" / "gfx1100.json").read_text())["configs"]
    date = json.loads(report.read_text())["created"][:10]
    assert table["i8"]["N=4096,K=4096"] == {"1": {
        "tag": "m16n16k512_w1x1x4", "source": "measured", "device_name": "AMD Radeon RX 7900 XTX",
        "date": date, "measured_us": 12.5}}
    assert table["f8"]["N=4096,K=4096"]["4096"]["tag"] == "m128n128k64_w2x2x1"


@pytest.mark.parametrize(("emulated", "verdict_fail", "message"), [
    (True, False, "device 0 (gfx1100) is emulated: its report has no measurements"),
    (False, True, "device 0 (gfx1100) failed selftest: fix the mismatches before tuning on it"),
])
def test_tune_refuses_a_report_without_usable_measurements(
        no_emulation, tmp_path: Path, capsys: pytest.CaptureFixture, emulated: bool, verdict_fail: bool,
        message: str) -> None:
    report = _report(tmp_path, emulated, verdict_fail)
    assert tune(["--from-selftest", str(report), "--output-dir", str(tmp_path / "tables")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tables").exists()


def test_tune_refuses_a_file_that_is_not_a_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"format_version": 1}')
    assert tune(["--from-selftest", str(path), "--output-dir", str(tmp_path)]) == 2
    assert "is not a selftest report" in capsys.readouterr().err


# --- on the emulator -------------------------------------------------------------------------

def _run_selftest(env_changes: dict[str, str], arguments: list[str], prologue: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, **env_changes}
    for name in (OPS_ENV, *(() if hip.EMULATOR_LIBRARY_ENV in env_changes else (hip.EMULATOR_LIBRARY_ENV,))):
        env.pop(name, None)
    code = f"{prologue}\nimport sys\nfrom vllm_rdna_w8a8.__main__ import main\nsys.exit(main({arguments!r}))\n"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_selftest_passes_on_emulated_gfx1100_and_gfx1151_and_writes_its_report(tmp_path: Path) -> None:
    report_path = tmp_path / "selftest.json"
    result = _run_selftest({EMULATE_ENV: "gfx1100,gfx1151"}, ["selftest", "--report", str(report_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "selftest: PASS on 2 device(s)" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["format"] == selftest.REPORT_FORMAT and report["verdict"] == "PASS"
    assert set(report["versions"]) >= {"vllm-rdna-w8a8", "vLLM", "torch", "HIP (torch build)"}
    assert [(d["index"], d["target"], d["emulated"]) for d in report["devices"]] == [
        (0, "gfx1100", True), (1, "gfx1151", True)]
    for entry in report["devices"]:
        shipped = sorted(name for path in (OBJECTS_DIR / entry["target"]).glob("*.hsaco")
                         for name in read_code_object(path).kernels)
        tested = {r["kernel"] for r in entry["results"] if r["status"] == "pass"}
        assert tested == set(shipped), "every shipped kernel passed cases"
        skipped = {r["check"]: r["detail"] for r in entry["results"] if r["status"] == "skip"}
        assert skipped == {"HIP graph": selftest.EMULATED_GRAPH_SKIP, "timing": selftest.EMULATED_TIMING_SKIP}
        assert not any(r["check"] == "HIP graph" and r["status"] == "pass" for r in entry["results"])
        assert entry["timings"] == [] and entry["verdict"] == "PASS"


def _wrong_epilogue_objects(tmp_path: Path, target: str) -> tuple[Path, Path]:
    """(objects dir, emulator library): the shipped code objects for `target` with the int8
    GEMMs replaced by tests/tools/selftest_kernels/wrong_epilogue_gemm.hip, compiled for the
    target by the project's build module and for the emulator by its build."""
    from vllm_rdna_w8a8.build import build, find_clang, get_target

    sources = tmp_path / "sources"
    shutil.copytree(KERNELS_DIR / "common", sources / "common")
    for name in KERNEL_DATA_NAMES:
        shutil.copy(KERNELS_DIR / name, sources)
    broken_source = Path(shutil.copy(HERE / "selftest_kernels" / "wrong_epilogue_gemm.hip", sources))
    [broken] = build(find_clang(), [get_target(target)], sources, tmp_path / "built", tmp_path / "work",
                     log=lambda _line: None).objects
    replaced = set(read_code_object(broken).kernels)
    objects = tmp_path / "objects" / target
    objects.mkdir(parents=True)
    shutil.copy(broken, objects)
    kept_sources = [broken_source]
    for shipped in sorted((OBJECTS_DIR / target).glob("*.hsaco")):
        if not replaced & set(read_code_object(shipped).kernels):
            shutil.copy(shipped, objects)
            kept_sources.append(KERNELS_DIR / f"{shipped.stem}.hip")
    return objects.parent, build_emulator(kept_sources)


@pytest.mark.slow
def test_a_wrong_epilogue_fails_naming_the_shape_and_the_first_differing_element(tmp_path: Path) -> None:
    objects, library = _wrong_epilogue_objects(tmp_path, "gfx1100")
    report_path = tmp_path / "selftest.json"
    prologue = ("from pathlib import Path\nfrom vllm_rdna_w8a8.runtime import launcher\n"
                f"launcher._default = launcher.Launcher(Path({str(objects)!r}))")
    result = _run_selftest({EMULATE_ENV: "gfx1100", hip.EMULATOR_LIBRARY_ENV: str(library)},
                           ["selftest", "--quick", "--report", str(report_path)], prologue)
    assert result.returncode == selftest.EXIT_MISMATCH, result.stdout + result.stderr
    assert ("FAIL w8a8_i8_gemm_m64n64k64_w2x2x1 M=17 N=136 K=208 lda=240 ldb=224, a per-token, b per-channel, "
            "bias, azp dynamic, bf16 out: out[0, 1]: got ") in result.stdout
    assert "selftest: FAIL on 1 device(s)" in result.stdout
    results = json.loads(report_path.read_text())["devices"][0]["results"]
    broken = [r for r in results if r["kernel"] == "w8a8_i8_gemm_m64n64k64_w2x2x1"]
    # only the per-channel weight scales differ: the per-tensor cases of the same kernel pass
    assert {r["status"] for r in broken if "b per-tensor" in r["case"]} == {"pass"}
    assert {r["status"] for r in broken if "b per-channel" in r["case"]} == {"fail"}
    assert all(r["status"] == "pass" for r in results if r["check"] in ("fp8 GEMM", "quantization"))
