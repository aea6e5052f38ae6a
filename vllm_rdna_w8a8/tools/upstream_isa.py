"""Upstream vLLM's gfx11 int8 GEMM (`scaled_mm_kernel` of `triton_scaled_mm.py`, its M-only
tile heuristic) beside ours, at the ISA level, for the same shapes.

    python -m vllm_rdna_w8a8.tools.upstream_isa [--target gfx1100 ...] [--n 4096 --k 4096]

Upstream's kernel is compiled without a GPU by the installed Triton's AMD backend
(`triton.compile(ASTSource(...), target=GPUTarget("hip", <target>, 32))`), specialised as a
launch on contiguous int8 operands is: unit strides constant, pointers and the other integer
arguments 16-divisible (`tt.divisibility`), int32 accumulator, per-token / per-channel scales,
fp16 output. Ours are the shipped code objects, the config our dispatch picks for each M.
Both are read by `isa_report`'s code-object and disassembly readers. Compiler output, not a
measurement.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from vllm_rdna_w8a8.build.compile import DEFAULT_OBJECTS_DIR
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.build.targets import get_target
from vllm_rdna_w8a8.tools.isa_report import (
    KernelReport,
    disassemble,
    find_objdump,
    isa_report,
    main_loop,
    occupancy,
)

UPSTREAM_MODULE = "vllm.model_executor.layers.quantization.compressed_tensors"
UPSTREAM_FILE = "triton_scaled_mm.py"
# M of each upstream heuristic bucket (M <= 32, <= 64, <= 128, larger) and of a decode step.
REPRESENTATIVE_M = (1, 16, 64, 128, 4096)


def upstream_tile(m: int, n: int) -> tuple[int, int, int]:
    """`triton_scaled_mm`'s heuristic (vLLM 0.32/0.33): (BLOCK_M, BLOCK_N, BLOCK_K) from M and N."""
    bucket = max(32, 1 << (m - 1).bit_length())
    if bucket <= 32:
        return (64, 64, 256) if n < 8192 else (64, 128, 256)
    if bucket <= 64:
        return (64, 64, 256)
    if bucket <= 128:
        return (64, 128, 128)
    return (128, 128, 128)


def _upstream_kernel_module(work_dir: Path) -> ModuleType:
    """upstream's `scaled_mm_kernel` under the real `triton.jit` (vLLM's CPU build replaces
    triton by a placeholder when there is no CPU backend, so the function is re-read)."""
    import importlib

    source_path = Path(importlib.import_module(UPSTREAM_MODULE).__file__).parent / UPSTREAM_FILE
    source = source_path.read_text()
    node = next(n for n in ast.parse(source).body
                if isinstance(n, ast.FunctionDef) and n.name == "scaled_mm_kernel")
    module_path = work_dir / "upstream_scaled_mm_kernel.py"
    module_path.write_text("import triton\nimport triton.language as tl\n\n\n@triton.jit\n"
                           + ast.get_source_segment(source, node) + "\n")
    spec = importlib.util.spec_from_file_location("upstream_scaled_mm_kernel", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SIGNATURE = {
    "a_ptr": "*i8", "b_ptr": "*i8", "scale_a_ptr": "*fp32", "scale_b_ptr": "*fp32", "c_ptr": "*fp16",
    "bias_ptr": "*fp16", "M": "i32", "N": "i32", "K": "i32", "stride_am": "i32", "stride_ak": "constexpr",
    "stride_bk": "constexpr", "stride_bn": "i32", "stride_cm": "i32", "stride_cn": "constexpr",
    **{name: "constexpr" for name in ("ACCUMULATOR_DTYPE", "BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K",
                                      "BLOCK_SIZE_SCALE_A", "BLOCK_SIZE_SCALE_B", "USE_TD", "B_T")},
}
# Arguments a launch on 16-byte aligned operands with 16-divisible sizes specialises as such.
_DIVISIBLE = ("a_ptr", "b_ptr", "scale_a_ptr", "scale_b_ptr", "c_ptr", "bias_ptr", "N", "K",
              "stride_am", "stride_bn", "stride_cm")


@dataclass(frozen=True)
class Resources:
    target: str
    vgprs: int
    vgpr_spills: int
    scratch_bytes: int
    lds_bytes: int
    waves_per_simd: float


def _note(assembly: str, key: str) -> int:
    match = re.search(rf"\.{key}:\s+(\d+)", assembly)
    if match is None:
        raise ValueError(f"no .{key} in Triton's AMDGPU assembly")
    return int(match.group(1))


def compile_upstream(module: ModuleType, tile: tuple[int, int, int], target: str,
                     work_dir: Path) -> tuple[Path, Resources]:
    """The code object of upstream's kernel for `tile` on `target`, and its resources from the
    assembly's metadata notes (Triton writes a target triple our code-object reader refuses)."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    block_m, block_n, block_k = tile
    constexprs = {"stride_ak": 1, "stride_bk": 1, "stride_cn": 1, "ACCUMULATOR_DTYPE": tl.int32,
                  "BLOCK_SIZE_M": block_m, "BLOCK_SIZE_N": block_n, "BLOCK_SIZE_K": block_k,
                  "BLOCK_SIZE_SCALE_A": block_m, "BLOCK_SIZE_SCALE_B": block_n, "USE_TD": False, "B_T": False}
    names = list(_SIGNATURE)
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in _DIVISIBLE}
    kernel = triton.compile(ASTSource(fn=module.scaled_mm_kernel, signature=_SIGNATURE, constexprs=constexprs,
                                      attrs=attrs), target=GPUTarget("hip", target, 32))
    path = work_dir / target / f"upstream_m{block_m}n{block_n}k{block_k}.hsaco"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(kernel.asm["hsaco"])
    assembly = kernel.asm["amdgcn"]
    vgprs, lds = _note(assembly, "vgpr_count"), kernel.metadata.shared  # Triton's LDS is dynamic
    fit = occupancy(get_target(target), vgprs, lds, kernel.metadata.num_warps * 32)
    return path, Resources(target, vgprs, _note(assembly, "vgpr_spill_count"),
                           _note(assembly, "private_segment_fixed_size"), lds, fit.waves_per_simd)


@dataclass(frozen=True)
class LoopMix:
    """Main-loop instructions per WMMA, by class."""

    wmma: int
    valu: float
    lds: float
    vmem: float
    salu: float
    waits: float


def loop_mix(instructions) -> LoopMix:
    loop = main_loop(instructions) or []
    kinds = Counter()
    for instruction in loop:
        mnemonic = instruction.mnemonic
        if mnemonic.startswith("v_wmma_"):
            kinds["wmma"] += 1
        elif mnemonic.startswith("s_waitcnt"):
            kinds["waits"] += 1
        elif mnemonic.startswith("v_"):
            kinds["valu"] += 1
        elif mnemonic.startswith("ds_"):
            kinds["lds"] += 1
        elif mnemonic.startswith(("global_", "buffer_", "scratch_", "flat_")):
            kinds["vmem"] += 1
        elif mnemonic.startswith("s_"):
            kinds["salu"] += 1
    per = max(kinds["wmma"], 1)
    return LoopMix(kinds["wmma"], kinds["valu"] / per, kinds["lds"] / per, kinds["vmem"] / per,
                   kinds["salu"] / per, kinds["waits"] / per)


def _row(who: str, m: int, tile: str, report: KernelReport | Resources, mix: LoopMix) -> str:
    return (f"| {report.target} | {m} | {who} | {tile} | {report.vgprs} | {report.vgpr_spills} | "
            f"{report.scratch_bytes} | {report.lds_bytes} | {report.waves_per_simd:g} | {mix.wmma} | "
            f"{mix.valu:.1f} | {mix.lds:.1f} | {mix.vmem:.1f} | {mix.salu:.1f} | {mix.waits:.1f} |")


def comparison_table(targets: list[str], n: int, k: int) -> str:
    from vllm_rdna_w8a8.dispatch import pick_gemm_config

    objdump = find_objdump()
    lines = ["| target | M | kernel | tile | VGPRs | VGPR spills | scratch B/lane | LDS B | waves/SIMD | "
             "loop WMMA | VALU/WMMA | LDS/WMMA | VMEM/WMMA | SALU/WMMA | waits/WMMA |",
             "|" + "---|" * 15]
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        module = _upstream_kernel_module(work_dir)
        ours = {(r.target, r.kernel): r for r in isa_report(targets=targets)}
        compiled: dict[tuple[str, tuple[int, int, int]], tuple[Resources, LoopMix]] = {}
        for target in targets:
            for m in REPRESENTATIVE_M:
                tile = upstream_tile(m, n)
                if (target, tile) not in compiled:
                    path, resources = compile_upstream(module, tile, target, work_dir)
                    symbols = disassemble(objdump, path, target)
                    compiled[(target, tile)] = resources, loop_mix(next(iter(symbols.values())))
                lines.append(_row("upstream Triton", m, "x".join(map(str, tile)), *compiled[(target, tile)]))
                config = pick_gemm_config(target, m, n, k, "i8")
                name = config.fused_kernel_name("f16") if config.is_decode and m <= 16 else config.kernel_name("i8")
                report = ours[(target, name)]
                object_path = DEFAULT_OBJECTS_DIR / target / report.object_file
                mix = loop_mix(disassemble(objdump, object_path, target)[name])
                lines.append(_row("ours", m, name.removeprefix("w8a8_"), report, mix))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_rdna_w8a8.tools.upstream_isa", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", choices=sorted(GFX11_TARGETS),
                        help="gfx11 target (repeatable; default all six)")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--k", type=int, default=4096)
    args = parser.parse_args(argv)
    print(comparison_table(args.target or sorted(GFX11_TARGETS), args.n, args.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
