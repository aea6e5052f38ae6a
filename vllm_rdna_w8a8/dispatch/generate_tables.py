"""Regenerate the shipped per-target tables from the performance model.

    python -m vllm_rdna_w8a8.tune --from-model            # rewrite vllm_rdna_w8a8/tables/*.json
    python -m vllm_rdna_w8a8.tune --from-model --check    # exit 1 if they drifted

Every entry is `"source": "model"`: a prediction, replaced by `"measured"` entries
once someone runs the tuner on the hardware. Keys: every (N, K) of the known
models at TP 1, 2 and 4 (dispatch/model_shapes.py), every M bucket, both kinds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import perf_model, tables
from vllm_rdna_w8a8.dispatch.model_shapes import table_shapes
from vllm_rdna_w8a8.dispatch.tile_configs import KERNEL_KINDS, TileConfig

OCCUPANCY_MODES = ("auto", "assumed", "isa_report")


def occupancies_for(target: str, mode: str) -> tuple[str, dict[str, perf_model.Occupancy]]:
    """(mode actually used, occupancies) for `mode` in OCCUPANCY_MODES."""
    if mode not in OCCUPANCY_MODES:
        raise ValueError(f"occupancy mode must be one of {OCCUPANCY_MODES}, got {mode!r}")
    if mode == "assumed":
        return "assumed", {}
    occupancies = perf_model.load_occupancies(target)
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
    for kind in KERNEL_KINDS:
        for n, k in shapes:
            buckets = result.setdefault(kind, {}).setdefault(tables.shape_key(n, k), {})
            for bucket in tables.M_BUCKETS:
                best = perf_model.rank_configs(target, configs, bucket, n, k, kind, occupancies)[0]
                buckets[str(bucket)] = {"tag": best.config.tag, "source": "model",
                                        "predicted_us": round(best.time_us, 3)}
    return result


def render_table(target: str, configs: tuple[TileConfig, ...], occupancy_mode: str = "assumed") -> str:
    mode, occupancies = occupancies_for(target, occupancy_mode)
    return tables.dump_table(target, model_table(target, configs, occupancies, table_shapes()), occupancy=mode)


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
