"""Runs kernel launches described by case files through our runtime launcher on the emulator.

    python kernel_runner.py LIBRARY OBJECTS_DIR CASES_DIR

Meant for a subprocess started with vllm_rdna_w8a8.emulation.sanitizer_env() (the library is
the AddressSanitizer build). Each CASES_DIR/<name>.in.npz holds the arrays of one launch plus
`spec`, a JSON string {"kernel", "grid", "block", "args": [[kind, value], ...]} where a
"pointer" argument names an array (or is null) and "int32"/"uint32"/"float32" carry values.
After the launch every array is written to CASES_DIR/<name>.out.npz.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from vllm_rdna_w8a8.runtime.hip import load_runtime
from vllm_rdna_w8a8.runtime.launcher import KernelArg, Launcher

EMULATED_TARGET = "gfx1100"
# The GEMM kernels require 16-byte aligned operands (docs/architecture.md).
REQUIRED_ALIGNMENT = 16


def kernel_args(spec_args: list[list], arrays: dict[str, np.ndarray]) -> list[KernelArg]:
    args = []
    for kind, value in spec_args:
        if kind == "pointer":
            address = 0 if value is None else arrays[value].ctypes.data
            if address % REQUIRED_ALIGNMENT:
                raise ValueError(f"array {value!r} is not {REQUIRED_ALIGNMENT}-byte aligned")
            args.append(KernelArg.pointer(address))
        else:
            args.append(KernelArg(kind, value))
    return args


def main(library: str, objects_dir: str, cases_dir: str) -> None:
    runtime = load_runtime(library)
    launcher = Launcher(Path(objects_dir), runtime=lambda: runtime,
                        target_of=lambda _device: EMULATED_TARGET)
    for case in sorted(Path(cases_dir).glob("*.in.npz")):
        with np.load(case, allow_pickle=False) as data:
            spec = json.loads(str(data["spec"]))
            # Fresh, exactly sized allocations, so that AddressSanitizer sees overruns.
            arrays = {name: np.array(data[name]) for name in data.files if name != "spec"}
        kernel = launcher.get_kernel(0, spec["kernel"])
        kernel.launch(spec["grid"], spec["block"], kernel_args(spec["args"], arrays), 0)
        np.savez(case.with_name(case.name.replace(".in.npz", ".out.npz")), **arrays)
        print(f"{case.name}: {spec['kernel']} ok", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
