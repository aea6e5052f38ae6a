"""A tile table row that breaks a hardware or kernel limit fails to compile with a message
naming the limit (the static_asserts of GemmConfig in kernels/common/gemm.h), and every
shipped row compiles."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kernel_harness import KERNELS_DIR, tile_configs
from vllm_rdna_w8a8.build import find_clang

# (BLOCK_M, BLOCK_N, BLOCK_K, WAVES_M, WAVES_N, WAVES_K) -> the words the error must contain
BAD_ROWS = {
    (128, 128, 128, 2, 2, 1): "exceeds the 64 KiB",
    (16, 16, 64, 1, 1, 8): "BLOCK_K must be a multiple of 16 * WAVES_K",
    (48, 64, 64, 2, 2, 1): "BLOCK_M must be a multiple of 16 * WAVES_M",
    (64, 40, 64, 2, 2, 1): "BLOCK_N must be a multiple of 16 * WAVES_N",
    (128, 128, 64, 1, 1, 1): "more than 128 accumulator VGPRs",
    (64, 64, 64, 2, 2, 2): "split-K across waves (WAVES_K > 1) is implemented for decode tiles",
    (32, 32, 64, 1, 1, 33): "at most 32 (1024 threads of wave32)",
}


def compile_row(tmp_path: Path, row: tuple[int, ...]) -> subprocess.CompletedProcess[str]:
    """Device-side syntax check (templates instantiated, nothing linked) of one entry point."""
    source = tmp_path / "row.hip"
    source.write_text('#include "common/gemm.h"\n'
                      f"W8A8_DEFINE_GEMM_KERNEL(probe_row, ::rdna_w8a8::Int8Math, "
                      f"{', '.join(map(str, row))})\n")
    command = [str(find_clang().path), "-x", "hip", "--offload-arch=gfx1100", "--cuda-device-only",
               "-nogpulib", "-std=c++20", "-fsyntax-only", f"-I{KERNELS_DIR}", str(source)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("row", list(BAD_ROWS), ids=["x".join(map(str, r)) for r in BAD_ROWS])
def test_bad_row_is_refused_with_its_limit(tmp_path, row) -> None:
    result = compile_row(tmp_path, row)
    assert result.returncode != 0, f"row {row} compiled but breaks a limit"
    assert BAD_ROWS[row] in result.stderr, result.stderr[-2000:]


def test_shipped_rows_compile(tmp_path) -> None:
    for config in tile_configs():
        row = (config.block_m, config.block_n, config.block_k,
               config.waves_m, config.waves_n, config.waves_k)
        result = compile_row(tmp_path, row)
        assert result.returncode == 0, f"{config.tag}: {result.stderr[-2000:]}"
