"""vllm_rdna_w8a8/emulation.py: the emulator library build (arguments, caching, errors, the
default build of every production kernel) and the sanitizer environment. The libraries hold
the emulator's test kernels (the emulator_library / sanitized_library fixtures of
tests/conftest.py, shared with tests/emulator)."""

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
