"""A ROCm device-library directory that has bitcode for every gfx11 target.

clang's HIP driver links `oclc_isa_version_<NNNN>.bc` for the offload target and refuses
to compile when it is missing. Debian 12's rocm-device-libs stop at gfx1036, so we make a
directory of links to the system bitcode plus generated gfx11 files (only where the
system has none), and pass it with --rocm-device-lib-path. The generated file defines one
constant, exactly like the upstream ones: @__oclc_ISA_version in the constant address
space (addrspace 4).
"""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

from .compiler import Clang
from .targets import GfxTarget

DEVICE_LIB_ENV = "ROCM_DEVICE_LIB_PATH"
# Where distributions and ROCm put the bitcode; the first directory holding ocml.bc wins.
SYSTEM_BITCODE_GLOBS = (
    "/opt/rocm/amdgcn/bitcode",
    "/opt/rocm/lib/llvm/lib/clang/*/lib/amdgcn/bitcode",
    "/usr/lib/*-linux-gnu/amdgcn/bitcode",  # Debian 12's rocm-device-libs
    "/usr/lib/llvm-*/lib/clang/*/amdgcn/bitcode",  # Debian 13's rocm-device-libs-17
    "/usr/lib/amdgcn/bitcode",
    "/usr/share/amdgcn/bitcode",
)


class DeviceLibError(RuntimeError):
    """The device libraries are missing or a gfx11 file could not be generated."""


def isa_version_file_name(target: GfxTarget) -> str:
    """e.g. oclc_isa_version_1100.bc for gfx1100 (the target's digits after 'gfx')."""
    return f"oclc_isa_version_{target.name.removeprefix('gfx')}.bc"


def find_system_bitcode_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    chosen = env.get(DEVICE_LIB_ENV, "").strip()
    if chosen:
        if not (Path(chosen) / "ocml.bc").is_file():
            raise DeviceLibError(f"${DEVICE_LIB_ENV}={chosen!r} holds no ocml.bc")
        return Path(chosen)
    for pattern in SYSTEM_BITCODE_GLOBS:
        for directory in sorted(glob.glob(pattern), reverse=True):  # newest clang first
            if (Path(directory) / "ocml.bc").is_file():
                return Path(directory)
    raise DeviceLibError(
        "ROCm device libraries (ocml.bc) not found in "
        f"{', '.join(SYSTEM_BITCODE_GLOBS)}; install rocm-device-libs "
        f"(`bash .ci/install-toolchain.sh`) or set ${DEVICE_LIB_ENV}"
    )


def _amdgpu_datalayout(clang: Clang, target: GfxTarget) -> str:
    """The data layout this clang uses for `target`, so that linking warns about nothing."""
    result = subprocess.run(
        [str(clang.path), "--target=amdgcn-amd-amdhsa", f"-mcpu={target.name}", "-nogpulib",
         "-x", "c", "-S", "-emit-llvm", "-o", "-", os.devnull],
        capture_output=True, text=True, timeout=60, check=False,
    )
    for line in result.stdout.splitlines():
        if line.startswith("target datalayout"):
            return line
    raise DeviceLibError(f"{clang.path} printed no data layout for {target.name}: {result.stderr}")


def _generate_isa_version_bitcode(clang: Clang, target: GfxTarget, output: Path) -> None:
    source = output.with_suffix(".ll")
    source.write_text(
        f"{_amdgpu_datalayout(clang, target)}\n"
        'target triple = "amdgcn-amd-amdhsa"\n'
        f"@__oclc_ISA_version = linkonce_odr protected local_unnamed_addr addrspace(4) "
        f"constant i32 {target.isa_version}, align 4\n"
    )
    result = subprocess.run(
        [str(clang.llvm_tool("llvm-as")), str(source), "-o", str(output)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if result.returncode != 0:
        raise DeviceLibError(f"llvm-as failed on {source}: {result.stderr.strip()}")


def prepare_device_lib_dir(
    clang: Clang, targets: list[GfxTarget], work_dir: Path, system_dir: Path | None = None
) -> Path:
    """Fill `work_dir` with links to the system bitcode plus generated gfx11 ISA-version
    files where the system has none, and return it. Idempotent."""
    system_dir = find_system_bitcode_dir() if system_dir is None else system_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    for bitcode in sorted(system_dir.glob("*.bc")):
        link = work_dir / bitcode.name
        if link.is_symlink() and Path(os.readlink(link)) == bitcode:
            continue
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(bitcode)
    for target in targets:
        name = isa_version_file_name(target)
        if not (system_dir / name).is_file() and not (work_dir / name).is_file():
            _generate_isa_version_bitcode(clang, target, work_dir / name)
    return work_dir
