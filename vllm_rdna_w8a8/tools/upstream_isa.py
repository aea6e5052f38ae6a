"""Upstream vLLM's gfx11 int8 GEMM (`scaled_mm_kernel` of `triton_scaled_mm.py`, its M-only
tile heuristic) beside ours, at the ISA level, for the same shapes.

    python -m vllm_rdna_w8a8.tools.upstream_isa [--target gfx1100 ...] [--shape MxNxK ...]

Upstream's kernel is compiled without a GPU by the installed Triton's AMD backend
(`triton.compile(ASTSource(...), target=GPUTarget("hip", <target>, 32))`), specialised as a
launch on contiguous int8 operands is: unit strides constant, pointers and the other integer
arguments 16-divisible (`tt.divisibility`), int32 accumulator, per-token / per-channel scales,
fp16 output. Ours are the shipped code objects, the kernel our dispatch launches for each
shape (the fused quantize + GEMM kernel at M <= 16). Both are read by `isa_report`'s
disassembly reader and counted by `main_loop_mix`. The table prints each figure as
"upstream / ours"; a row where either side spills VGPRs is flagged. Compiler output, not a
measurement.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from vllm_rdna_w8a8.build.compile import DEFAULT_OBJECTS_DIR
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.build.targets import get_target
from vllm_rdna_w8a8.dispatch.perf_model import MainLoopMix
from vllm_rdna_w8a8.tools.isa_report import disassemble, find_objdump, isa_report, occupancy
from vllm_rdna_w8a8.tools.main_loop_mix import kernel_mix

UPSTREAM_MODULE = "vllm.model_executor.layers.quantization.compressed_tensors"
UPSTREAM_FILE = "triton_scaled_mm.py"
# (M, N, K): every upstream heuristic tile (M <= 32 with N < 8192 and N >= 8192, M <= 64,
# M <= 128, larger) and a decode step (M = 1); N = K = 4096, and Llama-3-8B's gate_up
# (N = 28672) for the wide decode tile.
DEFAULT_SHAPES = ((1, 4096, 4096), (16, 4096, 4096), (16, 28672, 4096), (64, 4096, 4096),
                  (128, 4096, 4096), (4096, 4096, 4096))


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
    scratch_bytes: int  # per lane
    lds_bytes: int
    waves_per_simd: float


@dataclass(frozen=True)
class Side:
    """One kernel's figures in the table: its resources and its main loop's mix."""

    kernel: str
    resources: Resources
    mix: MainLoopMix


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


COLUMNS = ("target", "M x N x K", "upstream tile / our kernel", "VGPRs", "VGPR spills", "scratch B/lane", "LDS B",
           "waves/SIMD", "loop WMMA", "VALU/WMMA", "LDS/WMMA", "VMEM/WMMA", "scratch/WMMA", "SALU/WMMA",
           "waits/WMMA", "flag")
PER_WMMA = ("valu", "lds", "vmem", "scratch", "salu", "waits")


def _pair(upstream: float, ours: float, digits: int = 0) -> str:
    return f"{upstream:.{digits}f} / {ours:.{digits}f}"


def spill_flag(upstream: Side, ours: Side) -> str:
    """What a reader must not miss on a row: which side spills VGPRs (and to how much scratch)."""
    flags = [f"{who} spills {side.resources.vgpr_spills} VGPRs ({side.resources.scratch_bytes} B scratch/lane)"
             for who, side in (("upstream", upstream), ("OURS", ours)) if side.resources.vgpr_spills]
    return "; ".join(flags)


def table_row(shape: tuple[int, int, int], upstream: Side, ours: Side) -> str:
    up, our = upstream.resources, ours.resources
    cells = [up.target, "x".join(map(str, shape)), f"{upstream.kernel} / {ours.kernel}",
             _pair(up.vgprs, our.vgprs), _pair(up.vgpr_spills, our.vgpr_spills),
             _pair(up.scratch_bytes, our.scratch_bytes), _pair(up.lds_bytes, our.lds_bytes),
             f"{up.waves_per_simd:g} / {our.waves_per_simd:g}", _pair(upstream.mix.wmma, ours.mix.wmma)]
    cells += [_pair(upstream.mix.per_wmma(getattr(upstream.mix, kind)), ours.mix.per_wmma(getattr(ours.mix, kind)), 1)
              for kind in PER_WMMA]
    cells.append(spill_flag(upstream, ours))
    return "| " + " | ".join(cells) + " |"


def upstream_side(module: ModuleType, tile: tuple[int, int, int], target: str, objdump: Path, work_dir: Path) -> Side:
    path, resources = compile_upstream(module, tile, target, work_dir)
    symbols = disassemble(objdump, path, target)
    if len(symbols) != 1:
        raise ValueError(f"Triton's code object for {tile} on {target} holds {len(symbols)} kernels, not 1")
    mix = kernel_mix(next(iter(symbols.values())))
    if mix is None:
        raise ValueError(f"upstream's {tile} on {target}: no main loop with WMMAs")
    return Side("x".join(map(str, tile)), resources, mix)


def our_kernel(target: str, m: int, n: int, k: int) -> str:
    """The GEMM kernel our int8 path launches for the shape (fp16 activations)."""
    from vllm_rdna_w8a8.dispatch import fused_decode_config, pick_gemm_config

    fused = fused_decode_config(target, m, n, k)
    return fused.fused_kernel_name("f16") if fused is not None else pick_gemm_config(target, m, n, k, "i8").kernel_name("i8")


def comparison_table(targets: list[str], shapes: tuple[tuple[int, int, int], ...] = DEFAULT_SHAPES) -> str:
    objdump = find_objdump()
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    reports = {(r.target, r.kernel): r for r in isa_report(targets=targets)}
    symbols: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        module = _upstream_kernel_module(work_dir)
        upstream: dict[tuple[str, tuple[int, int, int]], Side] = {}
        for target in targets:
            for m, n, k in shapes:
                tile = upstream_tile(m, n)
                if (target, tile) not in upstream:
                    upstream[(target, tile)] = upstream_side(module, tile, target, objdump, work_dir)
                name = our_kernel(target, m, n, k)
                report = reports[(target, name)]
                if (target, report.object_file) not in symbols:
                    symbols[(target, report.object_file)] = disassemble(
                        objdump, DEFAULT_OBJECTS_DIR / target / report.object_file, target)
                ours = Side(name.removeprefix("w8a8_"),
                            Resources(target, report.vgprs, report.vgpr_spills, report.scratch_bytes,
                                      report.lds_bytes, report.waves_per_simd),
                            kernel_mix(symbols[(target, report.object_file)][name]))
                lines.append(table_row((m, n, k), upstream[(target, tile)], ours))
    return "\n".join(lines)


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"a shape is MxNxK with positive integers, got {text!r}")
    m, n, k = map(int, parts)
    return m, n, k


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_rdna_w8a8.tools.upstream_isa", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", choices=sorted(GFX11_TARGETS),
                        help="gfx11 target (repeatable; default all six)")
    parser.add_argument("--shape", action="append", type=_shape,
                        help="MxNxK (repeatable; default: each upstream heuristic tile, see DEFAULT_SHAPES)")
    args = parser.parse_args(argv)
    print(comparison_table(args.target or sorted(GFX11_TARGETS), tuple(args.shape or DEFAULT_SHAPES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
