from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build.compiler import Clang
from vllm_rdna_w8a8.build.device_libs import (
    DeviceLibError,
    find_system_bitcode_dir,
    isa_version_file_name,
    prepare_device_lib_dir,
)
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS


def test_file_names() -> None:
    assert isa_version_file_name(GFX11_TARGETS["gfx1100"]) == "oclc_isa_version_1100.bc"
    assert isa_version_file_name(GFX11_TARGETS["gfx1151"]) == "oclc_isa_version_1151.bc"


def test_bad_env_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DeviceLibError, match="holds no ocml.bc"):
        find_system_bitcode_dir({"ROCM_DEVICE_LIB_PATH": str(tmp_path)})


def test_prepared_dir_defines_each_isa_version(clang: Clang, tmp_path: Path) -> None:
    system_dir = find_system_bitcode_dir({})
    targets = list(GFX11_TARGETS.values())
    lib_dir = prepare_device_lib_dir(clang, targets, tmp_path / "libs", system_dir)
    assert (lib_dir / "ocml.bc").resolve() == (system_dir / "ocml.bc").resolve()
    llvm_dis = clang.llvm_tool("llvm-dis")
    for target in targets:
        bitcode = lib_dir / isa_version_file_name(target)
        text = subprocess.run([str(llvm_dis), str(bitcode), "-o", "-"], capture_output=True,
                              text=True, check=True).stdout
        assert f"addrspace(4) constant i32 {target.isa_version}" in text, target.name
        assert "@__oclc_ISA_version" in text
        # Where the system ships the file we link it instead of generating one.
        assert bitcode.is_symlink() == (system_dir / bitcode.name).is_file()
    # Idempotent: a second run leaves the same files.
    before = sorted(p.name for p in lib_dir.iterdir())
    prepare_device_lib_dir(clang, targets, lib_dir, system_dir)
    assert sorted(p.name for p in lib_dir.iterdir()) == before
