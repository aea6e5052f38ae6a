"""GPU timing shared by the benchmark and the tuner, and the arithmetic of their reports.

Only `require_gfx11` and the timing functions touch the GPU; they refuse to run on
anything but a real gfx11 device (the CPU emulator's times say nothing about a GPU).
"""

from __future__ import annotations

import csv
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import perf_model
from vllm_rdna_w8a8.settings import EMULATE_ENV
BENCH_M_VALUES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
# Rotate over input sets totalling at least this much, so that every timed call reads
# its operands from DRAM: twice the largest gfx11 Infinity Cache (96 MiB, RX 7900 XTX).
ROTATING_BYTES = 2 * 96 * 1024 * 1024
MAX_INPUT_SETS = 64


class NoGfx11Error(RuntimeError):
    """Timing was asked for on a machine without a gfx11 GPU."""


def require_gfx11(device_index: int = 0) -> str:
    """The gfx11 target of the ROCm device, or NoGfx11Error saying why there is none."""
    if os.environ.get(EMULATE_ENV):
        raise NoGfx11Error(
            f"{EMULATE_ENV} is set: timings would measure the CPU emulator, not a GPU; refusing to time "
            "(unset it on a gfx11 machine, or use --dry-run for the model's predictions)")
    try:
        import torch
    except ImportError:
        raise NoGfx11Error("torch is not installed: no GPU to time; use --dry-run for predictions") from None
    if torch.version.hip is None or not torch.cuda.is_available() or torch.cuda.device_count() <= device_index:
        raise NoGfx11Error(
            f"no ROCm GPU {device_index} visible (torch {torch.__version__}, HIP {torch.version.hip}); "
            "this tool only times on gfx11 hardware: use --dry-run for the model's predictions")
    arch = torch.cuda.get_device_properties(device_index).gcnArchName.split(":", 1)[0]
    if arch not in GFX11_TARGETS:
        raise NoGfx11Error(
            f"GPU {device_index} is {arch}, not gfx11 ({', '.join(GFX11_TARGETS)}); refusing to time; "
            "use --dry-run for the model's predictions")
    return arch


def input_sets_needed(bytes_per_set: int) -> int:
    """How many distinct input sets keep the rotation larger than the Infinity Cache."""
    if bytes_per_set < 1:
        raise ValueError(f"bytes per input set must be positive, got {bytes_per_set}")
    return max(2, min(MAX_INPUT_SETS, -(-ROTATING_BYTES // bytes_per_set)))


def median_time_us(run: Callable[[Any], object], input_sets: Sequence[Any], warmup: int = 10,
                   iterations: int = 50) -> float:
    """Median device time of `run(inputs)` in microseconds, rotating over `input_sets`,
    timed with device events (one sync at the end, so launches queue back to back)."""
    import torch

    for index in range(warmup):
        run(input_sets[index % len(input_sets)])
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
    for index in range(iterations):
        inputs = input_sets[(warmup + index) % len(input_sets)]
        starts[index].record()
        run(inputs)
        ends[index].record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in zip(starts, ends)) * 1e3


@dataclass(frozen=True)
class Rates:
    """Throughput of one GEMM at a given time (measured or predicted: the caller labels it)."""

    tops: float
    gb_per_s: float
    percent_of_peak: float  # of the target's paper WMMA peak
    percent_of_bandwidth: float  # of the target's paper DRAM bandwidth


def rates(target: str, m: int, n: int, k: int, time_us: float) -> Rates:
    if time_us <= 0:
        raise ValueError(f"time must be positive, got {time_us} us")
    ops_per_s = perf_model.gemm_ops(m, n, k) / (time_us * 1e-6)
    bytes_per_s = perf_model.gemm_bytes(m, n, k) / (time_us * 1e-6)
    return Rates(
        tops=ops_per_s / 1e12,
        gb_per_s=bytes_per_s / 1e9,
        percent_of_peak=100 * ops_per_s / perf_model.peak_ops_per_s(target),
        percent_of_bandwidth=100 * bytes_per_s / perf_model.dram_bytes_per_s(target),
    )


def geometric_mean(values: Iterable[float]) -> float:
    values = list(values)
    if not values or any(value <= 0 for value in values):
        raise ValueError(f"geometric mean needs positive values, got {values}")
    return statistics.geometric_mean(values)


def write_csv(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    if not rows:
        raise ValueError("no rows to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows as aligned text columns (floats with 3 significant decimals)."""
    if not rows:
        return ""
    columns = list(rows[0])
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(columns)]
    render = lambda values: "  ".join(value.rjust(width) for value, width in zip(values, widths))  # noqa: E731
    return "\n".join([render(columns)] + [render(line) for line in cells])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}"
    return "" if value is None else str(value)
