"""ISA report: per kernel and target, register and LDS use, occupancy, WMMA count, the
load widths of the main loop and the kernel's stores, read from the shipped code objects.

`python -m vllm_rdna_w8a8.tools.isa_report [OBJECTS_DIR]` prints a table;
`isa_report(objects_dir)` returns the rows (the performance model and the compile-policy
tests read them). Resource figures come from the code-object metadata; instruction
figures from `llvm-objdump -d --mcpu=<target>`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vllm_rdna_w8a8.build.targets import (
    LDS_BYTES_PER_WGP,
    MAX_VGPRS_PER_WAVE,
    MAX_WAVES_PER_SIMD,
    SIMDS_PER_WGP,
    GfxTarget,
    get_target,
)
from vllm_rdna_w8a8.build.compile import DEFAULT_OBJECTS_DIR
from vllm_rdna_w8a8.dispatch.perf_model import MainLoopMix
from vllm_rdna_w8a8.dispatch.tile_configs import WAVE_SIZE
from vllm_rdna_w8a8.runtime.code_object import KernelMetadata, read_code_object

OBJDUMP_ENV = "LLVM_OBJDUMP"
OBJDUMP_CANDIDATES = ("llvm-objdump-19", "llvm-objdump-20", "llvm-objdump-18", "llvm-objdump-17",
                      "/opt/rocm/llvm/bin/llvm-objdump")
# Memory instructions counted in the main loop, by mnemonic prefix.
GLOBAL_LOAD_PREFIXES = ("global_load_", "buffer_load_")
LOAD_PREFIXES = (*GLOBAL_LOAD_PREFIXES, "ds_load_")
VMEM_PREFIXES = ("global_", "buffer_", "scratch_", "flat_")
# Memory stores counted over the whole kernel (the epilogue's output stores), by mnemonic prefix.
STORE_PREFIXES = ("global_store_", "buffer_store_", "flat_store_")
# Scheduling hints the sequencer consumes (not issued to an ALU), counted apart from SALU.
HINT_MNEMONICS = ("s_delay_alu", "s_clause", "s_set_inst_prefetch_distance")

_SYMBOL_RE = re.compile(r"^([0-9a-fA-F]+) <([^>]+)>:$")
_INSTRUCTION_RE = re.compile(r"^\s+(\S+)([^/]*?)\s*//\s*([0-9A-Fa-f]+):")
_BRANCH_TARGET_RE = re.compile(r"<([^>+]+)(?:\+0x([0-9a-fA-F]+))?>\s*$")


class IsaReportError(RuntimeError):
    """No disassembler, or its output could not be read."""


@dataclass(frozen=True)
class Occupancy:
    waves_per_simd: float  # average resident waves per SIMD
    workgroups_per_wgp: int
    limited_by: str  # "vgprs", "lds" or "wave cap"


@dataclass(frozen=True)
class Instruction:
    offset: int  # from the kernel's start
    mnemonic: str
    branch_target: int | None  # offset of the target when it is a branch inside this kernel


@dataclass
class KernelReport:
    kernel: str
    target: str
    object_file: str
    vgprs: int
    sgprs: int
    vgpr_spills: int
    sgpr_spills: int
    scratch_bytes: int
    lds_bytes: int
    workgroup_size: int
    waves_per_simd: float
    occupancy_limited_by: str
    wmma_count: int
    wmma_mnemonics: dict[str, int]
    main_loop_wmma_count: int
    main_loop_loads: dict[str, int] = field(default_factory=dict)
    main_loop_found: bool = False
    main_loop_mixes: list[MainLoopMix] = field(default_factory=list)  # one per copy of the main loop
    stores: dict[str, int] = field(default_factory=dict)  # the whole kernel's stores, each branch once


def occupancy(target: GfxTarget, vgprs: int, lds_bytes: int, workgroup_size: int) -> Occupancy:
    """Resident waves per SIMD for a kernel, from the target's register file and LDS.

    - VGPRs: a wave gets its VGPR count rounded up to the allocation granule, so one SIMD
      holds floor(VGPR file / allocated VGPRs) waves, never more than the 16-wave cap.
    - Whole workgroups: a workgroup of ceil(size / 32) waves runs on one WGP (4 SIMDs in
      WGP mode), so the WGP holds floor(4 * waves per SIMD / waves per workgroup) of them.
    - LDS: those workgroups share the WGP's 128 KiB, floor(128 KiB / LDS per workgroup).
    The result is the resident workgroups' waves spread over the 4 SIMDs.
    """
    if vgprs < 1 or workgroup_size < 1 or lds_bytes < 0:
        raise ValueError(f"bad kernel resources: vgprs={vgprs}, lds={lds_bytes}, "
                         f"workgroup_size={workgroup_size}")
    if lds_bytes > target.lds_bytes_per_workgroup:
        return Occupancy(0.0, 0, "lds")  # cannot launch at all
    allocated = math.ceil(vgprs / target.vgpr_alloc_granule) * target.vgpr_alloc_granule
    vgpr_waves = target.vgprs_per_simd // allocated
    simd_waves, limited_by = (vgpr_waves, "vgprs") if vgpr_waves < MAX_WAVES_PER_SIMD else (
        MAX_WAVES_PER_SIMD, "wave cap")
    waves_per_workgroup = math.ceil(workgroup_size / WAVE_SIZE)
    workgroups = SIMDS_PER_WGP * simd_waves // waves_per_workgroup
    if lds_bytes and LDS_BYTES_PER_WGP // lds_bytes < workgroups:
        workgroups, limited_by = LDS_BYTES_PER_WGP // lds_bytes, "lds"
    return Occupancy(workgroups * waves_per_workgroup / SIMDS_PER_WGP, workgroups, limited_by)


def find_objdump(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    chosen = env.get(OBJDUMP_ENV, "").strip()
    for candidate in ([chosen] if chosen else list(OBJDUMP_CANDIDATES)):
        found = shutil.which(candidate)
        if found:
            return Path(found)
    raise IsaReportError(f"no llvm-objdump found (${OBJDUMP_ENV} or {', '.join(OBJDUMP_CANDIDATES)}); "
                         "install llvm-19 (`bash .ci/install-toolchain.sh`)")


def disassemble(objdump: Path, path: Path, target: str) -> dict[str, list[Instruction]]:
    """Instructions per symbol of the code object at `path`."""
    result = subprocess.run([str(objdump), "-d", f"--mcpu={target}", str(path)],
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise IsaReportError(f"{objdump} failed on {path}: {result.stderr.strip()}")
    return parse_disassembly(result.stdout)


def parse_disassembly(text: str) -> dict[str, list[Instruction]]:
    symbols: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    name, start = "", 0
    for line in text.splitlines():
        symbol = _SYMBOL_RE.match(line)
        if symbol:
            start, name = int(symbol.group(1), 16), symbol.group(2)
            current = symbols.setdefault(name, [])
            continue
        instruction = _INSTRUCTION_RE.match(line)
        if instruction is None or current is None:
            continue
        target = None
        branch = _BRANCH_TARGET_RE.search(line)
        if branch and branch.group(1) == name:
            target = int(branch.group(2) or "0", 16)
        current.append(Instruction(int(instruction.group(3), 16) - start,
                                   instruction.group(1), target))
    return symbols


def _loop_ranges(instructions: list[Instruction]) -> list[tuple[tuple[int, int, int], list[Instruction]]]:
    """Every range closed by a backward branch, with its (WMMAs, global loads, loads)."""
    ranges = []
    for branch in instructions:
        if branch.branch_target is None or branch.branch_target > branch.offset:
            continue
        body = [i for i in instructions if branch.branch_target <= i.offset <= branch.offset]
        wmma = sum(i.mnemonic.startswith("v_wmma_") for i in body)
        global_loads = sum(i.mnemonic.startswith(GLOBAL_LOAD_PREFIXES) for i in body)
        loads = sum(i.mnemonic.startswith(LOAD_PREFIXES) for i in body)
        ranges.append(((wmma, global_loads, loads), body))
    return ranges


def main_loops(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Every copy of the main loop, shortest first: the ranges closed by a backward branch
    with the most WMMAs, then the most global loads (the loop that streams memory), then the
    most loads, that overlap no shorter such range. A kernel that compiles one loop body per
    mode (the fused decode GEMMs: one per quantization mode) has one copy per mode.
    A range holding more WMMAs than a range with WMMAs inside it is not a loop around that one
    (a loop around a loop repeats the same WMMAs) but straight-line code the block layout
    closed with a backward jump, such as a loop and the one-off step after it: skipped."""
    ranges = _loop_ranges(instructions)

    def around_other_wmmas(key: tuple[int, int, int], body: list[Instruction]) -> bool:
        start, end = body[0].offset, body[-1].offset
        return any(0 < inner_key[0] < key[0] and start <= inner[0].offset and inner[-1].offset <= end
                   for inner_key, inner in ranges)

    ranges = [(key, body) for key, body in ranges if not around_other_wmmas(key, body)]
    if not ranges:
        return []
    best = max(key for key, _ in ranges)
    copies: list[list[Instruction]] = []
    for _, body in sorted((r for r in ranges if r[0] == best), key=lambda r: len(r[1])):
        start, end = body[0].offset, body[-1].offset
        if all(end < c[0].offset or start > c[-1].offset for c in copies):
            copies.append(body)
    return copies


def main_loop(instructions: list[Instruction]) -> list[Instruction] | None:
    """The instructions of the main loop (the shortest of main_loops(), the innermost)."""
    copies = main_loops(instructions)
    return copies[0] if copies else None


def loop_counts(loop: list[Instruction]) -> MainLoopMix:
    """A loop body's instructions by class, every branch of it counted once: WMMA, other VALU,
    LDS, VMEM (global, buffer, flat, scratch), scratch (the VMEM that spills), SALU (branches
    included), waits (s_waitcnt*) and scheduling hints (s_delay_alu, s_clause)."""
    counts = dict.fromkeys(("wmma", "valu", "lds", "vmem", "scratch", "salu", "waits", "hints"), 0)
    for instruction in loop:
        mnemonic = instruction.mnemonic
        if mnemonic.startswith("v_wmma_"):
            counts["wmma"] += 1
        elif mnemonic.startswith("s_waitcnt"):
            counts["waits"] += 1
        elif mnemonic.startswith(HINT_MNEMONICS):
            counts["hints"] += 1
        elif mnemonic.startswith("v_"):
            counts["valu"] += 1
        elif mnemonic.startswith("ds_"):
            counts["lds"] += 1
        elif mnemonic.startswith(VMEM_PREFIXES):
            counts["vmem"] += 1
            counts["scratch"] += mnemonic.startswith("scratch_")
        elif mnemonic.startswith("s_"):
            counts["salu"] += 1
    return MainLoopMix(**counts)


def report_kernel(metadata: KernelMetadata, instructions: list[Instruction], target: str,
                  object_file: str) -> KernelReport:
    fit = occupancy(get_target(target), metadata.vgpr_count, metadata.group_segment_fixed_size,
                    metadata.max_flat_workgroup_size)
    copies = main_loops(instructions)
    loop = copies[0] if copies else None
    loop_instructions = loop or []
    return KernelReport(
        kernel=metadata.name,
        target=target,
        object_file=object_file,
        vgprs=metadata.vgpr_count,
        sgprs=metadata.sgpr_count,
        vgpr_spills=metadata.vgpr_spill_count,
        sgpr_spills=metadata.sgpr_spill_count,
        scratch_bytes=metadata.private_segment_fixed_size,
        lds_bytes=metadata.group_segment_fixed_size,
        workgroup_size=metadata.max_flat_workgroup_size,
        waves_per_simd=fit.waves_per_simd,
        occupancy_limited_by=fit.limited_by,
        wmma_count=sum(i.mnemonic.startswith("v_wmma_") for i in instructions),
        wmma_mnemonics=dict(sorted(Counter(
            i.mnemonic for i in instructions if i.mnemonic.startswith("v_wmma_")).items())),
        main_loop_wmma_count=sum(i.mnemonic.startswith("v_wmma_") for i in loop_instructions),
        main_loop_loads=dict(sorted(Counter(
            i.mnemonic for i in loop_instructions if i.mnemonic.startswith(LOAD_PREFIXES)).items())),
        main_loop_found=loop is not None,
        main_loop_mixes=[loop_counts(copy) for copy in copies],
        stores=dict(sorted(Counter(i.mnemonic for i in instructions if i.mnemonic.startswith(STORE_PREFIXES)).items())),
    )


def isa_report(objects_dir: str | Path = DEFAULT_OBJECTS_DIR,
               targets: list[str] | None = None) -> list[KernelReport]:
    """One report per kernel and target for every <target>/*.hsaco under `objects_dir`."""
    objects_dir = Path(objects_dir)
    objdump = find_objdump()
    reports: list[KernelReport] = []
    for path in sorted(objects_dir.glob("gfx*/*.hsaco")):
        target = path.parent.name
        if targets is not None and target not in targets:
            continue
        code_object = read_code_object(path)
        symbols = disassemble(objdump, path, target)
        for name, metadata in sorted(code_object.kernels.items()):
            if name not in symbols:
                raise IsaReportError(f"{path}: kernel {name} missing from the disassembly")
            reports.append(report_kernel(metadata, symbols[name], target, path.name))
    return reports


# w8a8_i8_gemm_*, w8a8_f8_gemm_* and the fused decode GEMMs w8a8_i8q_{f16,bf16}_gemm_* (int8).
GEMM_KERNEL_RE = re.compile(r"^w8a8_(i8|f8)(?:q_(?:f16|bf16)|_moe_(?:f16|bf16))?_gemm_")
# The WMMA each GEMM kind must use (docs/architecture.md).
GEMM_WMMA = {"i8": "v_wmma_i32_16x16x16_iu8", "f8": "v_wmma_f32_16x16x16_f16"}
WIDE_GLOBAL_LOADS = ("global_load_b128", "buffer_load_b128")


def gemm_policy_violations(report: KernelReport) -> list[str]:
    """What a GEMM kernel breaks of our compile policy (empty if nothing): the kind's WMMA
    is used, no spills and no scratch, registers and LDS within the target's limits, at
    least one wave fits per SIMD, and the main loop reads global memory 128 bits wide."""
    kind = GEMM_KERNEL_RE.match(report.kernel)
    if kind is None:
        raise ValueError(f"{report.kernel} is not a GEMM kernel "
                         f"(w8a8_{{i8,f8,i8q_f16,i8q_bf16,i8_moe_f16,i8_moe_bf16}}_gemm_*)")
    where = f"{report.kernel} on {report.target}"
    target = get_target(report.target)
    problems = []
    wmma = GEMM_WMMA[kind.group(1)]
    if report.wmma_mnemonics.get(wmma, 0) == 0:
        problems.append(f"{where}: no {wmma} (WMMA used: {report.wmma_mnemonics or 'none'})")
    if report.vgpr_spills or report.sgpr_spills:
        problems.append(f"{where}: spills {report.vgpr_spills} VGPRs, {report.sgpr_spills} SGPRs")
    if report.scratch_bytes:
        problems.append(f"{where}: uses {report.scratch_bytes} bytes of scratch per lane")
    if report.vgprs > MAX_VGPRS_PER_WAVE:
        problems.append(f"{where}: {report.vgprs} VGPRs > {MAX_VGPRS_PER_WAVE}")
    if report.lds_bytes > target.lds_bytes_per_workgroup:
        problems.append(f"{where}: {report.lds_bytes} bytes of LDS > {target.lds_bytes_per_workgroup}")
    if report.waves_per_simd == 0:
        problems.append(f"{where}: a workgroup of {report.workgroup_size} threads with "
                        f"{report.vgprs} VGPRs does not fit ({report.occupancy_limited_by})")
    if not report.main_loop_found:
        problems.append(f"{where}: no main loop (no backward branch) found")
    else:
        global_loads = {m: n for m, n in report.main_loop_loads.items()
                        if m.startswith(GLOBAL_LOAD_PREFIXES)}
        narrow = {m: n for m, n in global_loads.items() if m not in WIDE_GLOBAL_LOADS}
        if not global_loads or narrow:
            problems.append(f"{where}: main loop global loads are not all 128-bit: "
                            f"{global_loads or 'none'}")
    return problems


def format_table(reports: list[KernelReport]) -> str:
    header = ("target", "kernel", "vgpr", "sgpr", "spill", "scratch", "lds", "wg",
              "waves/simd", "limit", "wmma", "loop wmma", "main loop loads", "stores")
    rows = [header]
    for r in reports:
        loads = ", ".join(f"{k}: {v}" for k, v in r.main_loop_loads.items())
        rows.append((r.target, r.kernel, str(r.vgprs), str(r.sgprs),
                     str(r.vgpr_spills + r.sgpr_spills), str(r.scratch_bytes), str(r.lds_bytes),
                     str(r.workgroup_size), f"{r.waves_per_simd:g}", r.occupancy_limited_by,
                     str(r.wmma_count), str(r.main_loop_wmma_count) if r.main_loop_found else "-",
                     loads if r.main_loop_found else "no loop",
                     ", ".join(f"{k}: {v}" for k, v in r.stores.items()) or "none"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _span(values: list[float]) -> str:
    low, high = f"{min(values):.1f}", f"{max(values):.1f}"
    return low if low == high else f"{low}-{high}"


MIX_CLASSES = ("valu", "salu", "lds", "vmem", "waits", "hints")


def format_mix_table(reports: list[KernelReport]) -> str:
    """The main loop's instructions per WMMA by class (static counts, every branch counted once);
    a kernel with several copies of its main loop (one per mode) shows the range over them."""
    header = ("target", "kernel", "loops", "loop wmma", *(f"{kind}/wmma" for kind in MIX_CLASSES))
    rows = [header]
    for r in reports:
        mixes = r.main_loop_mixes
        if not mixes:
            rows.append((r.target, r.kernel, "0") + ("-",) * (len(header) - 3))
            continue
        rows.append((r.target, r.kernel, str(len(mixes)), _span([m.wmma for m in mixes]).removesuffix(".0"),
                     *(_span([m.per_wmma(getattr(m, kind)) for m in mixes]) for kind in MIX_CLASSES)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_rdna_w8a8.tools.isa_report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("objects_dir", nargs="?", type=Path, default=DEFAULT_OBJECTS_DIR)
    parser.add_argument("--target", action="append", help="only this target (repeatable)")
    parser.add_argument("--kernel", help="only kernels whose name matches this regex")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--mix", action="store_true",
                        help="print the main loop's instructions per WMMA by class (static counts)")
    args = parser.parse_args(argv)
    try:
        reports = isa_report(args.objects_dir, args.target)
    except (IsaReportError, ValueError) as exc:
        print(f"isa_report: {exc}", file=sys.stderr)
        return 1
    if args.kernel:
        pattern = re.compile(args.kernel)
        reports = [r for r in reports if pattern.search(r.kernel)]
    if not reports:
        print(f"isa_report: no kernels in {args.objects_dir} "
              "(build them with `python -m vllm_rdna_w8a8.build`)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=1))
    else:
        print(format_mix_table(reports) if args.mix else format_table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
