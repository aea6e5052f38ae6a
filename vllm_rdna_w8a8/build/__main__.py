"""`python -m vllm_rdna_w8a8.build`: compile the kernels for the selected gfx11 targets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .compile import DEFAULT_JOBS, DEFAULT_KERNELS_DIR, DEFAULT_OBJECTS_DIR, KernelCompileError, build
from .compiler import CompilerNotFound, find_clang
from .device_libs import DeviceLibError
from .targets import ARCH_ENV, parse_arch_list, selected_targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_rdna_w8a8.build", description=__doc__)
    parser.add_argument("--targets", help=f"';' or ',' separated gfx11 targets "
                        f"(default: ${ARCH_ENV}, else all six)")
    parser.add_argument("--kernels-dir", type=Path, default=DEFAULT_KERNELS_DIR)
    parser.add_argument("--objects-dir", type=Path, default=DEFAULT_OBJECTS_DIR)
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="parallel compiles")
    parser.add_argument("--werror", action="store_true", help="treat compiler warnings as errors")
    args = parser.parse_args(argv)
    try:
        targets = parse_arch_list(args.targets) if args.targets else selected_targets()
        clang = find_clang()
        result = build(clang, targets, args.kernels_dir, args.objects_dir,
                       jobs=args.jobs, werror=args.werror)
    except (ValueError, FileNotFoundError, CompilerNotFound, DeviceLibError,
            KernelCompileError) as exc:
        print(f"rdna_w8a8 build failed: {exc}", file=sys.stderr)
        return 1
    print(f"rdna_w8a8 build: {len(result.objects)} code objects in {args.objects_dir} "
          f"({len(result.compiled)} compiled, {len(result.up_to_date)} up to date"
          f"{f', {len(result.removed)} stale removed' if result.removed else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
