"""Build module: compiles kernels/*.hip into gfx11 code objects (`python -m vllm_rdna_w8a8.build`).

Uses relative imports only, so that setup.py can load it without importing the package.
"""

from .compile import (
    DEFAULT_KERNELS_DIR,
    DEFAULT_OBJECTS_DIR,
    BuildResult,
    CompileFailure,
    KernelCompileError,
    build,
    compile_flags,
    copy_kernel_data,
)
from .compiler import Clang, CompilerNotFound, find_clang, probe_clang
from .device_libs import DeviceLibError, prepare_device_lib_dir
from .targets import GFX11_TARGETS, GfxTarget, get_target, parse_arch_list, selected_targets

__all__ = [
    "DEFAULT_KERNELS_DIR",
    "DEFAULT_OBJECTS_DIR",
    "GFX11_TARGETS",
    "BuildResult",
    "Clang",
    "CompileFailure",
    "CompilerNotFound",
    "DeviceLibError",
    "GfxTarget",
    "KernelCompileError",
    "build",
    "compile_flags",
    "copy_kernel_data",
    "find_clang",
    "get_target",
    "parse_arch_list",
    "prepare_device_lib_dir",
    "probe_clang",
    "selected_targets",
]
