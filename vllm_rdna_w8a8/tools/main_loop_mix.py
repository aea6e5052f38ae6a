"""The main-loop instruction mix of every compiled GEMM kernel, for the performance model.

    python -m vllm_rdna_w8a8.tools.main_loop_mix            # rewrite dispatch/main_loop_mix.json
    python -m vllm_rdna_w8a8.tools.main_loop_mix --check    # exit 1 if it differs from the objects

Static counts from the shipped code objects (`llvm-objdump`, through `isa_report`): per target
and GEMM kernel, the instructions of its main loop by class. The performance model reads the
file (`perf_model.shipped_main_loop_mixes`) and never runs a tool; this developer step
regenerates it after a kernel change and a rebuild. Compiler output, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from vllm_rdna_w8a8.build.compile import DEFAULT_OBJECTS_DIR
from vllm_rdna_w8a8.dispatch.perf_model import MAIN_LOOP_MIX_FORMAT, MAIN_LOOP_MIX_PATH, MainLoopMix
from vllm_rdna_w8a8.tools.isa_report import (
    GEMM_KERNEL_RE,
    Instruction,
    IsaReportError,
    disassemble,
    find_objdump,
    loop_counts,
    main_loops,
)
from vllm_rdna_w8a8.runtime.code_object import read_code_object

GENERATED_BY = "python -m vllm_rdna_w8a8.tools.main_loop_mix"


def kernel_mix(instructions: list[Instruction]) -> MainLoopMix | None:
    """The mix of a kernel's main loop (`isa_report.main_loops`; of a kernel with one copy per
    mode, like the fused decode GEMMs, the costliest copy); None without a loop of WMMAs."""
    mixes = [loop_counts(copy) for copy in main_loops(instructions)]
    mix = max(mixes, key=MainLoopMix.issue_clk, default=loop_counts([]))
    return mix if mix.wmma else None


def compiled_mixes(objects_dir: Path = DEFAULT_OBJECTS_DIR) -> dict[str, dict[str, MainLoopMix]]:
    """{target: {kernel: mix}} for every GEMM kernel of every <target>/*.hsaco."""
    objdump = find_objdump()
    result: dict[str, dict[str, MainLoopMix]] = {}
    for path in sorted(objects_dir.glob("gfx*/*.hsaco")):
        kernels = [name for name in read_code_object(path).kernels if GEMM_KERNEL_RE.match(name)]
        if not kernels:
            continue
        symbols = disassemble(objdump, path, path.parent.name)
        for name in kernels:
            mix = kernel_mix(symbols.get(name, []))
            if mix is None:
                raise IsaReportError(f"{path}: {name} has no main loop with WMMAs")
            result.setdefault(path.parent.name, {})[name] = mix
    if not result:
        raise IsaReportError(f"no GEMM code objects under {objects_dir} (build them: python -m vllm_rdna_w8a8.build)")
    return result


def render(mixes: dict[str, dict[str, MainLoopMix]]) -> str:
    """The file's text: sorted, one line per kernel, so it diffs line by line."""
    lines = ["{", f' "format_version": {MAIN_LOOP_MIX_FORMAT},', f' "generated_by": {json.dumps(GENERATED_BY)},',
             ' "kernels": {']
    targets = sorted(mixes)
    for target_index, target in enumerate(targets):
        lines.append(f"  {json.dumps(target)}: {{")
        names = sorted(mixes[target])
        for index, name in enumerate(names):
            comma = "," if index < len(names) - 1 else ""
            lines.append(f"   {json.dumps(name)}: {json.dumps(asdict(mixes[target][name]))}{comma}")
        lines.append("  }" + ("," if target_index < len(targets) - 1 else ""))
    return "\n".join(lines + [" }", "}"]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=GENERATED_BY, description=__doc__.split("\n\n")[0])
    parser.add_argument("objects_dir", nargs="?", type=Path, default=DEFAULT_OBJECTS_DIR)
    parser.add_argument("--output", type=Path, default=MAIN_LOOP_MIX_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the objects")
    args = parser.parse_args(argv)
    try:
        text = render(compiled_mixes(args.objects_dir))
    except (IsaReportError, ValueError) as error:
        print(f"main_loop_mix: {error}", file=sys.stderr)
        return 2
    current = args.output.read_text() if args.output.is_file() else None
    if args.check:
        if current != text:
            print(f"main_loop_mix: {args.output} differs from the code objects in {args.objects_dir}; "
                  f"regenerate with {GENERATED_BY}", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.output.write_text(text)
    print(f"main_loop_mix: {args.output} ({'rewritten' if current != text else 'unchanged'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
