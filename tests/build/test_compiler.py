from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build.compiler import Clang, CompilerNotFound, find_clang, probe_clang


def _fake_compiler(path: Path, version_line: str) -> Path:
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_found_clang_is_recent_and_knows_gfx11(clang: Clang) -> None:
    assert clang.major >= 17
    assert "clang version" in clang.version
    assert clang.llvm_tool("llvm-as").is_file()
    assert clang.llvm_tool("llvm-objdump").is_file()


def test_env_override_is_honoured(clang: Clang) -> None:
    assert find_clang({"HIP_CLANG": str(clang.path)}).path == clang.path


def test_env_override_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(CompilerNotFound, match=r"\$HIP_CLANG='/nonexistent/clang\+\+' is unusable"):
        find_clang({"HIP_CLANG": "/nonexistent/clang++"})


def test_old_clang_is_rejected(tmp_path: Path) -> None:
    fake = _fake_compiler(tmp_path / "clang++", "Debian clang version 14.0.6")
    with pytest.raises(CompilerNotFound, match="clang 14 is too old"):
        probe_clang(fake)
    with pytest.raises(CompilerNotFound, match=r"\$CLANG=.* is unusable: .*too old"):
        find_clang({"CLANG": str(fake)})


def test_non_clang_is_rejected(tmp_path: Path) -> None:
    fake = _fake_compiler(tmp_path / "gcc", "gcc (Debian 12.2.0-14) 12.2.0")
    with pytest.raises(CompilerNotFound, match="not a clang"):
        probe_clang(fake)


def test_clang_without_gfx1100_is_rejected(tmp_path: Path) -> None:
    # Says it is clang 18 but fails every compile, like a build without the AMDGPU backend.
    fake = tmp_path / "clang++"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "clang version 18.1.0"; exit 0; fi\n'
        "echo \"error: unknown target CPU 'gfx1100'\" >&2; exit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(CompilerNotFound, match="does not know gfx1100"):
        probe_clang(fake)
