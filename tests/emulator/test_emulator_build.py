"""The emulator's two builds of a kernel agree and its header refuses what it cannot emulate:
the test kernels are real gfx1100 code, their names resolve in the emulator library, and
emulator/include/rdna_emulator.h rejects __shared__, non-plain LDS objects and builds without
RDNA_W8A8_EMULATOR."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from emu_driver import GFX1100, emulator_test_sources
from vllm_rdna_w8a8 import emulation
from vllm_rdna_w8a8.build import find_clang
from vllm_rdna_w8a8.runtime.code_object import read_code_object


# Instructions each test object must contain when compiled for a real gfx1100.
EXPECTED_ISA = {
    "wmma_ops": {"v_wmma_i32_16x16x16_iu8": 5, "v_wmma_f32_16x16x16_f16": 1,
                 "v_wmma_f32_16x16x16_bf16": 1},
    "gemm_i8": {"v_wmma_i32_16x16x16_iu8": 4, "s_barrier": 2},
    "wave_ops": {"ds_bpermute_b32": 5, "s_barrier": 3},
}


@pytest.mark.parametrize("stem", sorted(EXPECTED_ISA))
def test_test_kernels_are_real_gfx1100_code(test_objects: Path, stem: str) -> None:
    path = test_objects / GFX1100 / f"{stem}.hsaco"
    assert read_code_object(path).target == GFX1100
    objdump = find_clang().llvm_tool("llvm-objdump")
    disassembly = subprocess.run([str(objdump), "-d", f"--mcpu={GFX1100}", str(path)],
                                 capture_output=True, text=True, timeout=120, check=True).stdout
    mnemonics = [line.split()[0] for line in disassembly.splitlines()
                 if line.startswith("\t") and line.split()]
    for mnemonic, at_least in EXPECTED_ISA[stem].items():
        assert mnemonics.count(mnemonic) >= at_least, (stem, mnemonic, mnemonics.count(mnemonic))


def test_every_test_kernel_is_in_the_library_and_its_object(runtime, test_objects: Path) -> None:
    """Names agree between the device build and the host build (RDNA_EXPORT_KERNEL)."""
    for source in emulator_test_sources():
        path = test_objects / GFX1100 / f"{source.stem}.hsaco"
        module = runtime.load_object(path)
        for name in read_code_object(path).kernels:
            assert runtime.get_function(module, name).value, name


def host_syntax_check(tmp_path: Path, body: str, *defines: str) -> subprocess.CompletedProcess:
    source = tmp_path / "check.hip"
    source.write_text(f'#include "rdna_emulator.h"\n{body}\n')
    return subprocess.run(
        [str(find_clang().path), "-fsyntax-only", "-std=c++20", *defines,
         f"-I{emulation.EMULATOR_DIR / 'include'}", "-x", "c++", str(source)],
        capture_output=True, text=True, timeout=120, check=False)


def test_shared_variables_point_to_workgroup_lds(tmp_path: Path) -> None:
    result = host_syntax_check(tmp_path, "__device__ void f() { __shared__ int x[4]; x[0] = 1; }",
                               "-DRDNA_W8A8_EMULATOR")
    assert result.returncode != 0
    assert "use workgroup_lds<T>() instead of __shared__" in result.stderr


def test_header_is_only_for_the_emulator_build(tmp_path: Path) -> None:
    result = host_syntax_check(tmp_path, "")
    assert result.returncode != 0
    assert "compile with -DRDNA_W8A8_EMULATOR" in result.stderr


def test_lds_objects_must_be_plain_data(tmp_path: Path) -> None:
    body = ("struct Counter { int n = 0; };\n"
            "__device__ void f() { workgroup_lds<Counter>().n = 1; }")
    result = host_syntax_check(tmp_path, body, "-DRDNA_W8A8_EMULATOR")
    assert result.returncode != 0
    assert "LDS holds plain data" in result.stderr
    big = "struct Big { char bytes[65537]; };\n__device__ void f() { workgroup_lds<Big>(); }"
    result = host_syntax_check(tmp_path, big, "-DRDNA_W8A8_EMULATOR")
    assert "at most 64 KiB of LDS per workgroup" in result.stderr
