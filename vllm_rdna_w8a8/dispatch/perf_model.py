"""Analytic performance model of the GEMM tile configs on each gfx11 target.

Everything this module returns is a PREDICTION from paper peaks and stated model
assumptions, never a measurement. It serves two purposes: the dispatcher's choice
where no table entry matches a shape, and the shipped per-target tables until
hardware measurements replace them.

For one config and one shape (M, N, K) the predicted time is the largest of
  compute: output tiles on the busiest CU x ops per tile (padding included) at
           512 ops/clk/CU x the sustained WMMA fraction, scaled by the SIMD use the
           resident waves allow and by the wave's WMMA share of its issue slots
           (operand fragment loads cost);
  DRAM:    bytes that must cross the DRAM interface (A, B, output, scales, each
           once, plus the re-reads that miss L2, below), at the target's DRAM bandwidth x the sustained DRAM fraction,
           scaled down when the bytes the resident waves keep in flight cannot
           cover the DRAM latency;
  L2:      bytes the busiest CU pulls from L2 (its tiles' A and B panels).
Operands are read again by every tile that needs them: B by each of the tiles_m row tiles
(a stream_weights tile, 16 rows, streams all of B again per 16 rows), A by each of the
tiles_n column tiles. Those re-reads (`reread_bytes`) are served by the level the operand
fits in (`reread_level`: the target's L2, else its Infinity Cache (MALL), else DRAM); beyond
L2 they cross the DRAM term's interface (MALL hits at DRAM bandwidth: no MALL bandwidth is
sourced, `CacheFacts`).
The WMMA share of a wave's issue time comes from the static instruction mix of the compiled
main loop, shipped in main_loop_mix.json (`kernel_mix`). The fused quantize + int8 GEMM
launch (FUSED_KIND, decode rows at M <= 16) reads fp16/bf16 A and keeps no int8 A and no
activation scales in memory (`fused_gemm_bytes`).
B's share of the DRAM and L2 terms is served at a reduced rate when its row stride is a
multiple of 2048 bytes (gfx11 cache aliasing, see `cache_aliasing_pad`); our weights are
stored padded off such strides, so by default no prediction pays it.
Wave quantization enters through the tiles on the busiest CU, tile padding through
the padded ops, occupancy through resident workgroups per CU (estimated from the tile
geometry, `assumed_occupancy`, unless the caller passes measured figures: table
generation can read them from the ISA report, `tune.generate_tables.occupancies_for`).
A grouped MoE launch (`predict_grouped`, kinds MOE_KINDS) gets the same three terms over its own
grid: every active expert's weights read, each expert's rows padded to BLOCK_M, active experts x
row blocks x N tiles spread over the CUs, the MoE kernel's compiled main loop.
This module runs in serving processes and never starts a tool.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping

from vllm_rdna_w8a8.build.targets import MAX_WAVES_PER_SIMD, GfxTarget, get_target
from vllm_rdna_w8a8.dispatch.model_shapes import MoeDims, expected_active_experts, expert_shapes
from vllm_rdna_w8a8.dispatch.tile_configs import (
    FUSED_INPUT_DTYPES,
    FUSED_KIND,
    FUSED_QUANT_MAX_M,
    KERNEL_KINDS,
    LDS_BYTES_PER_WORKGROUP,
    MOE_ACTIVATION_DTYPES,
    MOE_KINDS,
    WMMA_TILE,
    TileConfig,
)

# Peak WMMA rate per CU per clock, identical for v_wmma_i32_16x16x16_iu8 and
# v_wmma_f32_16x16x16_f16 on RDNA3 (AMD RDNA3 ISA guide; rdna3-wmma.md): one
# 16x16x16 WMMA (8192 ops) per 32 clocks on each of the CU's two SIMDs.
PEAK_OPS_PER_CLK_PER_CU = 512
SIMDS_PER_CU = 2
WMMA_ISSUE_CLK = 32


_MIB = 1024 * 1024


@dataclass(frozen=True)
class DevicePeaks:
    """Paper figures of the largest product of a target (AMD product spec pages) and its
    cache sizes (ROCm's GPU specification table)."""

    product: str
    boost_clock_ghz: float
    dram_gb_per_s: float
    l2_bytes: int
    mall_bytes: int  # the last-level Infinity Cache (MALL); 0 where the target has none


# Sources: AMD's product specification pages (amd.com/en/products/graphics/desktops/radeon
# and .../processors/laptop): boost clock; DRAM bandwidth = memory data rate x bus width
# (7900 XTX: 20 Gbps x 384 bit; 7800 XT: 19.5 Gbps x 256 bit; 7600: 18 Gbps x 128 bit;
# APUs: LPDDR5X-7500 x 128 bit for 780M and 890M systems (DDR5-5600 systems have 89.6 GB/s),
# LPDDR5X-8000 x 256 bit for Strix Halo).
# Cache sizes: ROCm's "AMD GPU specifications" table (rocm.docs.amd.com/en/latest/reference/gpu-specs.html,
# docs/reference/gpu-specs.rst of ROCm/rocm-docs), columns "Infinity Cache (MiB)" and "L2 Cache (MiB)":
# RX 7900 XTX 96 / 6, RX 7800 XT 64 / 4, RX 7600 32 / 2, Radeon 780M N/A / 2, Radeon 890M N/A / 2,
# Radeon 8060S (Ryzen AI Max+ 395) 32 / 2.
DEVICE_PEAKS: dict[str, DevicePeaks] = {
    "gfx1100": DevicePeaks("Radeon RX 7900 XTX", 2.5, 960.0, 6 * _MIB, 96 * _MIB),
    "gfx1101": DevicePeaks("Radeon RX 7800 XT", 2.43, 624.0, 4 * _MIB, 64 * _MIB),
    "gfx1102": DevicePeaks("Radeon RX 7600", 2.655, 288.0, 2 * _MIB, 32 * _MIB),
    "gfx1103": DevicePeaks("Radeon 780M", 2.7, 120.0, 2 * _MIB, 0),
    "gfx1150": DevicePeaks("Radeon 890M", 2.9, 120.0, 2 * _MIB, 0),
    "gfx1151": DevicePeaks("Radeon 8060S", 2.9, 256.0, 2 * _MIB, 32 * _MIB),
}
# Levels that serve an operand's re-reads (`reread_level`). No sustained MALL bandwidth is
# sourced for any target (AMD's 5.3 TB/s for Navi 31 is the peak of its die-to-die links, not of
# the cache), so the model charges MALL hits at DRAM bandwidth: conservative, it only says that a
# re-read beyond L2 is not free.
REREAD_LEVELS = ("l2", "mall", "dram")
# Row tiles per group of the kernels' tile order (kTileGroupM in kernels/common/gemm.h,
# grouped_tile): workgroup ids sweep every column tile of a group of this many row tiles.
TILE_GROUP_M = 8

# Model assumptions (not specs, not measured here; change them when hardware says otherwise):
# Sustained fractions of the paper peaks, from third-party RX 7900 measurements collected in
# the team's rdna3-wmma.md notes (WMMA loops ~93-100 of 123 TOPS; DRAM ~830 of 960 GB/s),
# assumed to carry over to every gfx11 target. Floors use the paper peaks; predictions these.
ASSUMED_SUSTAINED_WMMA_FRACTION = 0.78
ASSUMED_SUSTAINED_DRAM_FRACTION = 0.86
ASSUMED_DRAM_LATENCY_NS = 500.0  # bytes in flight needed = bandwidth x latency (Little's law)
ASSUMED_L2_BYTES_PER_CLK_PER_CU = 64.0
# Issue cost of a main-loop instruction in a wave's time, per class of the compiled loop's static
# mix (MAIN_LOOP_MIX_PATH): a wave32 VALU instruction takes the SIMD's VALU one clock (as a WMMA
# takes it 32); SALU, LDS and VMEM instructions one issue clock each; waits and scheduling hints
# nothing (latency is the DRAM term's business). Every branch of the loop counts once.
ASSUMED_VALU_CLK = 1
ASSUMED_ISSUE_CLK = 1
# Only for a kernel missing from the mix file (a row added to gemm_configs.def and not yet
# compiled and recorded): issue cost of one 16x16 operand fragment per wave, and of widening
# it from e4m3 to f16.
ASSUMED_FRAGMENT_LOAD_CLK = 8
ASSUMED_F8_CONVERT_CLK = 16
ASSUMED_OVERHEAD_VGPRS = 32  # addresses, loop counters, epilogue temporaries
# Rate of B operand traffic (DRAM and L2) when B's row stride aliases, as a fraction of the
# unaliased rate. Placeholder: vLLM's gfx11 stride pad (vllm-project/vllm PR 55090, fp16 weights)
# measured by its author end to end on gfx1151: up to 13% lower time to first token and 3%
# lower time per output token; no kernel-level figure exists for our kernels.
ASSUMED_ALIASED_B_BANDWIDTH_FRACTION = 0.87
OUTPUT_BYTES = 2  # fp16 / bf16
SCALE_BYTES = 4
ACTIVATION_BYTES = 2  # the fp16 / bf16 rows the fused decode kernel reads and quantizes itself
# What `predict` models: the int8 and fp8 GEMMs, and the fused quantize + int8 GEMM launch;
# `predict_grouped` the grouped MoE GEMM launches (MOE_KINDS).
MODEL_KINDS = (*KERNEL_KINDS, FUSED_KIND)


# gfx11 L2/MALL channel aliasing. The channel of an access is hashed from address bits
# that a row stride which is a multiple of 2048 bytes leaves unchanged, so the rows a
# workgroup loads at one k offset (B's block_n rows, every workgroup's at once) queue on
# the same channels instead of spreading over all of them. One 128-byte cache line more
# per row moves each row to another channel and keeps rows cache-line aligned. Same rule
# and numbers as vLLM 0.33's `cache_aliasing_pad_elems` / `maybe_pad_weight_avoid_cache_aliasing`
# (vllm/model_executor/layers/utils.py), which pads unquantized weights on gfx11.
ALIASING_STRIDE_BYTES = 2048
CACHE_LINE_BYTES = 128


def aliases(row_bytes: int) -> bool:
    """Whether rows `row_bytes` apart collide on gfx11's L2/MALL channels."""
    return row_bytes % ALIASING_STRIDE_BYTES == 0


def cache_aliasing_pad(row_bytes: int) -> int:
    """Bytes to add to a row stride of `row_bytes` so that it stops aliasing on gfx11: one
    cache line where it aliases, else 0."""
    return CACHE_LINE_BYTES if aliases(row_bytes) else 0


# Static main-loop instruction mix of every compiled GEMM kernel on every target, shipped with the
# package (written by `python -m vllm_rdna_w8a8.tools.upstream_isa --write-mix` from the code
# objects; serving only reads this file, it never starts an LLVM tool).
MAIN_LOOP_MIX_PATH = Path(__file__).resolve().parent / "main_loop_mix.json"
MAIN_LOOP_MIX_FORMAT = 1


@dataclass(frozen=True)
class MainLoopMix:
    """Static instruction counts of one kernel's main loop body by class (`isa_report.loop_counts`)."""

    wmma: int
    valu: int
    lds: int
    vmem: int
    scratch: int  # VMEM instructions that spill to scratch (included in vmem)
    salu: int
    waits: int
    hints: int

    def per_wmma(self, count: int) -> float:
        return count / max(self.wmma, 1)

    def issue_clk(self) -> float:
        """A wave's issue clocks for one pass of the loop body, WMMAs included."""
        return (self.wmma * WMMA_ISSUE_CLK + self.valu * ASSUMED_VALU_CLK
                + (self.salu + self.lds + self.vmem) * ASSUMED_ISSUE_CLK)


def parse_main_loop_mixes(data: object) -> dict[tuple[str, str], MainLoopMix]:
    """{(target, kernel): mix} from the decoded mix file; ValueError naming the problem."""
    if not isinstance(data, dict) or data.get("format_version") != MAIN_LOOP_MIX_FORMAT:
        raise ValueError(f"{MAIN_LOOP_MIX_PATH.name}: not a format {MAIN_LOOP_MIX_FORMAT} main-loop mix file")
    names = [field.name for field in fields(MainLoopMix)]
    mixes: dict[tuple[str, str], MainLoopMix] = {}
    for target, kernels in data.get("kernels", {}).items():
        for kernel, counts in kernels.items():
            if (not isinstance(counts, dict) or sorted(counts) != sorted(names)
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values())):
                raise ValueError(f"{MAIN_LOOP_MIX_PATH.name}: {target} {kernel}: expected counts {names}")
            mixes[(target, kernel)] = MainLoopMix(**counts)
    return mixes


@functools.lru_cache(maxsize=1)
def shipped_main_loop_mixes() -> dict[tuple[str, str], MainLoopMix]:
    """The shipped mixes; empty when the file is absent (the fragment placeholders serve)."""
    if not MAIN_LOOP_MIX_PATH.is_file():
        return {}
    return parse_main_loop_mixes(json.loads(MAIN_LOOP_MIX_PATH.read_text()))


@dataclass(frozen=True)
class Occupancy:
    """What the model needs to know about one compiled kernel."""

    waves_per_simd: float  # the ISA report averages resident waves over a WGP's SIMDs
    lds_bytes: int
    global_bytes_per_wave_iteration: int  # bytes one wave loads per main-loop iteration
    source: str  # "isa_report" or "assumed"


def assumed_occupancy(target: GfxTarget, config: TileConfig, kind: str = "i8") -> Occupancy:
    """Occupancy estimated from the tile geometry when no code object is at hand.

    VGPRs per lane: 8 per 16x16 int32 accumulator, 4 per operand fragment double
    buffered, plus ASSUMED_OVERHEAD_VGPRS; allocated in the target's granule from its
    VGPR file, capped at 16 waves per SIMD. LDS: the kernel's own formula (the fused
    kernel's for FUSED_KIND). Bytes per wave per iteration: the workgroup's A and B slices
    shared by its waves.
    """
    fragments_m = config.wave_tile_m // WMMA_TILE
    fragments_n = config.wave_tile_n // WMMA_TILE
    vgprs = config.accumulator_vgprs + 2 * 4 * (fragments_m + fragments_n) + ASSUMED_OVERHEAD_VGPRS
    granule = target.vgpr_alloc_granule
    allocated = -(-vgprs // granule) * granule
    waves_per_simd = min(MAX_WAVES_PER_SIMD, target.vgprs_per_simd // allocated)
    global_bytes = (config.block_m + config.block_n) * config.block_k // config.waves
    lds_bytes = config.fused_lds_bytes if kind == FUSED_KIND else config.lds_bytes
    return Occupancy(waves_per_simd, lds_bytes, global_bytes, "assumed")


def resident_workgroups_per_cu(occupancy: Occupancy, config: TileConfig) -> int:
    """Workgroups one CU holds at once: limited by waves per SIMD and by LDS
    (two CUs of a WGP share 128 KiB, so 64 KiB per CU)."""
    by_waves = int(occupancy.waves_per_simd * SIMDS_PER_CU // config.waves)
    by_lds = LDS_BYTES_PER_WORKGROUP // max(occupancy.lds_bytes, 1)
    return min(by_waves, by_lds)


def moe_operand_kind(kind: str) -> str:
    """"i8" or "f8" of a MoE kind ("i8_moe" -> "i8")."""
    if kind not in MOE_KINDS:
        raise ValueError(f"MoE kernel kind must be one of {MOE_KINDS}, got {kind!r}")
    return kind.removesuffix("_moe")


def _activation_variants(config: TileConfig, kind: str) -> list[str]:
    """The kernels one launch of `kind` may run, one per activation dtype (a single kernel for
    the plain GEMMs, which read int8 / fp8 A whatever the model's dtype)."""
    if kind == FUSED_KIND:
        return [config.fused_kernel_name(dtype) for dtype in FUSED_INPUT_DTYPES]
    if kind in MOE_KINDS:
        return [config.moe_kernel_name(dtype, moe_operand_kind(kind)) for dtype in MOE_ACTIVATION_DTYPES]
    return [config.kernel_name(kind)]


def model_kernel_name(config: TileConfig, kind: str) -> str:
    """The kernel a prediction of `kind` stands for (the f16 one of a fused or MoE pair)."""
    return _activation_variants(config, kind)[0]


def kernel_mix(target_name: str, config: TileConfig, kind: str) -> MainLoopMix | None:
    """The shipped main-loop mix of `config`'s kernel of `kind` on the target (for the fused and
    MoE launches, the costlier per WMMA of the f16 and bf16 kernels); None when not recorded."""
    mixes = shipped_main_loop_mixes()
    found = [mixes.get((target_name, name)) for name in _activation_variants(config, kind)]
    if any(mix is None or mix.wmma == 0 for mix in found):
        return None
    return max(found, key=lambda mix: mix.issue_clk() / mix.wmma)


def wmma_issue_share(config: TileConfig, kind: str, mix: MainLoopMix | None = None) -> float:
    """Fraction of a wave's issue time spent in WMMA. From the compiled main loop's mix when
    given (`MainLoopMix.issue_clk`); else the placeholder: per 16-deep k step a wave issues
    (wave_tile_m/16) x (wave_tile_n/16) WMMAs and loads one fragment per 16 rows of A and
    per 16 columns of B (widened on the VALU for fp8)."""
    if mix is not None and mix.wmma:
        return mix.wmma * WMMA_ISSUE_CLK / mix.issue_clk()
    fragments_m = config.wave_tile_m // WMMA_TILE
    fragments_n = config.wave_tile_n // WMMA_TILE
    wmma_clk = fragments_m * fragments_n * WMMA_ISSUE_CLK
    fp8 = kind in ("f8", MOE_KINDS[1])  # the MoE kinds' order follows KERNEL_KINDS
    fragment_clk = ASSUMED_FRAGMENT_LOAD_CLK + (ASSUMED_F8_CONVERT_CLK if fp8 else 0)
    return wmma_clk / (wmma_clk + (fragments_m + fragments_n) * fragment_clk)


@dataclass(frozen=True)
class Floors:
    """The two lower bounds of a shape on a target, from paper peaks."""

    compute_us: float  # useful ops / peak WMMA rate
    memory_us: float  # bytes read and written once / DRAM bandwidth
    ops: int
    bytes: int

    @property
    def binding(self) -> str:
        return "compute" if self.compute_us >= self.memory_us else "memory"


def peak_ops_per_s(target_name: str) -> float:
    target = get_target(target_name)
    return target.cu_count * PEAK_OPS_PER_CLK_PER_CU * DEVICE_PEAKS[target.name].boost_clock_ghz * 1e9


def dram_bytes_per_s(target_name: str) -> float:
    return DEVICE_PEAKS[get_target(target_name).name].dram_gb_per_s * 1e9


def gemm_ops(m: int, n: int, k: int) -> int:
    return 2 * m * n * k


def gemm_bytes(m: int, n: int, k: int) -> int:
    """Bytes a W8A8 GEMM must move at least: int8 A and B, fp16/bf16 C, fp32 scales."""
    return m * k + n * k + OUTPUT_BYTES * m * n + SCALE_BYTES * (m + n)


def fused_gemm_bytes(m: int, n: int, k: int) -> int:
    """Bytes the fused quantize + int8 GEMM launch must move at least: fp16/bf16 A (quantized
    in the kernel: no int8 A and no activation scales in memory), int8 B, C, B's scales."""
    return ACTIVATION_BYTES * m * k + n * k + OUTPUT_BYTES * m * n + SCALE_BYTES * n


def grouped_gemm_bytes(active_experts: float, slots: int, n: int, k: int) -> float:
    """Bytes a grouped W8A8 expert GEMM launch must move at least: the int8 weights and
    per-channel scales of every expert that receives a row, and per routed slot its int8 A row,
    per-token scale and fp16/bf16 output row (a row gathered by several slots is counted per slot)."""
    return active_experts * (n * k + SCALE_BYTES * n) + slots * (k + SCALE_BYTES + OUTPUT_BYTES * n)


def two_launch_bytes(m: int, n: int, k: int) -> int:
    """Bytes of the same int8 layer in two launches: the quantization kernel reads the
    fp16/bf16 rows and writes int8 rows and per-token scales, the GEMM reads them back."""
    return ACTIVATION_BYTES * m * k + (m * k + SCALE_BYTES * m) + gemm_bytes(m, n, k)


def reread_level(target_name: str, working_set_bytes: float) -> str:
    """The cache level that serves re-reads of an operand of `working_set_bytes` on the target:
    "l2" when it fits the L2, else "mall" when the target has an Infinity Cache it fits, else "dram"."""
    peaks = DEVICE_PEAKS[get_target(target_name).name]
    if working_set_bytes <= peaks.l2_bytes:
        return "l2"
    return "mall" if working_set_bytes <= peaks.mall_bytes else "dram"


def reread_bytes(target_name: str, config: TileConfig, m: int, n: int, k: int, a_element_bytes: int = 1,
                 b_cost: float = 1.0, experts: int = 1) -> dict[str, float]:
    """Bytes `config` reads again beyond each operand's first read, by the level serving them
    (REREAD_LEVELS): each of the tiles_m row tiles reads all of B's N x K (a stream_weights tile,
    BLOCK_M = 16, streams B once per 16 rows), each of the tiles_n column tiles all of A's M x K.
    The working set of a re-read is what the kernel's tile order touches between two reads of one
    panel: for B all of it (one group of TILE_GROUP_M row tiles sweeps every column before the next
    group reads B again), for A the rows of one such group. Concurrent tiles of a group sharing a B
    panel in L2 are not credited (conservative). `b_cost` weighs B's bytes (cache aliasing).
    A grouped launch (`experts` > 1) is `experts` such GEMMs of M rows each, one B per expert,
    laid out one after another in one tile order: a group of row tiles then spans the weights of
    up to ceil(TILE_GROUP_M / tiles_m) experts."""
    tiles_m, tiles_n = -(-m // config.block_m), -(-n // config.block_n)
    rows = experts * m
    a_group_rows = min(rows, TILE_GROUP_M * config.block_m)
    b_group_experts = min(experts, -(-TILE_GROUP_M // tiles_m))
    charges = dict.fromkeys(REREAD_LEVELS, 0.0)
    for working_set, again in ((b_group_experts * n * k, experts * (tiles_m - 1) * n * k * b_cost),
                               (a_group_rows * k * a_element_bytes, (tiles_n - 1) * rows * k * a_element_bytes)):
        charges[reread_level(target_name, working_set)] += again
    return charges


def floors(target_name: str, m: int, n: int, k: int) -> Floors:
    ops, moved = gemm_ops(m, n, k), gemm_bytes(m, n, k)
    return _floors(target_name, ops, moved)


def _floors(target_name: str, ops: int, moved: int) -> Floors:
    return Floors(ops / peak_ops_per_s(target_name) * 1e6, moved / dram_bytes_per_s(target_name) * 1e6, ops, moved)


def moe_expert_floors(target_name: str, dims: MoeDims, tp: int, tokens: int) -> Floors:
    """Floors of one MoE layer's W8A8 expert GEMMs (w13 and w2 for every routed token) on one
    rank: compute, 2 x (tokens x top-k) x (w13 + w2 elements) ops over the WMMA peak; memory,
    the int8 weights and per-channel scales of the experts expected to receive a token
    (uniform routing, `expected_active_experts`) plus each GEMM's int8 rows, per-token scales
    and fp16 output, over DRAM bandwidth. Arithmetic from paper peaks, not a prediction."""
    routed = tokens * dims.experts_per_token
    shapes = expert_shapes(dims, tp)
    active = expected_active_experts(dims, tokens)
    moved = sum(grouped_gemm_bytes(active, routed, shape.n, shape.k) for shape in shapes)
    ops = sum(gemm_ops(routed, shape.n, shape.k) for shape in shapes)
    return _floors(target_name, ops, round(moved))


@dataclass(frozen=True)
class Prediction:
    """Predicted time of one config on one shape (a prediction, never a measurement)."""

    config: TileConfig
    time_us: float
    bound: str  # "compute", "dram" or "l2"
    compute_us: float
    dram_us: float
    l2_us: float
    reread_beyond_l2_bytes: float  # re-reads served by the MALL or DRAM (`reread_bytes`), in the DRAM term
    tiles: int
    padding_waste: float  # fraction of executed WMMA ops that are zero padding
    resident_workgroups: int
    occupancy_source: str
    issue_source: str  # "isa_mix" (the shipped main-loop mix) or "assumed" (fragment placeholders)


def _check_shape(m: int, n: int, k: int) -> None:
    for name, value in (("M", m), ("N", n), ("K", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def predict(
    target_name: str, config: TileConfig, m: int, n: int, k: int, kind: str = "i8",
    occupancy: Occupancy | None = None, b_row_bytes: int | None = None,
) -> Prediction | None:
    """Predicted time of `config` on (M, N, K); None when the config cannot be resident
    (or, for the fused launch FUSED_KIND, is not a decode row).

    `b_row_bytes`: B's row stride; by default the one our weights are stored with (K plus
    `cache_aliasing_pad(K)`, never aliasing). Pass K to predict an unpadded weight.
    The issue time comes from the kernel's shipped main-loop mix (`kernel_mix`), the
    fragment placeholders where there is none.
    """
    _check_shape(m, n, k)
    if kind not in MODEL_KINDS:
        raise ValueError(f"kernel kind must be one of {MODEL_KINDS}, got {kind!r}")
    fused = kind == FUSED_KIND
    if fused and m > FUSED_QUANT_MAX_M:
        raise ValueError(f"the fused decode launch serves M <= {FUSED_QUANT_MAX_M}, got M={m}")
    if fused and not config.is_decode:
        return None
    b_cost = _b_cost(k, b_row_bytes)
    a_element_bytes = ACTIVATION_BYTES if fused else 1
    rereads = reread_bytes(get_target(target_name).name, config, m, n, k, a_element_bytes, b_cost)
    first_reads = (fused_gemm_bytes if fused else gemm_bytes)(m, n, k) + (b_cost - 1) * n * k
    return _predict_launch(target_name, config, kind, occupancy, tiles=config.tiles(m, n), k=k,
                           useful_ops=gemm_ops(m, n, k), first_read_bytes=first_reads, rereads=rereads,
                           a_element_bytes=a_element_bytes, b_cost=b_cost)


def _b_cost(k: int, b_row_bytes: int | None) -> float:
    """Time weight of B's bytes at row stride `b_row_bytes` (default: ours, K plus
    `cache_aliasing_pad(K)`): where the stride aliases, each byte costs 1 / fraction as much."""
    if b_row_bytes is None:
        b_row_bytes = k + cache_aliasing_pad(k)
    if isinstance(b_row_bytes, bool) or not isinstance(b_row_bytes, int) or b_row_bytes < k:
        raise ValueError(f"B's row stride must be an int >= K={k} bytes, got {b_row_bytes!r}")
    return 1 / ASSUMED_ALIASED_B_BANDWIDTH_FRACTION if aliases(b_row_bytes) else 1.0


def predict_grouped(
    target_name: str, config: TileConfig, active_experts: int, tokens_per_expert: int, n: int, k: int,
    kind: str = MOE_KINDS[0], occupancy: Occupancy | None = None, b_row_bytes: int | None = None,
) -> Prediction | None:
    """Predicted time of one grouped expert GEMM launch (kernels/moe_gemm.hip, `kind` in
    MOE_KINDS) in which `active_experts` experts receive `tokens_per_expert` rows each, every
    expert's weight [N, K]; None when the config cannot be resident. Unlike one [M, N, K] GEMM:
    every active expert's weights are read (`grouped_gemm_bytes`); each expert's rows are padded
    to BLOCK_M (the padding is executed); the grid is active_experts x row blocks per expert x
    N tiles, spread over the target's CUs as one launch; B's re-reads are per expert
    (`reread_bytes` with `experts`). The issue time comes from the MoE kernel's own compiled
    main loop (`kernel_mix`). Not modelled: the launch's surplus workgroups (its grid is the
    bound min(E, slots) x (BLOCK_M - 1) padding rows allows; the surplus exits at once), and
    the per-slot gather of A rows (charged as contiguous reads)."""
    _check_shape(tokens_per_expert, n, k)
    if isinstance(active_experts, bool) or not isinstance(active_experts, int) or active_experts < 1:
        raise ValueError(f"active experts must be a positive int, got {active_experts!r}")
    moe_operand_kind(kind)
    b_cost = _b_cost(k, b_row_bytes)
    slots = active_experts * tokens_per_expert
    row_blocks = active_experts * -(-tokens_per_expert // config.block_m)
    rereads = reread_bytes(get_target(target_name).name, config, tokens_per_expert, n, k, 1, b_cost, active_experts)
    first_reads = grouped_gemm_bytes(active_experts, slots, n, k) + (b_cost - 1) * active_experts * n * k
    return _predict_launch(target_name, config, kind, occupancy, tiles=row_blocks * -(-n // config.block_n), k=k,
                           useful_ops=gemm_ops(slots, n, k), first_read_bytes=first_reads, rereads=rereads,
                           a_element_bytes=1, b_cost=b_cost)


def _predict_launch(
    target_name: str, config: TileConfig, kind: str, occupancy: Occupancy | None, *, tiles: int, k: int,
    useful_ops: int, first_read_bytes: float, rereads: dict[str, float], a_element_bytes: int, b_cost: float,
) -> Prediction | None:
    """The three terms of the module docstring for a launch of `tiles` workgroups of `config`
    over depth K that must move `first_read_bytes` plus `rereads` and does `useful_ops`."""
    target = get_target(target_name)
    peaks = DEVICE_PEAKS[target.name]
    occupancy = occupancy or assumed_occupancy(target, config, kind)
    mix = kernel_mix(target.name, config, kind)
    resident = resident_workgroups_per_cu(occupancy, config)
    if resident < 1:
        return None
    clock_hz = peaks.boost_clock_ghz * 1e9

    k_padded = -(-k // config.block_k) * config.block_k
    tile_ops = 2 * config.block_m * config.block_n * k_padded
    tiles_on_busiest_cu = -(-tiles // target.cu_count)
    concurrent_workgroups = min(tiles_on_busiest_cu, resident)
    simd_use = min(1.0, concurrent_workgroups * config.waves / SIMDS_PER_CU)
    compute_rate = (PEAK_OPS_PER_CLK_PER_CU * clock_hz * ASSUMED_SUSTAINED_WMMA_FRACTION
                    * simd_use * wmma_issue_share(config, kind, mix))
    compute_s = tiles_on_busiest_cu * tile_ops / compute_rate

    active_cus = min(tiles, target.cu_count)
    bytes_in_flight = active_cus * concurrent_workgroups * config.waves * occupancy.global_bytes_per_wave_iteration
    bytes_needed_in_flight = peaks.dram_gb_per_s * ASSUMED_DRAM_LATENCY_NS  # GB/s x ns = bytes
    latency_cover = min(1.0, bytes_in_flight / bytes_needed_in_flight)
    beyond_l2 = rereads["mall"] + rereads["dram"]
    dram_bytes = first_read_bytes + beyond_l2
    dram_s = dram_bytes / (peaks.dram_gb_per_s * 1e9 * ASSUMED_SUSTAINED_DRAM_FRACTION * latency_cover)

    l2_bytes_busiest_cu = tiles_on_busiest_cu * (a_element_bytes * config.block_m + b_cost * config.block_n) * k_padded
    l2_s = l2_bytes_busiest_cu / (ASSUMED_L2_BYTES_PER_CLK_PER_CU * clock_hz)

    bound, time_s = max((("compute", compute_s), ("dram", dram_s), ("l2", l2_s)), key=lambda item: item[1])
    executed_ops = tiles * tile_ops
    return Prediction(
        config=config, time_us=time_s * 1e6, bound=bound,
        compute_us=compute_s * 1e6, dram_us=dram_s * 1e6, l2_us=l2_s * 1e6,
        reread_beyond_l2_bytes=beyond_l2, tiles=tiles, padding_waste=1.0 - useful_ops / executed_ops,
        resident_workgroups=resident, occupancy_source=occupancy.source,
        issue_source="assumed" if mix is None else "isa_mix",
    )


# Configs within this fraction of the fastest prediction count as tied: the model is
# not that precise, so the tie goes to less padding, then to the table order.
TIE_TOLERANCE = 0.02


def rank_configs(
    target_name: str, configs: Iterable[TileConfig], m: int, n: int, k: int, kind: str = "i8",
    occupancies: Mapping[str, Occupancy] | None = None,
) -> list[Prediction]:
    """Predictions for every residentable config, best first."""
    ordered = list(configs)
    predictions = [
        prediction for config in ordered
        if (kind != FUSED_KIND or config.is_decode) and (prediction := predict(target_name, config, m, n, k, kind,
                                  (occupancies or {}).get(model_kernel_name(config, kind)))) is not None
    ]
    return _best_first(target_name, ordered, predictions)


def rank_grouped_configs(
    target_name: str, configs: Iterable[TileConfig], active_experts: int, tokens_per_expert: int, n: int, k: int,
    kind: str = MOE_KINDS[0], occupancies: Mapping[str, Occupancy] | None = None,
) -> list[Prediction]:
    """`predict_grouped` for every residentable config, best first (ties as `rank_configs`)."""
    ordered = list(configs)
    predictions = [
        prediction for config in ordered
        if (prediction := predict_grouped(target_name, config, active_experts, tokens_per_expert, n, k, kind,
                                          (occupancies or {}).get(model_kernel_name(config, kind)))) is not None
    ]
    return _best_first(target_name, ordered, predictions)


def _best_first(target_name: str, ordered: list[TileConfig], predictions: list[Prediction]) -> list[Prediction]:
    if not predictions:
        raise ValueError(f"no tile config can be resident on {target_name}: check the kernel table")
    best_time = min(prediction.time_us for prediction in predictions)
    order = {config.tag: index for index, config in enumerate(ordered)}

    def rank_key(prediction: Prediction) -> tuple[bool, float, float, int]:
        tied = prediction.time_us <= best_time * (1 + TIE_TOLERANCE)
        if tied:
            return (False, 0.0, prediction.padding_waste, order[prediction.config.tag])
        return (True, prediction.time_us, prediction.padding_waste, order[prediction.config.tag])

    return sorted(predictions, key=rank_key)
