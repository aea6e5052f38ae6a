"""vllm_rdna_w8a8/emulation.py: the cached library build, the sanitizer environment; and the test kernels being real gfx1100 code too."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emu_driver import GFX1100, StandInRuntime, emulator_test_sources
from vllm_rdna_w8a8 import emulation
from vllm_rdna_w8a8.build import build, find_clang, get_target
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.emulation import (
    BUILD_DIR,
    KERNELS_DIR,
    EmulatorBuildError,
    build_emulator,
    sanitizer_env,
)
from vllm_rdna_w8a8.runtime.code_object import read_code_object


def test_bad_arguments_are_refused_before_building(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="sequence of paths"):
        build_emulator("kernels/int8_gemm.hip")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is not a path"):
        build_emulator([42])  # type: ignore[list-item]
    with pytest.raises(EmulatorBuildError, match="does not exist"):
        build_emulator([tmp_path / "missing.hip"])
    with pytest.raises(TypeError, match="sanitize must be a bool"):
        build_emulator([], sanitize="yes")  # type: ignore[arg-type]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    twins = [tmp_path / "one" / "k.hip", tmp_path / "two" / "k.hip"]
    for twin in twins:
        twin.write_text("")
    with pytest.raises(EmulatorBuildError, match="distinct names"):
        build_emulator(twins)


def test_missing_checkout_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(emulation, "KERNELS_DIR", tmp_path / "kernels")
    with pytest.raises(EmulatorBuildError, match="builds from the vllm-rdna-w8a8 repository "
                                                 "checkout"):
        build_emulator()


def test_built_library_is_reused(emulator_library: Path) -> None:
    stamp = emulator_library.stat().st_mtime_ns
    assert build_emulator(emulator_test_sources()) == emulator_library
    assert emulator_library.stat().st_mtime_ns == stamp


def test_plain_and_sanitized_builds_are_distinct(emulator_library: Path,
                                                 sanitized_library: Path) -> None:
    assert emulator_library != sanitized_library
    assert "-asan-" in sanitized_library.name and "-asan-" not in emulator_library.name


def test_input_hash_follows_local_headers_flags_and_sources(tmp_path: Path) -> None:
    clang = find_clang()
    source = tmp_path / "probe.hip"
    header = tmp_path / "probe.h"
    source.write_text('#include "probe.h"\n')
    header.write_text("// one\n")
    first = emulation._inputs_hash(clang, ["-O2"], [source])
    assert emulation._inputs_hash(clang, ["-O2"], [source]) == first
    assert emulation._inputs_hash(clang, ["-O1"], [source]) != first
    header.write_text("// two\n")
    assert emulation._inputs_hash(clang, ["-O2"], [source]) != first


def test_a_failing_source_names_the_compiler_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.hip"
    broken.write_text("this is not C++;\n")
    with pytest.raises(EmulatorBuildError, match=r"broken\.hip.*\n(.|\n)*error"):
        build_emulator([broken])


def test_sanitizer_env_preloads_the_asan_runtime() -> None:
    env = sanitizer_env({"PATH": "/usr/bin", "LD_PRELOAD": "/lib/other.so"})
    runtime, other = env["LD_PRELOAD"].split(" ")
    assert Path(runtime).is_file() and "libclang_rt.asan" in runtime
    assert other == "/lib/other.so"
    assert env["PATH"] == "/usr/bin"
    assert "detect_leaks=0" in env["ASAN_OPTIONS"]
    assert "halt_on_error=1" in env["UBSAN_OPTIONS"]
    assert sanitizer_env()["HOME"] == os.environ["HOME"]  # default base: this environment


def test_sanitized_library_loads_under_sanitizer_env(sanitized_library: Path) -> None:
    code = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); "
            "print(lib.hipGetLastError())")
    result = subprocess.run([sys.executable, "-c", code, str(sanitized_library)],
                            env=sanitizer_env(), capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


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


@pytest.mark.slow  # compiles the production kernels for gfx1100 and for the host
def test_every_production_kernel_is_emulated() -> None:
    """Default build (kernels/*.hip): every kernel of the gfx1100 code objects resolves and
    unpacks its arguments where the metadata puts them."""
    objects_dir = BUILD_DIR / "kernel-objects"
    result = build(find_clang(), [get_target(GFX1100)], kernels_dir=KERNELS_DIR,
                   objects_dir=objects_dir, work_dir=BUILD_DIR, log=lambda line: None)
    assert result.objects, "no production kernels compiled"
    runtime = StandInRuntime(build_emulator())
    for path in result.objects:
        module = runtime.load_object(path)
        names = read_code_object(path).kernels
        assert names, path
        for name, metadata in names.items():
            assert runtime.get_function(module, name).value, (path.name, name)
            assert runtime.kernel_args(name) == [
                (arg.offset, arg.size) for arg in metadata.explicit_args], (path.name, name)


@pytest.mark.slow  # two full emulator builds at once
def test_concurrent_builds_of_one_library_agree(tmp_path: Path) -> None:
    source = tmp_path / "lonely.hip"
    source.write_text(
        '#include "rdna_emulator.h"\n'
        f'extern "C" __global__ void lonely_{os.getpid()}(int* out) {{ out[threadIdx.x] = 1; }}\n'
        f"RDNA_EXPORT_KERNEL(lonely_{os.getpid()})\n"
    )
    code = ("import sys; from pathlib import Path; "
            "from vllm_rdna_w8a8.emulation import build_emulator; "
            "print(build_emulator([Path(sys.argv[1])]))")
    builders = [subprocess.Popen([sys.executable, "-c", code, str(source)],
                                 cwd=emulation.REPO_ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [builder.communicate(timeout=900) for builder in builders]
    assert all(builder.returncode == 0 for builder in builders), outputs
    paths = {stdout.strip() for stdout, _ in outputs}
    assert len(paths) == 1
    assert hasattr(ctypes.CDLL(paths.pop()), f"lonely_{os.getpid()}")


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
