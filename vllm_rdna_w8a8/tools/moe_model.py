"""Floors and model predictions of one MoE layer's expert GEMMs on gfx11 targets (issue 14).

    python -m vllm_rdna_w8a8.tools.moe_model [--model Qwen3-30B-A3B] [--tp 1]
        [--targets gfx1151 gfx1100] [--tokens 1 8 64 512 4096]

Per target and token count T, one Markdown row: the two floors of the layer's w13 and w2 GEMMs
(`perf_model.moe_expert_floors`: paper peaks, uniform routing) and which binds; then, for int8
and fp8, the tiles the dispatch picks for our two grouped launches (`dispatch.pick_moe_config`)
and the performance model's predicted time of the pair (`perf_model.predict_grouped` at the
dispatch's `routed_load`) with the term that bounds the slower launch. Only the two grouped
GEMM launches: not the quantization, SiLU-and-mul and top-k combine around them. Floors are
arithmetic and predictions are the model's; nothing is measured.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Sequence

from vllm_rdna_w8a8 import dispatch
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import perf_model
from vllm_rdna_w8a8.dispatch.model_shapes import (
    MoeDims,
    expected_active_experts,
    expert_shapes,
    resolve_moe_model,
    routed_load,
)
from vllm_rdna_w8a8.dispatch.tile_configs import MOE_KIND_OF_OPERAND

DEFAULT_TOKENS = (1, 8, 64, 512, 4096)


@dataclass(frozen=True)
class GroupedPrediction:
    """The model's prediction for a layer's two grouped launches of one operand kind."""

    tags: tuple[str, ...]  # the picked tile per launch (w13, w2)
    time_us: float  # sum of the launches' predicted times
    bound: str  # the term bounding the slower launch


@dataclass(frozen=True)
class LayerRow:
    target: str
    tokens: int
    expected_active_experts: float
    floors: perf_model.Floors
    active_experts: int  # the dispatch's load (routed_load)
    tokens_per_expert: int
    predictions: dict[str, GroupedPrediction]  # by operand kind


def layer_row(target: str, dims: MoeDims, tp: int, tokens: int) -> LayerRow:
    load = routed_load(dims.num_experts, dims.experts_per_token, tokens)
    predictions: dict[str, GroupedPrediction] = {}
    for kind, moe_kind in MOE_KIND_OF_OPERAND.items():
        launches = []
        for shape in expert_shapes(dims, tp):
            config = dispatch.pick_moe_config(target, tokens, dims.experts_per_token, dims.num_experts,
                                              shape.n, shape.k, kind)
            launches.append(perf_model.predict_grouped(target, config, load.active_experts, load.tokens_per_expert,
                                                       shape.n, shape.k, moe_kind))
        slowest = max(launches, key=lambda prediction: prediction.time_us)
        predictions[kind] = GroupedPrediction(tuple(launch.config.tag for launch in launches),
                                              sum(launch.time_us for launch in launches), slowest.bound)
    return LayerRow(target, tokens, expected_active_experts(dims, tokens),
                    perf_model.moe_expert_floors(target, dims, tp, tokens), load.active_experts,
                    load.tokens_per_expert, predictions)


def render(rows: Sequence[LayerRow]) -> str:
    header = ("| target | tokens T | experts active (uniform routing, expected) | dispatch load: experts x rows "
              "| compute floor (us) | memory floor (us) | floor binds | int8 tiles w13 / w2 (dispatch) "
              "| int8 model prediction (us) | fp8 tiles w13 / w2 (dispatch) | fp8 model prediction (us) |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in rows:
        cells = [row.target, str(row.tokens), f"{row.expected_active_experts:.1f}",
                 f"{row.active_experts} x {row.tokens_per_expert}", f"{row.floors.compute_us:.1f}",
                 f"{row.floors.memory_us:.1f}", row.floors.binding]
        for kind in MOE_KIND_OF_OPERAND:
            prediction = row.predictions[kind]
            cells += [" / ".join(prediction.tags), f"{prediction.time_us:.1f} ({prediction.bound})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_rdna_w8a8.tools.moe_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Qwen3-30B-A3B", help="a known MoE model (dispatch/model_shapes.py)")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    parser.add_argument("--targets", nargs="+", choices=sorted(GFX11_TARGETS), default=["gfx1151", "gfx1100"])
    parser.add_argument("--tokens", type=int, nargs="+", default=list(DEFAULT_TOKENS))
    args = parser.parse_args(argv)
    if any(tokens < 1 for tokens in args.tokens):
        parser.error("every --tokens must be >= 1")
    try:
        dims = resolve_moe_model(args.model)
        rows = [layer_row(target, dims, args.tp, tokens) for target in args.targets for tokens in args.tokens]
    except ValueError as error:
        parser.error(str(error))
    print(f"{dims.name}, TP {args.tp}: one MoE layer's expert GEMMs. Floors from paper peaks; "
          f"predictions of the analytic model (dispatch/perf_model.py); nothing measured.")
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
