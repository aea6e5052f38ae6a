"""Run a command as vLLM-CPU would behave on another x86-64 class, on this machine.

    python -m vllm_rdna_w8a8.testing.cpu_class_sim avx2 -- python -m pytest tests/e2e
    python -m vllm_rdna_w8a8.testing.cpu_class_sim amx-routing -- python examples/offline_generate.py

CI machines change class between runs (AVX2, AVX-512, AVX-512+AMX); this lets one machine
check the CPU stack's other behaviours before CI meets them. Every Python process of the
command (vLLM's engine and workers included) loads a generated `sitecustomize` that changes
torch's CPU-feature answers, which is what vLLM-CPU and `cpu_stack` decide by:

- ``avx2``: no AVX-512, VNNI or AMX. vLLM-CPU loads its AVX2 build, torch its AVX2 kernels
  (ATEN_CPU_CAPABILITY) and oneDNN stays at AVX2 without VNNI (ONEDNN_MAX_CPU_ISA), so the
  int8 GEMMs saturate as on an AVX2-only machine. Needs an AVX2 or better machine.
  Known gap: on an AVX-512 machine (AMD EPYC, seen 2026-11-30), vLLM-CPU engines at tensor
  parallelism 2 fail under the oneDNN cap with "index out of range in self" in the
  embedding (garbage token ids), with or without this plugin's kernels, and run without
  the cap; TP=2 passed on real AVX2 machines (CI runs of this project), so TP=2 results
  under this simulation say nothing.
- ``amx-routing``: torch says AMX tiles are present, so vLLM-CPU routes int8 layers as on an
  AMX machine (its int8 packing and kernels need AVX-512 only). AMX instructions are not
  emulated: anything that would execute them (bf16 AMX attention or GEMMs) must not run.

Tests that read the real hardware (tests/cpu_stack's class and AMX-state checks) fail under
a simulation by design: they compare against /proc/cpuinfo and the kernel's grant.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_AVX2 = """\
import torch
_hidden = ("avx512", "amx", "avx_vnni")
for _name in ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_vnni_supported",
              "_is_amx_tile_supported", "_is_amx_fp16_supported"):
    setattr(torch.cpu, _name, lambda: False)
_capability = torch._C._cpu._get_cpu_capability
torch._C._cpu._get_cpu_capability = lambda: {
    key: (False if key.startswith(_hidden) else value) for key, value in _capability().items()}
"""

_AMX_ROUTING = """\
import torch
torch.cpu._is_amx_tile_supported = lambda: True
"""

SIMULATIONS: dict[str, tuple[str, dict[str, str]]] = {
    "avx2": (_AVX2, {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}),
    "amx-routing": (_AMX_ROUTING, {}),
}


def simulation_env(name: str, directory: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this environment) with simulation `name` installed from `directory`."""
    source, variables = SIMULATIONS[name]
    (directory / "sitecustomize.py").write_text(source)
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(directory), env.get("PYTHONPATH")]))
    env.update(variables)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("simulation", choices=sorted(SIMULATIONS))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    with tempfile.TemporaryDirectory(prefix=f"cpu-sim-{args.simulation}-") as directory:
        return subprocess.call(command, env=simulation_env(args.simulation, Path(directory)))


if __name__ == "__main__":
    sys.exit(main())
