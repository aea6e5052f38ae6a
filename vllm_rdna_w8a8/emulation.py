"""The emulated gfx11 backend: CPU builds of our HIP kernels plus a stand-in HIP runtime.

`build_emulator()` compiles the emulator (emulator/: the host-side HIP subset, RDNA3 WMMA
semantics, a fiber scheduler and the stand-in `hipModule*` API) together with HIP kernel
sources, as host C++, into one shared library that `runtime/hip.py` loads in place of
`libamdhip64.so`. It is a development and test tool: it builds from the repository
checkout (emulator/ and kernels/ beside this package), not from an installed wheel.

The switch that turns the backend on and lists the emulated devices, VLLM_RDNA_W8A8_EMULATE,
is read by `settings.emulated_targets()`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .build.compiler import Clang, find_clang

REPO_ROOT = Path(__file__).resolve().parents[1]
EMULATOR_DIR = REPO_ROOT / "emulator"
KERNELS_DIR = REPO_ROOT / "kernels"
BUILD_DIR = REPO_ROOT / "build" / "emulator"

LIBRARY_PREFIX = "librdna_emulator"
# Libraries of one flavour (plain / sanitized) kept in BUILD_DIR; older ones are removed.
KEPT_LIBRARIES_PER_FLAVOUR = 8
COMPILE_JOBS = 2
COMPILE_TIMEOUT_S = 900

COMMON_FLAGS = (
    "-std=c++20", "-fPIC", "-pthread", "-DRDNA_W8A8_EMULATOR", "-Wall",
    # Vector arguments of kernel helpers change the ABI without AVX; harmless inside
    # one library built with one set of flags.
    "-Wno-psabi",
)
PLAIN_FLAGS = ("-O2", "-g")
SANITIZE_FLAGS = (
    "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
    # The process (python) is not instrumented: the library uses the shared ASan
    # runtime, which sanitizer_env() preloads.
    "-shared-libasan",
)
SANITIZER_RUNTIME = "libclang_rt.asan-x86_64.so"


class EmulatorBuildError(RuntimeError):
    """The emulator library could not be built (missing checkout, compiler or sources)."""


def default_kernel_sources() -> list[Path]:
    """Every kernels/*.hip of the checkout."""
    if not KERNELS_DIR.is_dir():
        raise EmulatorBuildError(
            f"kernel sources not found at {KERNELS_DIR}: the emulator is a development tool "
            "that builds from the vllm-rdna-w8a8 repository checkout, not from an installed "
            "package"
        )
    return sorted(KERNELS_DIR.glob("*.hip"))


def _checked_sources(kernel_sources: Sequence[Path] | None) -> list[Path]:
    if kernel_sources is None:
        return default_kernel_sources()
    if isinstance(kernel_sources, (str, bytes, os.PathLike)) or not isinstance(
        kernel_sources, Sequence
    ):
        raise TypeError(
            "kernel_sources must be a sequence of paths (or None for kernels/*.hip), "
            f"got {type(kernel_sources).__name__}"
        )
    sources = []
    for source in kernel_sources:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"kernel source {source!r} is not a path")
        path = Path(source).resolve()
        if not path.is_file():
            raise EmulatorBuildError(f"kernel source {path} does not exist")
        sources.append(path)
    if len({path.name for path in sources}) != len(sources):
        raise EmulatorBuildError(f"kernel sources must have distinct names: {sources}")
    return sources


def _emulator_sources() -> list[Path]:
    sources = sorted((EMULATOR_DIR / "src").glob("*.cpp"))
    if not sources or not (EMULATOR_DIR / "include" / "rdna_emulator.h").is_file():
        raise EmulatorBuildError(
            f"emulator sources not found under {EMULATOR_DIR}: build from the repository checkout"
        )
    return sources


def _input_files(kernel_sources: Sequence[Path]) -> list[Path]:
    """Every file the build may read: the emulator, kernels/ (always on the include path)
    and the directory tree of each kernel source (its local headers)."""
    roots = {EMULATOR_DIR, *(source.parent for source in kernel_sources)}
    if KERNELS_DIR.is_dir():
        roots.add(KERNELS_DIR)
    files = {path for root in roots for path in root.rglob("*") if path.is_file()}
    return sorted(files | set(kernel_sources))


def _inputs_hash(clang: Clang, flags: Sequence[str], kernel_sources: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(clang.version.encode() + b"\0" + "\0".join(flags).encode() + b"\0")
    digest.update("\0".join(str(source) for source in kernel_sources).encode() + b"\0")
    for path in _input_files(kernel_sources):
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def _run_compiler(command: list[str]) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise EmulatorBuildError(
            f"emulator build failed: {' '.join(command)}\n{result.stderr.strip()}"
        )


def _prune_old_libraries(flavour_prefix: str, keep: Path) -> None:
    libraries = sorted(
        BUILD_DIR.glob(f"{flavour_prefix}-*.so"), key=lambda path: path.stat().st_mtime
    )
    for old in libraries[:-KEPT_LIBRARIES_PER_FLAVOUR]:
        if old != keep:
            old.unlink(missing_ok=True)  # a process that loaded it keeps its mapping


def build_emulator(
    kernel_sources: Sequence[Path] | None = None, *, sanitize: bool = False
) -> Path:
    """Build (or reuse) the emulator library holding `kernel_sources` (default: every
    kernels/*.hip) and return its path.

    Cached in build/emulator/ under a hash of every input file, the flags and the compiler
    version; concurrent builds are safe (each writes a temporary file, then renames it).
    `sanitize=True` builds with AddressSanitizer + UBSan: load it only in a process started
    with `sanitizer_env()`.
    """
    if not isinstance(sanitize, bool):
        raise TypeError(f"sanitize must be a bool, got {type(sanitize).__name__}")
    sources = _checked_sources(kernel_sources)
    emulator_sources = _emulator_sources()
    clang = find_clang()
    flags = [
        *COMMON_FLAGS, *(SANITIZE_FLAGS if sanitize else PLAIN_FLAGS),
        f"-I{EMULATOR_DIR / 'include'}", f"-I{KERNELS_DIR}",
    ]
    flavour_prefix = f"{LIBRARY_PREFIX}-asan" if sanitize else LIBRARY_PREFIX
    library = BUILD_DIR / f"{flavour_prefix}-{_inputs_hash(clang, flags, sources)}.so"
    if library.is_file():
        return library

    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD_DIR, prefix="objects-") as scratch:
        # Kernel sources (.hip, compiled as plain host C++) first: their errors are the
        # likely ones and end the build before the emulator's own sources compile.
        objects: list[Path] = []
        with ThreadPoolExecutor(max_workers=COMPILE_JOBS) as pool:
            for stage, language in ((sources, ["-x", "c++"]), (emulator_sources, [])):
                stage_objects = [Path(scratch) / f"{len(objects) + index}-{source.stem}.o"
                                 for index, source in enumerate(stage)]
                list(pool.map(_run_compiler, [
                    [str(clang.path), *flags, *language, "-c", str(source), "-o", str(obj)]
                    for source, obj in zip(stage, stage_objects)
                ]))
                objects += stage_objects
        temporary = Path(scratch) / library.name
        _run_compiler([
            str(clang.path), *flags, "-shared", *(str(obj) for obj in objects),
            "-o", str(temporary),
        ])
        os.replace(temporary, library)
    _prune_old_libraries(flavour_prefix, keep=library)
    return library


def sanitizer_runtime() -> Path:
    """clang's shared AddressSanitizer runtime (which also carries UBSan's handlers)."""
    clang = find_clang()
    result = subprocess.run(
        [str(clang.path), f"-print-file-name={SANITIZER_RUNTIME}"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    runtime = Path(result.stdout.strip())
    if result.returncode != 0 or not runtime.is_absolute() or not runtime.is_file():
        raise EmulatorBuildError(
            f"{clang.path} has no {SANITIZER_RUNTIME}: install libclang-rt-{clang.major}-dev"
        )
    return runtime


def sanitizer_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The full environment (a copy of `base`, default os.environ, plus the settings) for a
    subprocess that loads a `build_emulator(sanitize=True)` library: the ASan runtime
    preloaded ahead of python, leak checks off (the interpreter never frees some memory),
    UBSan findings fatal with a stack trace."""
    env = dict(os.environ if base is None else base)
    preload = [str(sanitizer_runtime())]
    if env.get("LD_PRELOAD"):
        preload.append(env["LD_PRELOAD"])
    env["LD_PRELOAD"] = " ".join(preload)
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1:symbolize=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    return env
