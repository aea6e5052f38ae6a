from __future__ import annotations

from pathlib import Path

import pytest

from vllm_rdna_w8a8.build import KernelCompileError, build, get_target
from vllm_rdna_w8a8.build.compile import KERNEL_DATA_NAMES
from vllm_rdna_w8a8.build.compiler import Clang
from vllm_rdna_w8a8.build.__main__ import main

ELF_MAGIC = b"\x7fELF"
EM_AMDGPU = 224


def _targets(*names: str) -> list:
    return [get_target(name) for name in names]


def _build(clang: Clang, kernels_dir: Path, tmp_path: Path, *names: str):
    return build(clang, _targets(*names), kernels_dir, tmp_path / "objects",
                 tmp_path / "work", log=lambda _: None)


@pytest.mark.slow  # three compiles: over 10 s on a busy 2-core machine
def test_compiles_each_source_for_each_target(clang: Clang, kernels_dir: Path, tmp_path: Path) -> None:
    result = _build(clang, kernels_dir, tmp_path, "gfx1100", "gfx1151")
    objects = tmp_path / "objects"
    assert result.objects == [objects / "gfx1100" / "probe_saxpy.hsaco",
                              objects / "gfx1151" / "probe_saxpy.hsaco"]
    for path in result.objects:
        data = path.read_bytes()
        assert data[:4] == ELF_MAGIC
        assert int.from_bytes(data[18:20], "little") == EM_AMDGPU
    for name in KERNEL_DATA_NAMES:
        assert (objects / name).read_bytes() == (kernels_dir / name).read_bytes(), name

    # Unchanged inputs: nothing recompiles.
    again = _build(clang, kernels_dir, tmp_path, "gfx1100", "gfx1151")
    assert again.compiled == [] and len(again.up_to_date) == 2

    # A header change rebuilds; a narrower selection removes the other target's objects.
    header = kernels_dir / "common" / "probe_math.h"
    header.write_text(header.read_text().replace("value * 3", "value * 5"))
    narrowed = _build(clang, kernels_dir, tmp_path, "gfx1100")
    assert narrowed.compiled == [objects / "gfx1100" / "probe_saxpy.hsaco"]
    assert narrowed.removed == [objects / "gfx1151" / "probe_saxpy.hsaco"]
    assert not (objects / "gfx1151").exists()


def test_failing_source_names_source_target_and_message(clang: Clang, kernels_dir: Path,
                                                        tmp_path: Path) -> None:
    (kernels_dir / "broken.hip").write_text(
        "#include <hip/hip_runtime.h>\n"
        'extern "C" __global__ void broken(int* p) { p[0] = undeclared_name; }\n'
    )
    with pytest.raises(KernelCompileError) as caught:
        _build(clang, kernels_dir, tmp_path, "gfx1102")
    message = str(caught.value)
    assert "broken.hip for gfx1102 failed to compile" in message
    assert "undeclared_name" in message
    assert [f.source.name for f in caught.value.failures] == ["broken.hip"]
    # The good source still compiled; no half-written object of the broken one is left.
    assert (tmp_path / "objects" / "gfx1102" / "probe_saxpy.hsaco").is_file()
    assert list((tmp_path / "objects" / "gfx1102").glob("broken*")) == []


def test_removed_source_removes_its_objects(clang: Clang, kernels_dir: Path, tmp_path: Path) -> None:
    # A dotted stem must not be mistaken for probe_saxpy's or anyone else's files.
    (kernels_dir / "second.v2.hip").write_text(
        "#include <hip/hip_runtime.h>\nextern \"C\" __global__ void second(int* p) { p[0] = 1; }\n"
    )
    _build(clang, kernels_dir, tmp_path, "gfx1103")
    assert (tmp_path / "objects" / "gfx1103" / "second.v2.hsaco").is_file()
    (kernels_dir / "second.v2.hip").unlink()
    result = _build(clang, kernels_dir, tmp_path, "gfx1103")
    assert result.removed == [tmp_path / "objects" / "gfx1103" / "second.v2.hsaco"]
    assert sorted(p.name for p in (tmp_path / "objects" / "gfx1103").iterdir()) == [
        "probe_saxpy.hsaco", "probe_saxpy.hsaco.inputs-sha256"]


def test_werror_turns_warnings_into_failures(clang: Clang, kernels_dir: Path, tmp_path: Path) -> None:
    (kernels_dir / "probe_saxpy.hip").write_text(
        "#include <hip/hip_runtime.h>\n"
        'extern "C" __global__ void warn(int* p) { int unused_local = 3; p[0] = 1; }\n'
    )
    logged: list[str] = []
    build(clang, _targets("gfx1150"), kernels_dir, tmp_path / "o1", tmp_path / "w", log=logged.append)
    assert any("warnings from probe_saxpy.hip for gfx1150" in line and "unused_local" in line
               for line in logged)
    with pytest.raises(KernelCompileError, match="unused_local"):
        build(clang, _targets("gfx1150"), kernels_dir, tmp_path / "o2", tmp_path / "w",
              werror=True, log=logged.append)


def test_cli_reports_failure_with_exit_code(kernels_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--targets", "gfx90a", "--kernels-dir", str(kernels_dir),
                 "--objects-dir", str(tmp_path / "objects")])
    assert code == 1
    assert "names no gfx11 target" in capsys.readouterr().err


def test_bad_arguments_are_rejected(clang: Clang, kernels_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no targets"):
        build(clang, [], kernels_dir, tmp_path / "o")
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        build(clang, _targets("gfx1100"), kernels_dir, tmp_path / "o", jobs=0)
    with pytest.raises(FileNotFoundError, match="kernel sources not found"):
        build(clang, _targets("gfx1100"), tmp_path / "missing", tmp_path / "o")


def test_the_code_object_directory_is_named_in_one_place() -> None:
    """`_objects`, the object suffix and the kernel data files' names are build/compile.py's;
    the launcher, the table and ABI readers and the tools import them instead of building the path."""
    from vllm_rdna_w8a8.build import compile as build_compile

    package_dir = Path(build_compile.__file__).resolve().parents[1]
    naming = sorted(str(path.relative_to(package_dir)) for path in package_dir.rglob("*.py")
                    if any(literal in path.read_text() for literal in ('"_objects"', '".hsaco"', '"gemm_configs.def"', '"kernel_abi.def"')))
    assert naming == ["build/compile.py"]
