"""Per-target tile tables: `<target>.json`, keyed by kernel kind, N, K and an M bucket.

Format (docs/performance.md has the full description):

    {
      "format_version": 1,
      "target": "gfx1100",
      "occupancy": "assumed",                 # how the model knew occupancy (model entries)
      "configs": {
        "i8": {
          "N=6144,K=4096": {
            "1":  {"tag": "<tag>", "source": "model", "predicted_us": <model's time>},
            "16": {"tag": "<tag>", "source": "measured", "device_name": "<GPU name>",
                   "date": "<YYYY-MM-DD>", "measured_us": <median time>}
          }
        },
        "f8": { ... },
        "i8q": { ... },                       # the fused quantize + int8 GEMM launch
        "i8_moe": { ... }, "f8_moe": { ... }  # the grouped expert GEMM launches, keyed by one
      }                                       # expert's weight [N, K], M = tokens per expert
    }

The M bucket of M is the smallest power of two >= M, up to 4096; "8192" holds every
M > 4096. The fused kind "i8q" (an int8 layer at M <= 16 in one launch) has the buckets
1 to 16 only, and its tags must be decode rows. A table is validated whole when loaded: any problem (unreadable bytes, bad
JSON, wrong target, unknown kind, key or tag, missing provenance; a directory or a
dangling link in its place) is logged in one line and the table is ignored, so the next
source (shipped table, then the model) decides.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from vllm_rdna_w8a8.dispatch.tile_configs import FUSED_KIND, FUSED_QUANT_MAX_M, KERNEL_KINDS, MOE_KINDS

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TUNING_DIR_ENV = "VLLM_RDNA_W8A8_TUNING_DIR"
SHIPPED_TABLES_DIR = Path(__file__).resolve().parent.parent / "tables"
M_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Kinds of the table: the int8 and fp8 GEMMs, the fused quantize + int8 GEMM launch
# (decode rows only, M buckets up to FUSED_QUANT_MAX_M), and the grouped MoE GEMM launches
# (M = tokens per expert, `model_shapes.routed_load`).
TABLE_KINDS = (*KERNEL_KINDS, FUSED_KIND, *MOE_KINDS)
FUSED_M_BUCKETS = tuple(bucket for bucket in M_BUCKETS if bucket <= FUSED_QUANT_MAX_M)
SOURCES = ("model", "measured")
# ASCII digits only, at most 9 (int() takes other Unicode digits and refuses huge literals).
_SHAPE_KEY = re.compile(r"N=([1-9][0-9]{0,8}),K=([1-9][0-9]{0,8})")
_BUCKET_KEY = re.compile(r"[1-9][0-9]{0,3}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def m_bucket(m: int) -> int:
    """The table bucket holding M: smallest power of two >= M; 8192 for every M > 4096."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"M must be a positive int, got {m!r}")
    for bucket in M_BUCKETS:
        if m <= bucket:
            return bucket
    return M_BUCKETS[-1]


def shape_key(n: int, k: int) -> str:
    return f"N={n},K={k}"


class TableError(ValueError):
    """A tile table file is unreadable or does not match the format."""


@dataclass(frozen=True)
class TableEntry:
    tag: str
    source: str  # "model" or "measured"


@dataclass(frozen=True)
class TileTable:
    path: str
    target: str
    entries: Mapping[tuple[str, int, int, int], TableEntry]  # (kind, N, K, M bucket) -> entry

    def lookup(self, kind: str, n: int, k: int, m: int) -> TableEntry | None:
        return self.entries.get((kind, n, k, m_bucket(m)))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TableError(message)


def _validate_entry(where: str, entry: Any, known_tags: frozenset[str]) -> TableEntry:
    _require(isinstance(entry, dict), f"{where}: entry must be an object")
    tag = entry.get("tag")
    _require(isinstance(tag, str), f"{where}: missing string 'tag'")
    _require(tag in known_tags, f"{where}: tag {tag!r} is not in the kernel table gemm_configs.def")
    source = entry.get("source")
    _require(source in SOURCES, f"{where}: 'source' must be one of {SOURCES}, got {source!r}")
    if source == "measured":
        _require(isinstance(entry.get("device_name"), str) and entry["device_name"],
                 f"{where}: a measured entry needs 'device_name'")
        _require(isinstance(entry.get("date"), str) and bool(_DATE.fullmatch(entry["date"])),
                 f"{where}: a measured entry needs 'date' as YYYY-MM-DD")
    return TableEntry(tag, source)


def parse_table(data: Any, target: str, known_tags: frozenset[str], path: str,
                decode_tags: frozenset[str] | None = None) -> TileTable:
    """Validate a decoded table; raise TableError naming the first problem. With `decode_tags`
    (the decode rows of the kernel table), a fused entry must name one of them."""
    _require(isinstance(data, dict), "top level must be a JSON object")
    _require(data.get("format_version") == FORMAT_VERSION,
             f"format_version must be {FORMAT_VERSION}, got {data.get('format_version')!r}")
    _require(data.get("target") == target, f"table is for target {data.get('target')!r}, not {target!r}")
    configs = data.get("configs")
    _require(isinstance(configs, dict), "missing 'configs' object")
    entries: dict[tuple[str, int, int, int], TableEntry] = {}
    for kind, shapes in configs.items():
        _require(kind in TABLE_KINDS, f"unknown kernel kind {kind!r} (known: {', '.join(TABLE_KINDS)})")
        buckets_of_kind = FUSED_M_BUCKETS if kind == FUSED_KIND else M_BUCKETS
        _require(isinstance(shapes, dict), f"configs.{kind} must be an object")
        for key, buckets in shapes.items():
            shape = _SHAPE_KEY.fullmatch(key)
            _require(shape is not None, f"configs.{kind}: bad shape key {key!r} (expected 'N=<int>,K=<int>')")
            _require(isinstance(buckets, dict), f"configs.{kind}.{key} must be an object")
            n, k = int(shape.group(1)), int(shape.group(2))
            for bucket_key, entry in buckets.items():
                where = f"configs.{kind}.{key}.{bucket_key}"
                _require(_BUCKET_KEY.fullmatch(bucket_key) is not None and int(bucket_key) in buckets_of_kind,
                         f"{where}: M bucket must be one of {', '.join(map(str, buckets_of_kind))}")
                entries[(kind, n, k, int(bucket_key))] = table_entry = _validate_entry(where, entry, known_tags)
                _require(kind != FUSED_KIND or decode_tags is None or table_entry.tag in decode_tags,
                         f"{where}: tag {table_entry.tag!r} is not a decode (stream_weights) row: it has no fused kernel")
    return TileTable(path, target, entries)


def read_table_data(path: Path) -> Any:
    """The decoded JSON at `path`, None when nothing is there; TableError naming the
    problem for anything else there, whatever its bytes."""
    if not path.is_file():
        if path.is_dir():
            raise TableError("a directory, not a table file")
        if path.is_symlink():
            raise TableError("a symbolic link to no file (missing target or a link loop)")
        if path.exists():
            raise TableError("not a regular file")
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise TableError(f"unreadable: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise TableError(f"not UTF-8 text: {error.reason} at byte {error.start}") from error
    except RecursionError as error:
        raise TableError("JSON nested too deeply") from error
    except ValueError as error:  # json.JSONDecodeError, or an integer literal too long
        raise TableError(f"not JSON: {error}") from error
    if data is None:
        raise TableError("JSON null, not a table")
    return data


def read_table(path: Path, target: str, known_tags: frozenset[str],
               decode_tags: frozenset[str] | None = None) -> TileTable | None:
    """The table at `path`, None when nothing is there; TableError naming the problem for
    anything else there, whatever its bytes."""
    data = read_table_data(path)
    return None if data is None else parse_table(data, target, known_tags, str(path), decode_tags)


@functools.lru_cache(maxsize=64)
def load_table(path: Path, target: str, known_tags: frozenset[str],
               decode_tags: frozenset[str] | None = None) -> TileTable | None:
    """The table at `path`, or None when it is absent or invalid (invalid: one log line)."""
    try:
        return read_table(path, target, known_tags, decode_tags)
    except TableError as error:
        logger.warning("rdna_w8a8: ignoring tile table %s (%s); using the built-in choice", path, error)
        return None


def describe_table(path: Path, target: str, known_tags: frozenset[str]) -> str:
    """What the dispatcher makes of the table at `path`: used, absent, or ignored and why."""
    try:
        table = read_table(path, target, known_tags)
    except TableError as error:
        return f"ignored ({error})"
    return "absent" if table is None else f"used ({len(table.entries)} entries)"


def user_table_path(target: str, environ: Mapping[str, str] | None = None) -> Path | None:
    directory = (os.environ if environ is None else environ).get(TUNING_DIR_ENV, "").strip()
    return Path(directory) / f"{target}.json" if directory else None


def shipped_table_path(target: str) -> Path:
    return SHIPPED_TABLES_DIR / f"{target}.json"


def dump_table(target: str, configs: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]],
               occupancy: str | None = None) -> str:
    """Serialize a table in the canonical layout: sorted, one line per (kind, N, K), so
    tables diff line by line and regenerate byte for byte."""
    header: dict[str, Any] = {"format_version": FORMAT_VERSION, "target": target}
    if occupancy is not None:
        header["occupancy"] = occupancy
    lines = ["{"] + [f" {json.dumps(key)}: {json.dumps(value)}," for key, value in header.items()]
    lines.append(' "configs": {')
    kinds = sorted(configs.items())
    for kind_index, (kind, shapes) in enumerate(kinds):
        lines.append(f"  {json.dumps(kind)}: {{")
        rows = sorted(shapes.items(), key=lambda item: _shape_sort_key(item[0]))
        for row_index, (key, buckets) in enumerate(rows):
            ordered = {str(bucket): dict(entry) for bucket, entry in sorted(buckets.items(), key=lambda item: int(item[0]))}
            comma = "," if row_index < len(rows) - 1 else ""
            lines.append(f"   {json.dumps(key)}: {json.dumps(ordered)}{comma}")
        lines.append("  }" + ("," if kind_index < len(kinds) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def _shape_sort_key(key: str) -> tuple[int, int]:
    shape = _SHAPE_KEY.fullmatch(key)
    if shape is None:
        raise TableError(f"bad shape key {key!r} (expected 'N=<int>,K=<int>')")
    return int(shape.group(1)), int(shape.group(2))
