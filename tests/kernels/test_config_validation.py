"""A tile table row that breaks a hardware or kernel limit fails to compile with a message
naming the limit (the static_asserts of GemmConfig in kernels/common/gemm.h), every shipped
row compiles, and the Python validator (dispatch/tile_configs.py) accepts exactly the rows
the kernels compile."""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from kernel_harness import KERNELS_DIR, tile_configs
from vllm_rdna_w8a8.build import find_clang
from vllm_rdna_w8a8.dispatch.tile_configs import (
    LDS_DOUBLE_BUFFER as LDS,
    MAIN_LOOPS,
    STREAM_WEIGHTS as STREAM,
    TileConfig,
    TileConfigError,
    validate_tile_config,
)

# (BLOCK_M, BLOCK_N, BLOCK_K, WAVES_M, WAVES_N, WAVES_K, MAIN_LOOP) -> the words the error must contain
BAD_ROWS = {
    (128, 128, 128, 2, 2, 1, LDS): "exceeds the 64 KiB",
    (16, 16, 64, 1, 1, 8, STREAM): "BLOCK_K must be a multiple of 16 * WAVES_K",
    (48, 64, 64, 2, 2, 1, LDS): "BLOCK_M must be a multiple of 16 * WAVES_M",
    (64, 40, 64, 2, 2, 1, LDS): "BLOCK_N must be a multiple of 16 * WAVES_N",
    (128, 128, 64, 1, 1, 1, LDS): "more than 128 accumulator VGPRs",
    (64, 64, 64, 2, 2, 2, LDS): "split-K across waves (WAVES_K > 1) is implemented for the stream_weights main loop only",
    (32, 32, 64, 2, 1, 1, STREAM): "the stream_weights main loop computes one 16-row WMMA tile per workgroup",
    (32, 32, 64, 1, 1, 33, LDS): "at most 32 (1024 threads of wave32)",
}


def compile_row(tmp_path: Path, row: tuple[int | str, ...]) -> subprocess.CompletedProcess[str]:
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
        result = compile_row(tmp_path, table_row(config))
        assert result.returncode == 0, f"{config.tag}: {result.stderr[-2000:]}"


def table_row(config: TileConfig) -> tuple[int | str, ...]:
    return (config.block_m, config.block_n, config.block_k,
            config.waves_m, config.waves_n, config.waves_k, config.main_loop)


# Rows either side of each rule: the shipped rows, a prefill row whose loader passes do not
# divide BLOCK_N (issue 12), a decode row whose GEMM LDS fits but whose fused kernel's does
# not, each main loop on rows the other one needs (16-row prefill, 32-row streamed, split-K
# prefill), an unknown main loop, BLOCK_M values no longer tied to a list, and a seeded
# sample of a wider grid.
EDGE_ROWS = [(48, 16, 64, 3, 1, 1, LDS), (64, 128, 32, 2, 4, 1, LDS), (48, 32, 256, 1, 1, 1, LDS),
             (16, 128, 512, 1, 2, 8, STREAM), (16, 64, 512, 1, 1, 8, STREAM), (32, 32, 64, 2, 2, 1, LDS),
             (16, 64, 64, 1, 2, 1, LDS), (32, 32, 64, 2, 1, 1, STREAM), (16, 32, 256, 1, 1, 4, LDS),
             (64, 64, 64, 2, 2, 1, "lds_double_bufer"), (96, 96, 64, 2, 2, 1, LDS), (48, 48, 64, 1, 1, 1, LDS)]
GRID = list(itertools.product((16, 32, 48, 64, 128), (16, 32, 48, 64, 128), (32, 64, 256, 512),
                              (1, 2, 3), (1, 2, 4), (1, 4, 8), MAIN_LOOPS))


def compile_table(kernels_dir: Path, row: tuple[int | str, ...]) -> subprocess.CompletedProcess[str]:
    """Device-side syntax check of the int8 and fp8 GEMM sources with `row` as the whole table."""
    (kernels_dir / "gemm_configs.def").write_text(f"W8A8_GEMM_CONFIG(probe, {', '.join(map(str, row))})\n")
    command = [str(find_clang().path), "-x", "hip", "--offload-arch=gfx1100", "--cuda-device-only",
               "-nogpulib", "-std=c++20", "-fsyntax-only", f"-I{kernels_dir}",
               str(kernels_dir / "int8_gemm.hip"), str(kernels_dir / "fp8_gemm.hip")]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def python_accepts(row: tuple[int | str, ...]) -> bool:
    try:
        validate_tile_config(TileConfig("probe", *row))
    except TileConfigError:
        return False
    return True


@pytest.mark.slow  # one compile per row (about a second each)
def test_python_validator_and_kernels_agree_on_a_grid_of_rows(tmp_path: Path) -> None:
    shipped = [table_row(config) for config in tile_configs()]
    rows = shipped + EDGE_ROWS + random.Random(12).sample(GRID, 30)
    kernels_dir = tmp_path / "kernels"
    shutil.copytree(KERNELS_DIR, kernels_dir)
    disagreements = []
    for row in rows:
        result = compile_table(kernels_dir, row)
        if (result.returncode == 0) != python_accepts(row):
            errors = [line for line in result.stderr.splitlines() if "error:" in line]
            disagreements.append(f"{row}: kernels {'compile' if result.returncode == 0 else 'refuse'} it, "
                                 f"Python {'accepts' if python_accepts(row) else 'refuses'} it {errors[:1]}")
    assert not disagreements, "\n".join(disagreements)
    assert sum(python_accepts(row) for row in rows) > len(shipped)  # the grid holds valid rows too
