"""Finding a clang that compiles HIP for gfx11."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MIN_CLANG_MAJOR = 17  # the first release with the gfx11 WMMA builtins we use
# Tried in order after $HIP_CLANG / $CLANG: Debian/Ubuntu's versioned clang, then ROCm's.
CANDIDATE_NAMES = ("clang++-19", "clang++-20", "clang++-18", "clang++-17")
ROCM_CLANG = Path("/opt/rocm/llvm/bin/clang++")
PROBE_TARGET = "gfx1100"


class CompilerNotFound(RuntimeError):
    """No clang able to compile HIP for gfx11 was found."""


@dataclass(frozen=True)
class Clang:
    path: Path
    version: str  # full first line of `clang --version`
    major: int

    @property
    def bin_dir(self) -> Path:
        """The directory of the real binary (llvm-as, llvm-objdump live beside it)."""
        return self.path.resolve().parent

    def llvm_tool(self, name: str) -> Path:
        """An LLVM tool of the same release (llvm-as, llvm-objdump, ...)."""
        for candidate in (self.bin_dir / name, self.bin_dir / f"{name}-{self.major}"):
            if candidate.is_file():
                return candidate
        found = shutil.which(f"{name}-{self.major}")
        if found:
            return Path(found)
        raise CompilerNotFound(f"{name} of LLVM {self.major} not found beside {self.path}")


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def probe_clang(path: str | Path) -> Clang:
    """Check that `path` is clang >= 17 and knows gfx1100; raise CompilerNotFound if not."""
    path = Path(path)
    try:
        result = _run([str(path), "--version"])
    except OSError as exc:
        raise CompilerNotFound(f"{path}: cannot run: {exc}") from exc
    first_line = result.stdout.splitlines()[0] if result.stdout else ""
    match = re.search(r"clang version (\d+)\.", first_line)
    if result.returncode != 0 or match is None:
        raise CompilerNotFound(f"{path}: not a clang ({first_line or result.stderr.strip()!r})")
    major = int(match.group(1))
    if major < MIN_CLANG_MAJOR:
        raise CompilerNotFound(
            f"{path}: clang {major} is too old (need >= {MIN_CLANG_MAJOR} for gfx11 WMMA)"
        )
    # Compile an empty translation unit for the device alone: fails if the target is unknown.
    probe = _run(
        [str(path), "--target=amdgcn-amd-amdhsa", f"-mcpu={PROBE_TARGET}", "-nogpulib",
         "-x", "c", "-c", "-o", os.devnull, os.devnull]
    )
    if probe.returncode != 0:
        raise CompilerNotFound(
            f"{path}: does not know {PROBE_TARGET}: {probe.stderr.strip()[:300]}"
        )
    return Clang(path=path, version=first_line.strip(), major=major)


def find_clang(environ: dict[str, str] | None = None) -> Clang:
    """The clang to use: $HIP_CLANG or $CLANG if set (then it must work), else the first
    working one of clang++-19/-20/-18/-17 and /opt/rocm/llvm/bin/clang++."""
    env = os.environ if environ is None else environ
    for variable in ("HIP_CLANG", "CLANG"):
        chosen = env.get(variable, "").strip()
        if chosen:
            resolved = shutil.which(chosen) or chosen
            try:
                return probe_clang(resolved)
            except CompilerNotFound as exc:
                raise CompilerNotFound(f"${variable}={chosen!r} is unusable: {exc}") from exc
    rejected: list[str] = []
    candidates = [shutil.which(name) for name in CANDIDATE_NAMES]
    candidates.append(str(ROCM_CLANG) if ROCM_CLANG.is_file() else None)
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            return probe_clang(candidate)
        except CompilerNotFound as exc:
            rejected.append(str(exc))
    tried = ", ".join((*CANDIDATE_NAMES, str(ROCM_CLANG)))
    details = f" (rejected: {'; '.join(rejected)})" if rejected else ""
    raise CompilerNotFound(
        f"no clang >= {MIN_CLANG_MAJOR} with gfx11 support found (tried $HIP_CLANG, $CLANG, "
        f"{tried}){details}; install one with `bash .ci/install-toolchain.sh`"
    )
