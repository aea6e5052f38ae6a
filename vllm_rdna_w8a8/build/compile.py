"""Compile every kernels/*.hip for every selected gfx11 target into code objects.

Output: vllm_rdna_w8a8/_objects/<target>/<source stem>.hsaco (one plain ELF code object per
source and target), plus copies of the kernel data files kernels/gemm_configs.def (the tile
table) and kernels/kernel_abi.def (the ABI constants) in vllm_rdna_w8a8/_objects/.
An object is rebuilt only when the hash of its inputs (source, every header under the
kernel directory, flags, compiler version), stored beside it, changes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .compiler import Clang
from .device_libs import prepare_device_lib_dir
from .targets import GfxTarget

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE_DIR.parent
DEFAULT_KERNELS_DIR = PROJECT_ROOT / "kernels"
DEFAULT_OBJECTS_DIR = PACKAGE_DIR / "_objects"
DEFAULT_WORK_DIR = PROJECT_ROOT / "build" / "rdna_w8a8"
TILE_TABLE_NAME = "gemm_configs.def"
KERNEL_ABI_NAME = "kernel_abi.def"
# Data files of kernels/ that the host reads too: shipped beside the code objects.
KERNEL_DATA_NAMES = (TILE_TABLE_NAME, KERNEL_ABI_NAME)
OBJECT_SUFFIX = ".hsaco"
HASH_SUFFIX = ".inputs-sha256"
DEFAULT_JOBS = 2
COMPILE_TIMEOUT_S = 900
_TARGET_DIR_RE = re.compile(r"^gfx11\d\d$")

Log = Callable[[str], None]


@dataclass(frozen=True)
class CompileFailure:
    source: Path
    target: str
    message: str  # the compiler's stderr


class KernelCompileError(RuntimeError):
    """One or more kernel sources failed to compile; names each source and target."""

    def __init__(self, failures: Sequence[CompileFailure], compiler: str) -> None:
        self.failures = list(failures)
        parts = [
            f"{failure.source.name} for {failure.target} failed to compile with {compiler}:\n"
            f"{failure.message.strip()}"
            for failure in self.failures
        ]
        super().__init__("\n\n".join(parts))


@dataclass
class BuildResult:
    compiled: list[Path] = field(default_factory=list)
    up_to_date: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    @property
    def objects(self) -> list[Path]:
        return sorted(self.compiled + self.up_to_date)


@dataclass(frozen=True)
class _Job:
    source: Path
    target: GfxTarget
    output: Path
    command: tuple[str, ...]
    inputs_hash: str


def compile_flags(
    target: GfxTarget, kernels_dir: Path, device_lib_dir: Path, werror: bool = False
) -> list[str]:
    flags = [
        "-x", "hip", f"--offload-arch={target.name}", "--cuda-device-only",
        "--no-gpu-bundle-output", "-O3", "-std=c++20", f"-I{kernels_dir}",
        f"--rocm-device-lib-path={device_lib_dir}", "-Wall",
    ]
    if werror:
        flags.append("-Werror")
    return flags


def kernel_sources(kernels_dir: Path) -> list[Path]:
    return sorted(kernels_dir.glob("*.hip"))


def _header_digest(kernels_dir: Path) -> bytes:
    """One digest of every non-source file under kernels/ (headers, .def tables): any
    change to one rebuilds everything, which is simpler than tracking includes."""
    digest = hashlib.sha256()
    for path in sorted(kernels_dir.rglob("*")):
        if path.is_file() and path.suffix != ".hip":
            digest.update(str(path.relative_to(kernels_dir)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.digest()


def _inputs_hash(source: Path, headers: bytes, command: Sequence[str], clang: Clang) -> str:
    digest = hashlib.sha256()
    for part in (clang.version.encode(), "\0".join(command).encode(), headers,
                 source.read_bytes()):
        digest.update(part + b"\0")
    return digest.hexdigest()


def _hash_file(output: Path) -> Path:
    return output.with_name(output.name + HASH_SUFFIX)


def _is_up_to_date(job: _Job) -> bool:
    stamp = _hash_file(job.output)
    return job.output.is_file() and stamp.is_file() and stamp.read_text().strip() == job.inputs_hash


def _run_job(job: _Job) -> tuple[_Job, subprocess.CompletedProcess[str]]:
    temporary = job.output.with_name(job.output.name + ".tmp")
    result = subprocess.run(
        [*job.command, "-o", str(temporary)],
        capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False,
    )
    if result.returncode == 0:
        os.replace(temporary, job.output)
        _hash_file(job.output).write_text(job.inputs_hash + "\n")
    else:
        temporary.unlink(missing_ok=True)
    return job, result


def _remove_stale(objects_dir: Path, targets: Sequence[GfxTarget],
                  sources: Sequence[Path]) -> list[Path]:
    """Delete objects that this build would not produce (removed sources, deselected
    targets): shipping or loading a stale object is worse than rebuilding one."""
    wanted_targets = {target.name for target in targets}
    wanted_stems = {source.stem for source in sources}
    removed: list[Path] = []
    if not objects_dir.is_dir():
        return removed
    for target_dir in sorted(objects_dir.iterdir()):
        if not (target_dir.is_dir() and _TARGET_DIR_RE.match(target_dir.name)):
            continue
        if target_dir.name not in wanted_targets:
            removed.extend(sorted(target_dir.glob(f"*{OBJECT_SUFFIX}")))
            shutil.rmtree(target_dir)
            continue
        for item in sorted(target_dir.iterdir()):
            stem = item.name.split(OBJECT_SUFFIX, 1)[0]  # x.hsaco, x.hsaco.inputs-sha256, x.hsaco.tmp
            if stem not in wanted_stems:
                if item.suffix == OBJECT_SUFFIX:
                    removed.append(item)
                item.unlink()
    return removed


def build(
    clang: Clang,
    targets: Sequence[GfxTarget],
    kernels_dir: Path = DEFAULT_KERNELS_DIR,
    objects_dir: Path = DEFAULT_OBJECTS_DIR,
    work_dir: Path = DEFAULT_WORK_DIR,
    jobs: int = DEFAULT_JOBS,
    werror: bool = False,
    log: Log = print,
) -> BuildResult:
    """Compile every `kernels_dir/*.hip` for every target (skipping up-to-date objects) and
    copy the kernel data files. Raises KernelCompileError naming each failed source and target."""
    if not targets:
        raise ValueError("no targets to build for")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not kernels_dir.is_dir():
        raise FileNotFoundError(
            f"kernel sources not found at {kernels_dir}: build from a source checkout"
        )
    sources = kernel_sources(kernels_dir)
    result = BuildResult(removed=_remove_stale(objects_dir, targets, sources))
    copy_kernel_data(kernels_dir, objects_dir, log)
    if not sources:
        log(f"rdna_w8a8 build: no kernel sources (*.hip) in {kernels_dir}")
        return result

    device_lib_dir = prepare_device_lib_dir(
        clang, list(targets), work_dir / f"device-libs-clang{clang.major}"
    )
    headers = _header_digest(kernels_dir)
    pending: list[_Job] = []
    for target in targets:
        (objects_dir / target.name).mkdir(exist_ok=True)
        for source in sources:
            command = (str(clang.path), *compile_flags(target, kernels_dir, device_lib_dir,
                                                       werror), str(source))
            job = _Job(source, target, objects_dir / target.name / f"{source.stem}{OBJECT_SUFFIX}",
                       command, _inputs_hash(source, headers, command, clang))
            if _is_up_to_date(job):
                result.up_to_date.append(job.output)
            else:
                pending.append(job)

    log(f"rdna_w8a8 build: {len(pending)} to compile, {len(result.up_to_date)} up to date "
        f"({len(sources)} sources x {len(targets)} targets, {clang.version})")
    failures: list[CompileFailure] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for job, completed in pool.map(_run_job, pending):
            if completed.returncode != 0:
                failures.append(CompileFailure(job.source, job.target.name,
                                               completed.stderr or completed.stdout))
                continue
            result.compiled.append(job.output)
            log(f"  {job.target.name}/{job.output.name}")
            if completed.stderr.strip():  # warnings: show them, they often hide real bugs
                log(f"  warnings from {job.source.name} for {job.target.name}:\n"
                    f"{completed.stderr.rstrip()}")
    if failures:
        raise KernelCompileError(failures, clang.version)
    return result


def copy_kernel_data(kernels_dir: Path = DEFAULT_KERNELS_DIR, objects_dir: Path = DEFAULT_OBJECTS_DIR,
                     log: Log = print) -> None:
    """Copy the kernel data files (KERNEL_DATA_NAMES) to `objects_dir`, where an installed
    package reads them; a file missing from `kernels_dir` loses its copy too."""
    objects_dir.mkdir(parents=True, exist_ok=True)
    for name in KERNEL_DATA_NAMES:
        source = kernels_dir / name
        copy = objects_dir / name
        if source.is_file():
            if not copy.is_file() or copy.read_bytes() != source.read_bytes():
                shutil.copyfile(source, copy)
        else:
            copy.unlink(missing_ok=True)
            log(f"rdna_w8a8 build: no {name} in {kernels_dir}")
