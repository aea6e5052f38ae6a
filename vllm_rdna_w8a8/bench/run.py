"""python -m vllm_rdna_w8a8.bench: on gfx11, time our W8A8 GEMM against vLLM's
triton_scaled_mm and torch._int_mm + dequant on a model's linear shapes (rotating inputs
larger than the Infinity Cache, device events, warm-up, medians); print time, TOPS, GB/s,
% of the target's paper peak and bandwidth and the speed-ups; write CSV and a PNG plot.
--dry-run (any machine) prints the performance model's predictions instead, labelled."""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from vllm_rdna_w8a8.bench import timing
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import perf_model
from vllm_rdna_w8a8.dispatch.model_shapes import LinearShape, linear_shapes, resolve_model

EXIT_NO_GFX11 = 3
PREDICTION_BANNER = "PREDICTIONS of the analytic performance model (dispatch/perf_model.py), NOT measurements"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m vllm_rdna_w8a8.bench", description=__doc__)
    parser.add_argument("--model", default="Meta-Llama-3-8B",
                        help="known model name, config.json or model directory (default: Meta-Llama-3-8B)")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size (shards N or K)")
    parser.add_argument("--m", type=int, nargs="+", default=list(timing.BENCH_M_VALUES), help="token counts M")
    parser.add_argument("--kind", choices=("i8", "f8"), default="i8")
    parser.add_argument("--target", choices=sorted(GFX11_TARGETS),
                        help="target to predict for with --dry-run (default gfx1100; timing uses the GPU's)")
    parser.add_argument("--dry-run", action="store_true", help="print the model's predictions; time nothing")
    parser.add_argument("--csv", type=Path, default=Path("rdna_w8a8_bench.csv"))
    parser.add_argument("--plot", type=Path, default=Path("rdna_w8a8_bench.png"))
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--wmma-ceiling-tops", type=float,
                        help="a measured WMMA ceiling of this GPU (TOPS): adds a pct_ceiling column")
    args = parser.parse_args(argv)
    if any(m < 1 for m in args.m):
        parser.error("every --m must be >= 1")
    if args.warmup < 0 or args.iterations < 1:
        parser.error("--warmup must be >= 0 and --iterations >= 1")
    if args.target and not args.dry_run:
        parser.error("--target only applies to --dry-run (timing uses the GPU's own target)")
    if args.wmma_ceiling_tops is not None and not (0 < args.wmma_ceiling_tops < math.inf):  # NaN fails too
        parser.error(f"--wmma-ceiling-tops must be a positive finite number, got {args.wmma_ceiling_tops}")
    return args


def add_ceiling_column(rows: list[dict[str, Any]], tops_column: str, ceiling_tops: float) -> None:
    """Percent of a measured WMMA ceiling (the issue's prefill target is >= 85% of it)."""
    for row in rows:
        row["pct_ceiling"] = 100 * row[tops_column] / ceiling_tops if row.get(tops_column) else None


def predicted_rows(target: str, shapes: Sequence[LinearShape], m_values: Sequence[int], kind: str) -> list[dict[str, Any]]:
    """One row per (layer, M): the dispatcher's config and the model's predicted time."""
    from vllm_rdna_w8a8.dispatch import pick_gemm_config, ranked_candidates

    rows = []
    for shape in shapes:
        for m in m_values:
            config = pick_gemm_config(target, m, shape.n, shape.k, kind)
            prediction = next(candidate for candidate in ranked_candidates(target, m, shape.n, shape.k, kind)
                              if candidate.config == config)
            floors = perf_model.floors(target, m, shape.n, shape.k)
            rates = timing.rates(target, m, shape.n, shape.k, prediction.time_us)
            rows.append({
                "layer": shape.layer, "M": m, "N": shape.n, "K": shape.k, "config": config.tag,
                "predicted_us": prediction.time_us, "predicted_TOPS": rates.tops,
                "predicted_GB/s": rates.gb_per_s, "pct_peak": rates.percent_of_peak,
                "pct_bw": rates.percent_of_bandwidth, "compute_floor_us": floors.compute_us,
                "memory_floor_us": floors.memory_us, "floor_binds": floors.binding,
            })
    return rows


def rotating_int8_inputs(m: int, n: int, k: int, device: str = "cuda") -> list[tuple[Any, ...]]:
    """Enough (a, b, a_scale, b_scale) sets that cycling through them overflows the
    Infinity Cache, so each timed call reads its operands from DRAM."""
    import torch

    sets = timing.input_sets_needed(m * k + n * k + 4 * (m + n))
    return [(
        torch.randint(-128, 128, (m, k), dtype=torch.int8, device=device),
        torch.randint(-128, 128, (n, k), dtype=torch.int8, device=device),
        torch.rand(m, dtype=torch.float32, device=device) / 64,
        torch.rand(n, dtype=torch.float32, device=device) / 64,
    ) for _ in range(sets)]


def implementations() -> dict[str, Callable[[tuple[Any, ...]], object]]:
    """Our op and the two baselines, each computing fp16 out = (a @ b^T) * a_scale * b_scale."""
    import torch
    from vllm_rdna_w8a8.ops.custom_ops import int8_scaled_mm
    from vllm.model_executor.layers.quantization.compressed_tensors.triton_scaled_mm import triton_scaled_mm

    def ours(inputs: tuple[Any, ...]) -> object:
        a, b, a_scale, b_scale = inputs
        return int8_scaled_mm(a, b, a_scale, b_scale, torch.float16)

    def triton(inputs: tuple[Any, ...]) -> object:
        a, b, a_scale, b_scale = inputs
        return triton_scaled_mm(a, b.t(), a_scale, b_scale, torch.float16)

    def int_mm_dequant(inputs: tuple[Any, ...]) -> object:
        a, b, a_scale, b_scale = inputs
        return (torch._int_mm(a, b.t()).float() * a_scale[:, None] * b_scale[None, :]).half()

    return {"ours": ours, "triton_scaled_mm": triton, "int_mm_dequant": int_mm_dequant}


def gpu_times(shape: LinearShape, m: int, impls: Mapping[str, Callable[[tuple[Any, ...]], object]],
              warmup: int, iterations: int) -> dict[str, float | None]:
    """Median device time (us) of each implementation on one shape; None where it fails."""
    import torch

    inputs = rotating_int8_inputs(m, shape.n, shape.k)
    times: dict[str, float | None] = {}
    for name, run in impls.items():
        try:
            times[name] = timing.median_time_us(run, inputs, warmup, iterations)
        except RuntimeError as error:  # e.g. torch._int_mm's shape limits: report, keep going
            print(f"  {name} M={m} N={shape.n} K={shape.k}: not timed ({error})", file=sys.stderr)
            times[name] = None
    del inputs
    torch.cuda.empty_cache()
    return times


def measured_row(target: str, shape: LinearShape, m: int, config_tag: str,
                 times: Mapping[str, float | None]) -> dict[str, Any]:
    """One report row from measured times: rates of ours, speed-up over each baseline."""
    ours, triton, int_mm = times["ours"], times["triton_scaled_mm"], times["int_mm_dequant"]
    rates = timing.rates(target, m, shape.n, shape.k, ours) if ours else None
    return {
        "layer": shape.layer, "M": m, "N": shape.n, "K": shape.k, "config": config_tag,
        "ours_us": ours, "triton_us": triton, "int_mm_us": int_mm,
        "TOPS": rates.tops if rates else None, "GB/s": rates.gb_per_s if rates else None,
        "pct_peak": rates.percent_of_peak if rates else None,
        "pct_bw": rates.percent_of_bandwidth if rates else None,
        "x_triton": triton / ours if ours and triton else None,
        "x_int_mm": int_mm / ours if ours and int_mm else None,
    }


def measured_rows(target: str, shapes: Sequence[LinearShape], m_values: Sequence[int],
                  time_shape: Callable[[LinearShape, int], Mapping[str, float | None]]) -> list[dict[str, Any]]:
    from vllm_rdna_w8a8.dispatch import pick_gemm_config

    return [measured_row(target, shape, m, pick_gemm_config(target, m, shape.n, shape.k).tag, time_shape(shape, m))
            for shape in shapes for m in m_values]


def write_plot(path: Path, rows: Sequence[dict[str, Any]], time_columns: dict[str, str], title: str) -> str:
    """TOPS over M per layer from the rows' time columns (us); returns what was written,
    or why nothing was."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib); the CSV has every figure"
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    figure, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.5), squeeze=False)
    for axis, layer in zip(axes[0], layers):
        layer_rows = [row for row in rows if row["layer"] == layer]
        for column, label in time_columns.items():
            points = [(row["M"], perf_model.gemm_ops(row["M"], row["N"], row["K"]) / row[column] / 1e6)
                      for row in layer_rows if row.get(column)]
            if points:
                axis.plot(*zip(*points), marker="o", label=label)
        axis.set_xscale("log", base=2)
        axis.set_title(f"{layer} N={layer_rows[0]['N']} K={layer_rows[0]['K']}", fontsize=9)
        axis.set_xlabel("M (tokens)")
        axis.set_ylabel("TOPS")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return f"plot: {path}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        dims = resolve_model(args.model)
        shapes = linear_shapes(dims, args.tp)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        target = args.target or "gfx1100"
        try:
            rows = predicted_rows(target, shapes, args.m, args.kind)
        except (ValueError, FileNotFoundError) as error:  # no or invalid kernel table
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.wmma_ceiling_tops:
            add_ceiling_column(rows, "predicted_TOPS", args.wmma_ceiling_tops)
        print(f"{PREDICTION_BANNER}\n{dims.name} tp={args.tp} kind={args.kind} on {target} "
              f"({perf_model.DEVICE_PEAKS[target].product}, paper peaks: "
              f"{perf_model.peak_ops_per_s(target) / 1e12:.1f} TOPS, {perf_model.DEVICE_PEAKS[target].dram_gb_per_s:.0f} GB/s)")
        print(timing.format_table(rows))
        return 0
    if args.kind != "i8":
        print("error: timing covers the int8 path (the baselines are int8); use --dry-run for f8", file=sys.stderr)
        return 2
    try:
        target = timing.require_gfx11()
    except timing.NoGfx11Error as error:
        print(f"refusing to benchmark: {error}", file=sys.stderr)
        return EXIT_NO_GFX11
    impls = implementations()
    rows = measured_rows(target, shapes, args.m, functools.partial(
        gpu_times, impls=impls, warmup=args.warmup, iterations=args.iterations))
    if args.wmma_ceiling_tops:
        add_ceiling_column(rows, "TOPS", args.wmma_ceiling_tops)
    print(f"MEASURED on {target} ({dims.name} tp={args.tp}); medians of {args.iterations} device-event timings")
    print(timing.format_table(rows))
    speedups = [row["x_triton"] for row in rows if row["x_triton"]]
    if speedups:
        print(f"geometric mean speed-up over triton_scaled_mm: {timing.geometric_mean(speedups):.3f}x "
              f"over {len(speedups)} shapes")
    timing.write_csv(args.csv, rows)
    print(f"csv: {args.csv}")
    print(write_plot(args.plot, rows, {"ours_us": "rdna_w8a8", "triton_us": "triton_scaled_mm",
                                       "int_mm_us": "torch._int_mm+dequant"}, f"{dims.name} tp={args.tp} on {target}"))
    return 0
