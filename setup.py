"""Build hook: compile the gfx11 code objects before the package files are collected.

Metadata lives in pyproject.toml. Without a suitable clang (or with PYTORCH_ROCM_ARCH naming
no gfx11 target) the package builds without kernels (or with the code objects already in
vllm_rdna_w8a8/_objects) and says so in one line; without kernels vLLM keeps its own. A kernel that fails to compile with a suitable clang fails the build.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUILD_PACKAGE = ROOT / "vllm_rdna_w8a8" / "build"


def _load_build_module() -> ModuleType:
    """vllm_rdna_w8a8.build without importing vllm_rdna_w8a8 itself (stdlib-only, relative
    imports), so building needs neither torch nor vLLM."""
    name = "_vllm_rdna_w8a8_build"
    spec = importlib.util.spec_from_file_location(
        name, BUILD_PACKAGE / "__init__.py", submodule_search_locations=[str(BUILD_PACKAGE)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def compile_kernels() -> None:
    kernel_build = _load_build_module()
    try:
        targets = kernel_build.selected_targets()
        clang = kernel_build.find_clang()
        result = kernel_build.build(clang, targets)
    except (ValueError, FileNotFoundError, kernel_build.CompilerNotFound,
            kernel_build.DeviceLibError) as exc:
        if kernel_build.DEFAULT_KERNELS_DIR.is_dir():  # the host reads the ABI even without kernels
            kernel_build.copy_kernel_data(log=lambda line: None)
        existing = sorted(kernel_build.DEFAULT_OBJECTS_DIR.glob("gfx*/*.hsaco"))
        if existing:  # e.g. an sdist that carries prebuilt objects
            print(f"vllm-rdna-w8a8: not compiling ({exc}); shipping the {len(existing)} "
                  f"existing code objects in {kernel_build.DEFAULT_OBJECTS_DIR} as they are",
                  file=sys.stderr)
        else:
            print(f"vllm-rdna-w8a8: building without gfx11 kernels ({exc})", file=sys.stderr)
        return
    print(f"vllm-rdna-w8a8: {len(result.objects)} gfx11 code objects "
          f"({len(result.compiled)} compiled) for {', '.join(t.name for t in targets)}")


class BuildPyWithKernels(build_py):
    def run(self) -> None:
        compile_kernels()
        super().run()


setup(cmdclass={"build_py": BuildPyWithKernels})
