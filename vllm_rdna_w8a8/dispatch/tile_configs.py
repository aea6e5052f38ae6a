"""Tile configurations of the GEMM kernels, read from the kernel table `gemm_configs.def`.

The kernels are one template instantiated once per X-macro row of
`gemm_configs.def` (format fixed in docs/architecture.md):

    // W8A8_GEMM_CONFIG(tag, BLOCK_M, BLOCK_N, BLOCK_K, WAVES_M, WAVES_N, WAVES_K, MAIN_LOOP)
    W8A8_GEMM_CONFIG(m128n128k64_w2x2x1, 128, 128, 64, 2, 2, 1, lds_double_buffer)

Host and device read the same rows, so the picker can only ever return a config
that was compiled. Configs change speed, never results. The hardware limits and the
kernel constants the rules below use come from kernels/kernel_abi.def, as the kernels' do.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from vllm_rdna_w8a8.build.compile import TILE_TABLE_NAME
from vllm_rdna_w8a8.build.kernel_data import (
    abi_constant,
    find_kernel_data_file,
    kernel_data_paths,
    read_xmacro_rows,
)

WAVE_SIZE = abi_constant("WAVE_SIZE")
WMMA_TILE = abi_constant("WMMA_TILE")  # every wave sub-tile is a multiple of it in M, N and K
MAX_WORKGROUP_THREADS = abi_constant("MAX_WORKGROUP_THREADS")
LDS_BYTES_PER_WORKGROUP = abi_constant("LDS_BYTES_PER_WORKGROUP")
LDS_ROW_PADDING_BYTES = abi_constant("LDS_ROW_PADDING_BYTES")
ACCUMULATOR_VGPRS_PER_WMMA_TILE = abi_constant("ACCUMULATOR_VGPRS_PER_WMMA_TILE")
MAX_ACCUMULATOR_VGPRS = abi_constant("MAX_ACCUMULATOR_VGPRS")
OPERAND_BYTES_PER_LANE = abi_constant("OPERAND_BYTES_PER_LANE")
KERNEL_KINDS = ("i8", "f8")
# The MAIN_LOOP column: the enumerators of rdna_w8a8::MainLoop (kernels/common/gemm.h).
LDS_DOUBLE_BUFFER = "lds_double_buffer"  # prefill: A and B tiles double-buffered in LDS
STREAM_WEIGHTS = "stream_weights"  # decode: one 16-row tile, weights streamed, split-K
MAIN_LOOPS = (LDS_DOUBLE_BUFFER, STREAM_WEIGHTS)
# kernels/common/decode_quant.h FusedDecodeLds, beyond the decode tile's partial sums: a
# (lo, hi) float pair per wave and tile row, and (a_scale, azp) per tile row, 8 bytes each.
FUSED_LDS_BYTES_PER_TILE_ROW = 8
FUSED_INPUT_DTYPES = ("f16", "bf16")  # activations the fused decode GEMMs quantize
MOE_ACTIVATION_DTYPES = ("f16", "bf16")  # activations (and outputs) of the MoE grouped GEMMs
# The fused decode GEMMs quantize the rows of one decode (stream_weights) tile: beyond that,
# every N tile would quantize the same rows again, and prefill reuses one int8 A tile for
# many N tiles, so quantizing once in its own launch is cheaper.
FUSED_QUANT_MAX_M = WMMA_TILE
# Kind of the fused quantize + int8 GEMM launch in the tables and the performance model
# (its kernels are w8a8_i8q_<f16|bf16>_gemm_<tag>, `TileConfig.fused_kernel_name`).
FUSED_KIND = "i8q"
# Kinds of the grouped MoE GEMM launch over all experts in the tables and the performance model,
# by operand kind (its kernels are w8a8_<i8|f8>_moe_<f16|bf16>_gemm_<tag>, `TileConfig.moe_kernel_name`).
MOE_KIND_OF_OPERAND = {"i8": "i8_moe", "f8": "f8_moe"}
MOE_KINDS = tuple(MOE_KIND_OF_OPERAND.values())

# The build copies the table beside the code objects; a source checkout has it in kernels/.
DEFAULT_DEF_PATHS = kernel_data_paths(TILE_TABLE_NAME)

TILE_MACRO = "W8A8_GEMM_CONFIG"
TILE_FIELDS = ("tag", "BLOCK_M", "BLOCK_N", "BLOCK_K", "WAVES_M", "WAVES_N", "WAVES_K", "MAIN_LOOP")
_TAG_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Tags named by geometry must state the row's own numbers (catches copy-paste rows).
_GEOMETRY_TAG_PATTERN = re.compile(r"m(\d+)n(\d+)k(\d+)_w(\d+)x(\d+)x(\d+)")


class TileConfigError(ValueError):
    """A row of the kernel table is malformed or violates a hardware limit."""


@dataclass(frozen=True)
class TileConfig:
    """One row of gemm_configs.def: a workgroup tile and how its waves split it."""

    tag: str
    block_m: int
    block_n: int
    block_k: int
    waves_m: int
    waves_n: int
    waves_k: int  # > 1: K split across the waves of a workgroup, reduced in LDS
    main_loop: str  # one of MAIN_LOOPS

    @property
    def waves(self) -> int:
        return self.waves_m * self.waves_n * self.waves_k

    @property
    def threads(self) -> int:
        return WAVE_SIZE * self.waves

    @property
    def wave_tile_m(self) -> int:
        return self.block_m // self.waves_m

    @property
    def wave_tile_n(self) -> int:
        return self.block_n // self.waves_n

    @property
    def is_decode(self) -> bool:
        """The row runs the stream_weights (decode) main loop: one 16-row tile, weights
        streamed to registers, K split across WAVES_K waves (kernels/common/gemm.h)."""
        return self.main_loop == STREAM_WEIGHTS

    @property
    def accumulator_vgprs(self) -> int:
        return (self.wave_tile_m // WMMA_TILE) * (self.wave_tile_n // WMMA_TILE) * ACCUMULATOR_VGPRS_PER_WMMA_TILE

    @property
    def lds_bytes(self) -> int:
        """LDS the kernel allocates, the same formula as GemmConfig::kLdsBytes in
        kernels/common/gemm.h: stream_weights, one int32 partial tile per K-split wave;
        lds_double_buffer, double-buffered A and B tiles with padded rows."""
        if self.is_decode:
            return self.waves_k * self.block_m * self.block_n * 4
        return 2 * (self.block_m + self.block_n) * (self.block_k + LDS_ROW_PADDING_BYTES)

    @property
    def fused_lds_bytes(self) -> int:
        """LDS of the fused decode kernel on this stream_weights row: sizeof(FusedDecodeLds) in
        kernels/common/decode_quant.h, the decode tile's partial sums plus per-row ranges
        (one per wave) and epilogue terms."""
        return self.lds_bytes + (self.waves + 1) * WMMA_TILE * FUSED_LDS_BYTES_PER_TILE_ROW

    def tiles(self, m: int, n: int) -> int:
        return -(-m // self.block_m) * -(-n // self.block_n)

    def grid(self, m: int, n: int) -> tuple[int, int, int]:
        """Launch grid: one workgroup per output tile; the kernel orders the tiles itself."""
        if m < 1 or n < 1:
            raise ValueError(f"grid needs M >= 1 and N >= 1, got M={m}, N={n}")
        return (self.tiles(m, n), 1, 1)

    def block(self) -> tuple[int, int, int]:
        return (self.threads, 1, 1)

    def kernel_name(self, kind: str) -> str:
        """`w8a8_i8_gemm_<tag>` (int8 WMMA) or `w8a8_f8_gemm_<tag>` (fp8 widened to f16)."""
        if kind not in KERNEL_KINDS:
            raise ValueError(f"kernel kind must be one of {KERNEL_KINDS}, got {kind!r}")
        return f"w8a8_{kind}_gemm_{self.tag}"

    def fused_kernel_name(self, input_dtype: str) -> str:
        """`w8a8_i8q_<f16|bf16>_gemm_<tag>`: the int8 decode GEMM that quantizes its fp16/bf16
        activations itself (kernels/common/decode_quant.h); stream_weights rows only."""
        if not self.is_decode:
            raise ValueError(f"tile config {self.tag!r} does not run the {STREAM_WEIGHTS} main loop: no fused kernel")
        if input_dtype not in FUSED_INPUT_DTYPES:
            raise ValueError(f"fused kernel input must be one of {FUSED_INPUT_DTYPES}, got {input_dtype!r}")
        return f"w8a8_i8q_{input_dtype}_gemm_{self.tag}"

    def moe_kernel_name(self, activation_dtype: str, kind: str = "i8") -> str:
        """`w8a8_<i8|f8>_moe_<f16|bf16>_gemm_<tag>`: the grouped GEMM over experts
        (kernels/moe_gemm.hip), built for every row."""
        if activation_dtype not in MOE_ACTIVATION_DTYPES:
            raise ValueError(f"MoE kernel activations must be one of {MOE_ACTIVATION_DTYPES}, got {activation_dtype!r}")
        if kind not in KERNEL_KINDS:
            raise ValueError(f"kernel kind must be one of {KERNEL_KINDS}, got {kind!r}")
        return f"w8a8_{kind}_moe_{activation_dtype}_gemm_{self.tag}"


def validate_tile_config(config: TileConfig) -> None:
    """Raise TileConfigError naming the row, the limit broken and how to fix it."""
    where = f"tile config {config.tag!r}"
    if not _TAG_PATTERN.fullmatch(config.tag):
        raise TileConfigError(f"{where}: tag must be a C identifier (it becomes part of the kernel name)")
    fields = {
        "BLOCK_M": config.block_m, "BLOCK_N": config.block_n, "BLOCK_K": config.block_k,
        "WAVES_M": config.waves_m, "WAVES_N": config.waves_n, "WAVES_K": config.waves_k,
    }
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TileConfigError(f"{where}: {name} must be a positive integer, got {value!r}")
    if config.main_loop not in MAIN_LOOPS:
        raise TileConfigError(f"{where}: MAIN_LOOP must be one of {', '.join(MAIN_LOOPS)}, got {config.main_loop!r}")
    if config.threads > MAX_WORKGROUP_THREADS:
        raise TileConfigError(
            f"{where}: {config.waves} waves x {WAVE_SIZE} lanes = {config.threads} threads exceeds "
            f"the {MAX_WORKGROUP_THREADS}-thread workgroup limit; use fewer waves")
    for block_name, block, waves_name, waves in (
        ("BLOCK_M", config.block_m, "WAVES_M", config.waves_m),
        ("BLOCK_N", config.block_n, "WAVES_N", config.waves_n),
        ("BLOCK_K", config.block_k, "WAVES_K", config.waves_k),
    ):
        if block % (WMMA_TILE * waves):
            raise TileConfigError(
                f"{where}: {block_name}={block} must be a multiple of {WMMA_TILE} x {waves_name} "
                f"= {WMMA_TILE * waves} so that each wave works on whole 16x16x16 WMMA tiles")
    if config.is_decode and config.block_m != WMMA_TILE:
        raise TileConfigError(
            f"{where}: the {STREAM_WEIGHTS} main loop computes one {WMMA_TILE}-row WMMA tile per "
            f"workgroup: BLOCK_M must be {WMMA_TILE}, got {config.block_m}")
    if config.accumulator_vgprs > MAX_ACCUMULATOR_VGPRS:
        raise TileConfigError(
            f"{where}: a wave's {config.wave_tile_m}x{config.wave_tile_n} tile needs {config.accumulator_vgprs} "
            f"accumulator VGPRs, more than {MAX_ACCUMULATOR_VGPRS}; at most 16 WMMA tiles (e.g. 64x64) per wave")
    if config.lds_bytes > LDS_BYTES_PER_WORKGROUP:
        raise TileConfigError(
            f"{where}: LDS {config.lds_bytes} bytes exceeds the {LDS_BYTES_PER_WORKGROUP}-byte "
            f"workgroup limit; shrink the tile, BLOCK_K or WAVES_K")
    if not config.is_decode and config.waves_k != 1:
        raise TileConfigError(
            f"{where}: split-K across waves (WAVES_K > 1) is implemented for the {STREAM_WEIGHTS} main loop only")
    if config.is_decode and config.fused_lds_bytes > LDS_BYTES_PER_WORKGROUP:
        raise TileConfigError(
            f"{where}: the fused decode kernel's LDS {config.fused_lds_bytes} bytes exceeds the "
            f"{LDS_BYTES_PER_WORKGROUP}-byte workgroup limit; shrink BLOCK_N or WAVES_K")
    if not config.is_decode:
        # kernels/common/gemm.h TileLoader: each pass, every thread loads one 16-byte chunk of
        # a BLOCK_K-wide row; the A and B tiles must split into whole passes.
        chunks_per_row = config.block_k // OPERAND_BYTES_PER_LANE
        rows_per_pass = config.threads // chunks_per_row
        if config.threads % chunks_per_row or config.block_m % rows_per_pass or config.block_n % rows_per_pass:
            raise TileConfigError(
                f"{where}: a prefill tile must load in whole passes of 16-byte chunks: threads "
                f"({config.threads}) % (BLOCK_K / 16 = {chunks_per_row}) == 0 and BLOCK_M, BLOCK_N "
                f"multiples of the {max(rows_per_pass, 1)} rows one pass covers")
    geometry = _GEOMETRY_TAG_PATTERN.fullmatch(config.tag)
    if geometry:
        stated = tuple(int(g) for g in geometry.groups())
        actual = tuple(fields.values())
        if stated != actual:
            raise TileConfigError(
                f"{where}: the tag states {stated} but the row has {actual}; fix the tag or the numbers")


def parse_tile_configs(text: str, source: str = TILE_TABLE_NAME) -> tuple[TileConfig, ...]:
    """Parse and validate the X-macro rows of a gemm_configs.def text."""
    configs: list[TileConfig] = []
    seen: dict[str, int] = {}
    for line_number, (tag, *numbers, main_loop) in read_xmacro_rows(
            text, TILE_MACRO, TILE_FIELDS, source, TileConfigError):
        if not all(re.fullmatch(r"\d+", number) for number in numbers):
            raise TileConfigError(
                f"{source}:{line_number}: row {tag!r} needs plain decimal integers, got {numbers}")
        config = TileConfig(tag, *(int(number) for number in numbers), main_loop)
        try:
            validate_tile_config(config)
        except TileConfigError as error:
            raise TileConfigError(f"{source}:{line_number}: {error}") from None
        if tag in seen:
            raise TileConfigError(
                f"{source}:{line_number}: tag {tag!r} already defined on line {seen[tag]}; tags must be unique")
        seen[tag] = line_number
        configs.append(config)
    return tuple(configs)


def find_def_file() -> Path:
    return find_kernel_data_file(TILE_TABLE_NAME, DEFAULT_DEF_PATHS)


@functools.lru_cache(maxsize=8)
def load_tile_configs(path: Path | None = None) -> tuple[TileConfig, ...]:
    """The validated rows of the kernel table (the shipped one unless `path` is given)."""
    path = find_def_file() if path is None else Path(path)
    return parse_tile_configs(path.read_text(), source=str(path))


def configs_by_tag(configs: tuple[TileConfig, ...]) -> dict[str, TileConfig]:
    return {config.tag: config for config in configs}
