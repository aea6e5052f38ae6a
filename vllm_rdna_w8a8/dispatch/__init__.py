"""Shape-tuned choice of the GEMM tile config for each gfx11 target.

`pick_gemm_config(target, m, n, k, kind)` is a pure function of the shape and the
device facts, cached by shape, and only returns rows of the kernel table (so only
compiled kernels); `pick_moe_config` is its form for a grouped expert GEMM launch, keyed
by tokens per expert. Where the choice comes from, first match wins:
  1. the user's table `$VLLM_RDNA_W8A8_TUNING_DIR/<target>.json` (`python -m vllm_rdna_w8a8.tune`),
  2. the table shipped for the target (`vllm_rdna_w8a8/tables/<target>.json`),
  3. the analytic performance model (`dispatch/perf_model.py`).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

from vllm_rdna_w8a8.build.targets import get_target
from vllm_rdna_w8a8.dispatch import perf_model, tables
from vllm_rdna_w8a8.dispatch.model_shapes import routed_load
from vllm_rdna_w8a8.dispatch.tile_configs import (
    FUSED_KIND,
    FUSED_QUANT_MAX_M,
    MOE_KIND_OF_OPERAND,
    TileConfig,
    TileConfigError,
    configs_by_tag,
    load_tile_configs,
)

__all__ = [
    "TileConfig",
    "TileConfigError",
    "clear_dispatch_caches",
    "forced_gemm_config",
    "fused_decode_config",
    "load_tile_configs",
    "model_choice",
    "ranked_candidates",
    "pick_gemm_config",
    "pick_moe_config",
]

# Set only by the tuner, which times each candidate through the production op.
_forced_config: TileConfig | None = None


def pick_gemm_config(target: str, m: int, n: int, k: int, kind: str = "i8") -> TileConfig:
    """The tile config for C[M, N] = A[M, K] x B[N, K]^T on `target` (e.g. "gfx1100")."""
    if _forced_config is not None:
        return _forced_config
    return _pick_cached(target, m, n, k, kind)


def pick_moe_config(target: str, tokens: int, top_k: int, num_experts: int, n: int, k: int,
                    kind: str = "i8") -> TileConfig:
    """The tile config of one grouped expert GEMM launch (kernels/moe_gemm.hip) of `tokens`
    tokens routed each to `top_k` of `num_experts` experts whose weights are [N, K], operands of
    `kind` ("i8" or "f8"): the tables' entry of the MoE kind at the tokens per expert that
    `model_shapes.routed_load` expects, else the grouped model's fastest config for that load."""
    if _forced_config is not None:
        return _forced_config
    return _pick_moe_cached(target, tokens, top_k, num_experts, n, k, kind)


@functools.lru_cache(maxsize=4096)
def _pick_moe_cached(target: str, tokens: int, top_k: int, num_experts: int, n: int, k: int,
                     kind: str) -> TileConfig:
    target_name = get_target(target).name
    _check_positive_ints("pick_moe_config", tokens=tokens, top_k=top_k, num_experts=num_experts, N=n, K=k)
    if kind not in MOE_KIND_OF_OPERAND:
        raise ValueError(f"pick_moe_config: kind must be one of {tuple(MOE_KIND_OF_OPERAND)}, got {kind!r}")
    moe_kind = MOE_KIND_OF_OPERAND[kind]
    load = routed_load(num_experts, top_k, tokens)
    entry = _table_entry(target_name, moe_kind, load.tokens_per_expert, n, k)
    if entry is not None:
        return entry
    return perf_model.rank_grouped_configs(target_name, load_tile_configs(), load.active_experts,
                                           load.tokens_per_expert, n, k, moe_kind)[0].config


def fused_decode_config(target: str, m: int, n: int, k: int) -> TileConfig | None:
    """The config of a fused quantize + int8 GEMM launch (`TileConfig.fused_kernel_name`) for
    an int8 layer at M <= 16, or None for two launches (quantization, then the GEMM): the pick
    of kind FUSED_KIND (the tables' fused entries, else the model of the fused launch), when it
    is a decode tile (a forced prefill config means two launches). Both paths give the same bits."""
    if m > FUSED_QUANT_MAX_M:
        return None
    config = pick_gemm_config(target, m, n, k, FUSED_KIND)
    return config if config.is_decode else None


@contextlib.contextmanager
def forced_gemm_config(config: TileConfig) -> Iterator[None]:
    """Every pick returns `config` inside the block (the tuner's way to time one config)."""
    global _forced_config
    if config not in load_tile_configs():
        raise ValueError(f"tile config {config.tag!r} is not a row of the kernel table")
    previous, _forced_config = _forced_config, config
    try:
        yield
    finally:
        _forced_config = previous


@functools.lru_cache(maxsize=4096)
def _pick_cached(target: str, m: int, n: int, k: int, kind: str) -> TileConfig:
    target_name = get_target(target).name
    _check_positive_ints("pick_gemm_config", M=m, N=n, K=k)
    if kind not in perf_model.MODEL_KINDS:
        raise ValueError(f"pick_gemm_config: kind must be one of {perf_model.MODEL_KINDS}, got {kind!r}")

    return _table_entry(target_name, kind, m, n, k) or model_choice(target_name, m, n, k, kind)


def _check_positive_ints(caller: str, **values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{caller}: {name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{caller}: {name} must be >= 1, got {value}")


def _table_entry(target_name: str, kind: str, m: int, n: int, k: int) -> TileConfig | None:
    """The config the user's table, else the shipped table, holds for the shape; None if neither."""
    by_tag = configs_by_tag(load_tile_configs())
    known_tags = frozenset(by_tag)
    decode_tags = frozenset(tag for tag, config in by_tag.items() if config.is_decode)
    for path in (tables.user_table_path(target_name), tables.shipped_table_path(target_name)):
        table = tables.load_table(path, target_name, known_tags, decode_tags) if path is not None else None
        entry = table.lookup(kind, n, k, m) if table is not None else None
        if entry is not None:
            return by_tag[entry.tag]
    return None


def model_choice(target: str, m: int, n: int, k: int, kind: str = "i8") -> TileConfig:
    """The analytic model's fastest config for the exact shape (a prediction)."""
    return ranked_candidates(target, m, n, k, kind)[0].config


def ranked_candidates(target: str, m: int, n: int, k: int, kind: str = "i8") -> list[perf_model.Prediction]:
    """Every config of the kernel table with the model's predicted time, best first, with
    occupancy estimated from the tile rows as the shipped tables were made: a serving
    process never starts an LLVM tool, and its picks do not depend on one being installed."""
    target_name = get_target(target).name
    return perf_model.rank_configs(target_name, load_tile_configs(), m, n, k, kind)


def clear_dispatch_caches() -> None:
    """Forget cached choices and tables (after writing a new table, and in tests)."""
    _pick_cached.cache_clear()
    _pick_moe_cached.cache_clear()
    tables.load_table.cache_clear()
    load_tile_configs.cache_clear()
