"""Tile configurations of the GEMM kernels, read from the kernel table `gemm_configs.def`.

The kernels are one template instantiated once per X-macro row of
`gemm_configs.def` (format fixed in docs/architecture.md):

    // W8A8_GEMM_CONFIG(tag, BLOCK_M, BLOCK_N, BLOCK_K, WAVES_M, WAVES_N, WAVES_K)
    W8A8_GEMM_CONFIG(m128n128k64_w2x2x1, 128, 128, 64, 2, 2, 1)

Host and device read the same rows, so the picker can only ever return a config
that was compiled. Configs change speed, never results.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from vllm_rdna_w8a8.build.compile import DEFAULT_KERNELS_DIR, DEFAULT_OBJECTS_DIR, TILE_TABLE_NAME

WAVE_SIZE = 32
WMMA_TILE = 16  # v_wmma_*_16x16x16: every wave sub-tile is a multiple of 16 in M, N and K
MAX_WORKGROUP_THREADS = 1024
LDS_BYTES_PER_WORKGROUP = 64 * 1024  # every gfx11 target (rdna3-wmma.md)
LDS_ROW_PADDING_BYTES = 16  # the kernels pad LDS rows against bank conflicts
ACCUMULATOR_VGPRS_PER_WMMA_TILE = 8  # a 16x16 int32/fp32 accumulator: 8 values per lane
MAX_ACCUMULATOR_VGPRS = 128  # kernels/common/gemm.h: half of a wave's 256 VGPRs
KERNEL_KINDS = ("i8", "f8")
# kernels/int8_gemm.hip expands each row's fused decode entry points by pasting BLOCK_M
# (W8A8_FUSED_DECODE_KERNELS_<BLOCK_M>): only these values compile.
BLOCK_M_CHOICES = (16, 32, 64, 128, 256)
OPERAND_BYTES_PER_LANE = 16  # kernels/common/wmma.h kOperandBytesI8: one 128-bit load per lane
# kernels/common/decode_quant.h FusedDecodeLds, beyond the decode tile's partial sums: a
# (lo, hi) float pair per wave and tile row, and (a_scale, azp) per tile row, 8 bytes each.
FUSED_LDS_BYTES_PER_TILE_ROW = 8
FUSED_INPUT_DTYPES = ("f16", "bf16")  # activations the fused decode GEMMs quantize
# The fused decode GEMMs quantize the rows of one decode tile (BLOCK_M == 16): beyond that,
# every N tile would quantize the same rows again, and prefill reuses one int8 A tile for
# many N tiles, so quantizing once in its own launch is cheaper.
FUSED_QUANT_MAX_M = WMMA_TILE
# Kind of the fused quantize + int8 GEMM launch in the tables and the performance model
# (its kernels are w8a8_i8q_<f16|bf16>_gemm_<tag>, `TileConfig.fused_kernel_name`).
FUSED_KIND = "i8q"

# The build copies the table beside the code objects; a source checkout has it in kernels/.
DEFAULT_DEF_PATHS = (
    DEFAULT_OBJECTS_DIR / TILE_TABLE_NAME,
    DEFAULT_KERNELS_DIR / TILE_TABLE_NAME,
)

_ROW_PATTERN = re.compile(r"W8A8_GEMM_CONFIG\s*\(([^()]*)\)")
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
        """BLOCK_M == 16 selects the decode main loop: weights streamed to registers,
        K split across WAVES_K waves (kernels/common/gemm.h)."""
        return self.block_m == WMMA_TILE

    @property
    def accumulator_vgprs(self) -> int:
        return (self.wave_tile_m // WMMA_TILE) * (self.wave_tile_n // WMMA_TILE) * ACCUMULATOR_VGPRS_PER_WMMA_TILE

    @property
    def lds_bytes(self) -> int:
        """LDS the kernel allocates, the same formula as GemmConfig::kLdsBytes in
        kernels/common/gemm.h: decode, one int32 partial tile per K-split wave; prefill,
        double-buffered A and B tiles with padded rows."""
        if self.is_decode:
            return self.waves_k * self.block_m * self.block_n * 4
        return 2 * (self.block_m + self.block_n) * (self.block_k + LDS_ROW_PADDING_BYTES)

    @property
    def fused_lds_bytes(self) -> int:
        """LDS of the fused decode kernel on this (decode) row: sizeof(FusedDecodeLds) in
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
        activations itself (kernels/common/decode_quant.h); decode rows only."""
        if not self.is_decode:
            raise ValueError(f"tile config {self.tag!r} is not a decode row (BLOCK_M == 16): no fused kernel")
        if input_dtype not in FUSED_INPUT_DTYPES:
            raise ValueError(f"fused kernel input must be one of {FUSED_INPUT_DTYPES}, got {input_dtype!r}")
        return f"w8a8_i8q_{input_dtype}_gemm_{self.tag}"


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
    if config.block_m not in BLOCK_M_CHOICES:
        raise TileConfigError(
            f"{where}: BLOCK_M={config.block_m} must be one of {', '.join(map(str, BLOCK_M_CHOICES))} "
            "(kernels/int8_gemm.hip expands each row by its BLOCK_M)")
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
            f"{where}: split-K across waves (WAVES_K > 1) exists for decode tiles (BLOCK_M == 16) only")
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


def _strip_comments(text: str) -> str:
    # Keep newlines inside block comments so line numbers stay right.
    text = re.sub(r"/\*.*?\*/", lambda match: "\n" * match.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def parse_tile_configs(text: str, source: str = TILE_TABLE_NAME) -> tuple[TileConfig, ...]:
    """Parse and validate the X-macro rows of a gemm_configs.def text."""
    configs: list[TileConfig] = []
    seen: dict[str, int] = {}
    for line_number, line in enumerate(_strip_comments(text).splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):  # blank or preprocessor guard
            continue
        rows = list(_ROW_PATTERN.finditer(stripped))
        leftover = _ROW_PATTERN.sub("", stripped).strip()
        if not rows or leftover:
            raise TileConfigError(
                f"{source}:{line_number}: expected W8A8_GEMM_CONFIG(tag, BLOCK_M, BLOCK_N, BLOCK_K, "
                f"WAVES_M, WAVES_N, WAVES_K), got {stripped!r}")
        for row in rows:
            values = [value.strip() for value in row.group(1).split(",")]
            if len(values) != 7:
                raise TileConfigError(
                    f"{source}:{line_number}: W8A8_GEMM_CONFIG takes 7 values "
                    f"(tag, BLOCK_M, BLOCK_N, BLOCK_K, WAVES_M, WAVES_N, WAVES_K), got {len(values)}")
            tag, numbers = values[0], values[1:]
            if not all(re.fullmatch(r"\d+", number) for number in numbers):
                raise TileConfigError(
                    f"{source}:{line_number}: row {tag!r} needs plain decimal integers, got {numbers}")
            config = TileConfig(tag, *(int(number) for number in numbers))
            try:
                validate_tile_config(config)
            except TileConfigError as error:
                raise TileConfigError(f"{source}:{line_number}: {error}") from None
            if tag in seen:
                raise TileConfigError(
                    f"{source}:{line_number}: tag {tag!r} already defined on line {seen[tag]}; tags must be unique")
            seen[tag] = line_number
            configs.append(config)
    if not configs:
        raise TileConfigError(f"{source}: no W8A8_GEMM_CONFIG rows found")
    return tuple(configs)


def find_def_file() -> Path:
    for path in DEFAULT_DEF_PATHS:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"kernel table {TILE_TABLE_NAME} not found; looked in "
        + ", ".join(str(path) for path in DEFAULT_DEF_PATHS)
        + " (build the package with `python -m vllm_rdna_w8a8.build` or run from a source checkout)")


@functools.lru_cache(maxsize=8)
def load_tile_configs(path: Path | None = None) -> tuple[TileConfig, ...]:
    """The validated rows of the kernel table (the shipped one unless `path` is given)."""
    path = find_def_file() if path is None else Path(path)
    return parse_tile_configs(path.read_text(), source=str(path))


def configs_by_tag(configs: tuple[TileConfig, ...]) -> dict[str, TileConfig]:
    return {config.tag: config for config in configs}
