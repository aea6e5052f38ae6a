"""Host cost of one int8 linear layer through our ops, kernel execution excluded, and of an fp8
layer's GEMM op: `python -m vllm_rdna_w8a8.bench.host_overhead` (its docstring says what is timed
and what is not) at M = 1 (int8: one fused launch) and M = 64 (int8: quantization, then the GEMM;
fp8: one launch at both), N = K = 4096, on the
emulated gfx1100 backend with the launch entry point stubbed. The figures are medians of single
calls on a shared CPU, not GPU-machine numbers; docs/performance.md has the measured ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from vllm_rdna_w8a8.build import CompilerNotFound, find_clang

# The layer runs at ~12-25 us per call on the 2-core box (docs/performance.md); a vLLM Triton
# launch alone costs tens of microseconds of host time. A median past this bound, ~10x the
# loaded-box figure, means a regression, not load.
MAX_HOST_US_PER_LAYER = 200.0


def _bench_rows(scheme: str) -> tuple[list[tuple[str, ...]], str]:
    """The bench's rows (M, launches, apply_weights median, min, quiet, CPU | op median, backend
    median) for `scheme`, and its whole output."""
    try:
        find_clang()
    except CompilerNotFound as exc:
        pytest.skip(f"no clang to build the no-op launch: {exc}")
    env = {**os.environ, "VLLM_RDNA_W8A8_EMULATE": "gfx1100"}
    env.pop("VLLM_RDNA_W8A8_OPS", None)
    result = subprocess.run([sys.executable, "-m", "vllm_rdna_w8a8.bench.host_overhead", "--scheme", scheme,
                             "--m", "1", "64", "--rounds", "5", "--calls", "300"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^(\d+) (\d) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+) \| ([\d.]+) ([\d.]+)$", result.stdout,
                      re.MULTILINE)
    return rows, result.stdout


@pytest.mark.slow  # ~20 s: the subprocess imports torch and vLLM and finds the emulator library
def test_int8_layer_host_time_stays_in_launch_range(capsys: pytest.CaptureFixture) -> None:
    rows, output = _bench_rows("int8")
    assert [(m, launches) for m, launches, *_ in rows] == [("1", "1"), ("64", "2")], output
    with capsys.disabled():
        print("\n" + output)
    for m, _launches, median_us, *_ in rows:
        assert float(median_us) < MAX_HOST_US_PER_LAYER, (m, output)


@pytest.mark.slow  # ~20 s, as above
def test_fp8_gemm_op_host_time_stays_in_launch_range(capsys: pytest.CaptureFixture) -> None:
    """The fp8 layer's own op (the dispatcher and our GEMM plan): its apply_weights is mostly
    vLLM's activation quantization, torch ops on this CPU (docs/performance.md)."""
    rows, output = _bench_rows("fp8")
    assert [(m, launches) for m, launches, *_ in rows] == [("1", "1"), ("64", "1")], output
    with capsys.disabled():
        print("\n" + output)
    for m, *_, op_median_us, _backend_median_us in rows:
        assert float(op_median_us) < MAX_HOST_US_PER_LAYER, (m, output)
