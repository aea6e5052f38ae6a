"""Regenerate the shipped per-target tables from the performance model.

    python -m vllm_rdna_w8a8.tune --from-model            # rewrite vllm_rdna_w8a8/tables/*.json
    python -m vllm_rdna_w8a8.tune --from-model --check    # exit 1 if they drifted

Every entry is `"source": "model"`: a prediction, replaced by `"measured"` entries
once someone runs the tuner on the hardware. Keys: every (N, K) of the known
models at TP 1, 2 and 4 and of the known MoE models' shared experts (dispatch/model_shapes.py),
every M bucket of the int8 and fp8 GEMMs, and M buckets 1-16 of the fused quantize + int8
GEMM launch (i8q); for the grouped MoE launches (i8_moe, f8_moe) every expert (N, K) of the
known MoE models at TP 1 and 2, with every M bucket as tokens per expert (`moe_bucket_load`).
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import perf_model, tables
from vllm_rdna_w8a8.dispatch.model_shapes import MoeDims, RoutedLoad, moe_table_shapes, routed_load, table_shapes
from vllm_rdna_w8a8.dispatch.tile_configs import FUSED_KIND, MOE_KINDS, WAVE_SIZE, TileConfig

if TYPE_CHECKING:
    from vllm_rdna_w8a8.tools.isa_report import KernelReport

logger = logging.getLogger(__name__)

OCCUPANCY_MODES = ("auto", "assumed", "isa_report")


def occupancies_from_isa_report(reports: Iterable[KernelReport], target_name: str) -> dict[str, perf_model.Occupancy]:
    """Occupancy per kernel name from `vllm_rdna_w8a8.tools.isa_report` rows of one target."""
    result: dict[str, perf_model.Occupancy] = {}
    for report in reports:
        if report.target != target_name:
            continue
        global_bytes = sum(count * _load_width_bytes(op) * WAVE_SIZE for op, count in report.main_loop_loads.items()
                           if op.startswith(("global_load", "buffer_load")))
        if global_bytes == 0:
            continue  # no main-loop load figures: the estimate is better than zero
        result[report.kernel] = perf_model.Occupancy(
            waves_per_simd=float(report.waves_per_simd),
            lds_bytes=int(report.lds_bytes),
            global_bytes_per_wave_iteration=global_bytes,
            source="isa_report",
        )
    return result


def _load_width_bytes(opcode: str) -> int:
    """Bytes per lane of a gfx11 load: `global_load_b128` -> 16, `global_load_u8` -> 1,
    `global_load_d16_b16` -> 2, `global_load_i16` -> 2; anything else one dword."""
    suffix = opcode.rsplit("_", 1)[-1]
    if suffix.startswith("b") and suffix[1:].isdigit():
        return int(suffix[1:]) // 8
    if suffix in ("u8", "i8"):
        return 1
    if suffix in ("u16", "i16"):
        return 2
    return 4


def load_occupancies(target_name: str, objects_dir: Path | None = None) -> dict[str, perf_model.Occupancy]:
    """Occupancies from the ISA report of the compiled objects (disassembled with LLVM's
    objdump: a developer step, never run while serving); empty when there are no objects
    or no report tool."""
    from vllm_rdna_w8a8.tools.isa_report import DEFAULT_OBJECTS_DIR, isa_report

    objects_dir = objects_dir or DEFAULT_OBJECTS_DIR
    if not (objects_dir / target_name).is_dir():
        logger.info("rdna_w8a8 table generation: occupancy assumed from tile geometry (no code objects in %s)",
                    objects_dir / target_name)
        return {}
    try:
        return occupancies_from_isa_report(isa_report(objects_dir, targets=[target_name]), target_name)
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as error:
        # No llvm-objdump or an unreadable object: the estimate serves.
        logger.info("rdna_w8a8 table generation: no ISA report (%s); occupancy assumed from tile geometry", error)
        return {}


def occupancies_for(target: str, mode: str) -> tuple[str, dict[str, perf_model.Occupancy]]:
    """(mode actually used, occupancies) for `mode` in OCCUPANCY_MODES."""
    if mode not in OCCUPANCY_MODES:
        raise ValueError(f"occupancy mode must be one of {OCCUPANCY_MODES}, got {mode!r}")
    if mode == "assumed":
        return "assumed", {}
    occupancies = load_occupancies(target)
    if not occupancies and mode == "isa_report":
        raise ValueError(f"no ISA report for {target}: build the code objects first (python -m vllm_rdna_w8a8.build)")
    return ("isa_report" if occupancies else "assumed"), occupancies


def model_table(
    target: str, configs: tuple[TileConfig, ...], occupancies: Mapping[str, perf_model.Occupancy],
    shapes: Iterable[tuple[int, int]],
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """{kind: {"N=..,K=..": {bucket: entry}}} with the model's pick at each bucket's upper M."""
    shapes = list(shapes)
    result: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for kind in tables.TABLE_KINDS:
        if kind in MOE_KINDS:
            continue
        for n, k in shapes:
            buckets = result.setdefault(kind, {}).setdefault(tables.shape_key(n, k), {})
            for bucket in tables.FUSED_M_BUCKETS if kind == FUSED_KIND else tables.M_BUCKETS:
                buckets[str(bucket)] = _model_entry(perf_model.rank_configs(target, configs, bucket, n, k, kind,
                                                                            occupancies))
    return result


def moe_bucket_load(dims: MoeDims, bucket: int) -> RoutedLoad:
    """The launch a MoE table bucket is chosen for: `bucket` tokens per expert (its upper bound,
    as the dense buckets' upper M) over the experts active at the largest token count whose
    `routed_load` still falls in the bucket (found by bisection: tokens per expert grows with
    the token count)."""
    def fits(tokens: int) -> bool:
        return routed_load(dims.num_experts, dims.experts_per_token, tokens).tokens_per_expert <= bucket

    low, high = 1, -(-bucket * dims.num_experts // dims.experts_per_token) + 1  # fits(low), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    active = routed_load(dims.num_experts, dims.experts_per_token, low).active_experts
    return RoutedLoad(active, bucket)


def moe_model_table(
    target: str, configs: tuple[TileConfig, ...], occupancies: Mapping[str, perf_model.Occupancy],
    shapes: Mapping[tuple[int, int], MoeDims],
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """{MoE kind: {"N=..,K=..": {bucket: entry}}}: the grouped model's pick per expert shape at
    each bucket's launch (`moe_bucket_load`, with the shape's model's routing)."""
    result: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for kind in MOE_KINDS:
        for (n, k), dims in shapes.items():
            buckets = result.setdefault(kind, {}).setdefault(tables.shape_key(n, k), {})
            for bucket in tables.M_BUCKETS:
                load = moe_bucket_load(dims, bucket)
                buckets[str(bucket)] = _model_entry(perf_model.rank_grouped_configs(
                    target, configs, load.active_experts, load.tokens_per_expert, n, k, kind, occupancies))
    return result


def _model_entry(ranked: list[perf_model.Prediction]) -> dict[str, Any]:
    return {"tag": ranked[0].config.tag, "source": "model", "predicted_us": round(ranked[0].time_us, 3)}


def render_table(target: str, configs: tuple[TileConfig, ...], occupancy_mode: str = "assumed") -> str:
    mode, occupancies = occupancies_for(target, occupancy_mode)
    configs_by_kind = model_table(target, configs, occupancies, table_shapes())
    configs_by_kind.update(moe_model_table(target, configs, occupancies, moe_table_shapes()))
    return tables.dump_table(target, configs_by_kind, occupancy=mode)


def recorded_occupancy_mode(path: Path) -> str:
    """The occupancy mode a shipped table was generated with (to regenerate it alike)."""
    mode = json.loads(path.read_text()).get("occupancy", "assumed")
    if mode not in OCCUPANCY_MODES[1:]:
        raise ValueError(f"{path}: unknown occupancy mode {mode!r}")
    return mode


def write_tables(configs: tuple[TileConfig, ...], directory: Path, targets: Iterable[str] = tuple(GFX11_TARGETS),
                 occupancy_mode: str = "assumed", check: bool = False) -> list[Path]:
    """Write (or with `check`, compare) one table per target; returns the paths that differ."""
    differing: list[Path] = []
    for target in targets:
        path = directory / f"{target}.json"
        mode = recorded_occupancy_mode(path) if check and path.is_file() else occupancy_mode
        text = render_table(target, configs, mode)
        if not path.is_file() or path.read_text() != text:
            differing.append(path)
            if not check:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return differing
