"""python -m vllm_rdna_w8a8.tune: on gfx11, time every tile config of the kernel table on a
model's linear shapes and write the fastest per (N, K, M bucket) into the user table that
the dispatcher reads ($VLLM_RDNA_W8A8_TUNING_DIR/<target>.json). --dry-run (any machine)
lists the shapes, the candidates and the model's predicted times; --from-model rewrites the
shipped tables from the performance model; --from-selftest REPORT takes the timings that
`python -m vllm_rdna_w8a8 selftest --report REPORT` measured on a gfx11 GPU."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from vllm_rdna_w8a8 import dispatch
from vllm_rdna_w8a8.bench import timing
from vllm_rdna_w8a8.bench.run import EXIT_NO_GFX11, PREDICTION_BANNER, implementations, rotating_int8_inputs
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import perf_model, tables
from vllm_rdna_w8a8.dispatch.model_shapes import LinearShape, linear_shapes, resolve_model
from vllm_rdna_w8a8.dispatch.tile_configs import TileConfig, load_tile_configs
from vllm_rdna_w8a8.tune import generate_tables

EXIT_TABLES_DRIFTED = 1
EXIT_WRITE_FAILED = 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m vllm_rdna_w8a8.tune", description=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="known model name, config.json or model directory")
    what.add_argument("--from-model", action="store_true",
                      help="regenerate the per-target tables from the performance model (no GPU needed)")
    what.add_argument("--from-selftest", type=Path, metavar="REPORT",
                      help="write the fastest config per shape and M bucket that a selftest report "
                           "measured (python -m vllm_rdna_w8a8 selftest --report REPORT on a gfx11 GPU)")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size (with --model)")
    parser.add_argument("--m", type=int, nargs="+", default=list(tables.M_BUCKETS),
                        help="token counts M to tune (default: every table bucket's upper bound)")
    parser.add_argument("--kind", choices=("i8", "f8"), default="i8")
    parser.add_argument("--target", choices=sorted(GFX11_TARGETS), help="target for --dry-run (default gfx1100)")
    parser.add_argument("--targets", nargs="+", choices=sorted(GFX11_TARGETS), default=sorted(GFX11_TARGETS),
                        help="targets for --from-model")
    parser.add_argument("--dry-run", action="store_true", help="list shapes, candidates and predicted times")
    parser.add_argument("--output-dir", type=Path,
                        help=f"where tables go (default: ${tables.TUNING_DIR_ENV}; with --from-model the package's tables)")
    parser.add_argument("--check", action="store_true", help="with --from-model: exit 1 if the tables differ")
    parser.add_argument("--occupancy", choices=generate_tables.OCCUPANCY_MODES, default="assumed",
                        help="with --from-model: occupancy estimated from the tile rows (default: the tables "
                             "then depend only on gemm_configs.def), from the ISA report of the compiled "
                             "objects, or auto (the report when present)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args(argv)
    if any(m < 1 for m in args.m):
        parser.error("every --m must be >= 1")
    if args.check and not args.from_model:
        parser.error("--check only applies to --from-model")
    if args.dry_run and args.from_selftest:
        parser.error("--dry-run does not apply to --from-selftest (it writes measured timings)")
    if args.target and not args.dry_run:
        parser.error("--target only applies to --dry-run (timing uses the GPU's own target)")
    return args


def dry_run(target: str, shapes: Sequence[LinearShape], m_values: Iterable[int], kind: str) -> None:
    print(f"{PREDICTION_BANNER}\ncandidates on {target} ({perf_model.DEVICE_PEAKS[target].product}), "
          f"kind={kind}, best first; '*' marks the dispatcher's current choice")
    for shape in shapes:
        for m in m_values:
            floors = perf_model.floors(target, m, shape.n, shape.k)
            chosen = dispatch.pick_gemm_config(target, m, shape.n, shape.k, kind)
            print(f"{shape.layer} M={m} N={shape.n} K={shape.k}: floors compute {floors.compute_us:.3f} us, "
                  f"memory {floors.memory_us:.3f} us ({floors.binding} binds)")
            for prediction in dispatch.ranked_candidates(target, m, shape.n, shape.k, kind):
                mark = "*" if prediction.config == chosen else " "
                print(f"  {mark} {prediction.config.tag:<22} predicted {prediction.time_us:10.3f} us  "
                      f"({prediction.bound} bound, {prediction.tiles} tiles, "
                      f"{100 * prediction.padding_waste:.0f}% padding, occupancy {prediction.occupancy_source})")


def _progress(total: int) -> Any:
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="config", file=sys.stderr)
    except ImportError:
        return None


CandidateTimer = Callable[[LinearShape, int, Sequence[TileConfig]], Sequence[float]]


def best_measured(shapes: Sequence[LinearShape], m_values: Sequence[int], ranked: Callable[[LinearShape, int], Sequence[TileConfig]],
                  time_candidates: CandidateTimer, device_name: str, date: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{shape key: {bucket: measured entry}}: the fastest candidate per (shape, M). Candidates
    are timed in the model's order and a later one must be strictly faster, so the model's
    pick wins ties."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for shape in shapes:
        for m in m_values:
            candidates = list(ranked(shape, m))
            times = list(time_candidates(shape, m, candidates))
            if len(times) != len(candidates):
                raise ValueError(f"timer returned {len(times)} times for {len(candidates)} candidates")
            best = min(range(len(candidates)), key=lambda index: (times[index], index))
            result.setdefault(tables.shape_key(shape.n, shape.k), {})[str(tables.m_bucket(m))] = {
                "tag": candidates[best].tag, "source": "measured", "device_name": device_name,
                "date": date, "measured_us": round(times[best], 3)}
    return result


def gpu_candidate_timer(warmup: int, iterations: int, progress: Any) -> CandidateTimer:
    """Times each candidate through the production op, forced to that config."""
    import torch

    ours = implementations()["ours"]

    def time_candidates(shape: LinearShape, m: int, candidates: Sequence[TileConfig]) -> list[float]:
        inputs = rotating_int8_inputs(m, shape.n, shape.k)
        times = []
        for config in candidates:
            with dispatch.forced_gemm_config(config):
                times.append(timing.median_time_us(ours, inputs, warmup, iterations))
            if progress is not None:
                progress.update(1)
        del inputs
        torch.cuda.empty_cache()
        return times

    return time_candidates


def _move_aside(path: Path) -> Path:
    """Rename whatever is at `path` (file, directory or link) to a free `<name>.invalid-<time>`."""
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.invalid-{stamp}")
    suffix = 1
    while aside.exists() or aside.is_symlink():
        suffix += 1
        aside = path.with_name(f"{path.name}.invalid-{stamp}-{suffix}")
    os.replace(path, aside)
    return aside


def merge_into_user_table(path: Path, target: str, kind: str, measured: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Add the measured entries to the user's table, keeping its other entries. Whatever is
    at `path` and is not a valid table is moved aside (the message says where), never
    dropped, and never the reason to lose the measurements."""
    configs: dict[str, Any] = {}
    try:
        existing = tables.read_table_data(path)
        if existing is not None:
            tables.parse_table(existing, target, frozenset(c.tag for c in load_tile_configs()), str(path))
            configs = existing["configs"]
    except tables.TableError as error:
        aside = _move_aside(path)
        print(f"moved the invalid table {path} aside to {aside} ({error}); writing a new one", file=sys.stderr)
    for key, buckets in measured.items():
        configs.setdefault(kind, {}).setdefault(key, {}).update(buckets)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tables.dump_table(target, configs))


def regenerate(args: argparse.Namespace) -> int:
    directory = args.output_dir or tables.SHIPPED_TABLES_DIR
    differing = generate_tables.write_tables(load_tile_configs(), directory, args.targets, args.occupancy, args.check)
    if args.check:
        for path in differing:
            print(f"differs from the model's output: {path} (regenerate: python -m vllm_rdna_w8a8.tune --from-model)")
        return EXIT_TABLES_DRIFTED if differing else 0
    print(f"wrote {len(differing)} changed table(s) in {directory} (model predictions, source=model)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.from_model:
            return regenerate(args)
        shapes = [] if args.from_selftest else linear_shapes(resolve_model(args.model), args.tp)
        if args.dry_run:
            dry_run(args.target or "gfx1100", shapes, args.m, args.kind)
            return 0
    except (ValueError, FileNotFoundError) as error:  # a TileConfigError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    output_dir = args.output_dir or (Path(os.environ[tables.TUNING_DIR_ENV])
                                     if os.environ.get(tables.TUNING_DIR_ENV) else None)
    if output_dir is None:
        print(f"error: say where the table goes: --output-dir DIR or {tables.TUNING_DIR_ENV}=DIR", file=sys.stderr)
        return 2
    if args.from_selftest:
        return write_from_selftest(args.from_selftest, output_dir)
    if args.kind != "i8":
        print("error: timing covers the int8 kernels; use --dry-run for f8", file=sys.stderr)
        return 2
    try:
        target = timing.require_gfx11()
    except timing.NoGfx11Error as error:
        print(f"refusing to tune: {error}", file=sys.stderr)
        return EXIT_NO_GFX11
    import torch

    progress = _progress(len(shapes) * len(args.m) * len(load_tile_configs()))
    measured = best_measured(
        shapes, args.m,
        lambda shape, m: [p.config for p in dispatch.ranked_candidates(target, m, shape.n, shape.k)],
        gpu_candidate_timer(args.warmup, args.iterations, progress),
        torch.cuda.get_device_name(0), datetime.date.today().isoformat())
    if progress is not None:
        progress.close()
    return write_measured(output_dir, target, args.kind, measured)


def write_measured(output_dir: Path, target: str, kind: str, measured: dict[str, dict[str, dict[str, Any]]]) -> int:
    """Merge the measurements into `output_dir`'s table; if that cannot be written, print
    them instead (measured data is never lost). Returns the exit code."""
    path = output_dir / f"{target}.json"
    try:
        merge_into_user_table(path, target, kind, measured)
    except OSError as error:
        print(tables.dump_table(target, {kind: measured}), end="")
        print(f"error: cannot write {path} ({error}); the MEASURED entries are printed above", file=sys.stderr)
        return EXIT_WRITE_FAILED
    print(f"MEASURED table written: {path}\nuse it: export {tables.TUNING_DIR_ENV}={output_dir}")
    return 0


def write_from_selftest(report: Path, output_dir: Path) -> int:
    """The user tables from a selftest report's timings: per device and kind, the fastest
    timed config per (shape, M bucket), as the tuner's own measurements are chosen."""
    from vllm_rdna_w8a8.tools.selftest import measured_devices

    try:
        devices = measured_devices(json.loads(report.read_text()), str(report))
    except (OSError, ValueError) as error:  # unreadable, not JSON, or nothing measured
        print(f"error: {error}", file=sys.stderr)
        return 2
    configs = {config.tag: config for config in load_tile_configs()}
    exit_code = 0
    for device in devices:
        for kind in dict.fromkeys(row.kind for row in device.timings):
            times: dict[tuple[LinearShape, int], dict[str, float]] = {}
            for row in device.timings:
                if row.kind == kind and row.ours_us is not None and row.config in configs:
                    times.setdefault((LinearShape(row.layer, row.N, row.K), row.M), {})[row.config] = row.ours_us
            measured: dict[str, dict[str, dict[str, Any]]] = {}
            for (shape, m), by_tag in times.items():
                best = best_measured([shape], [m], lambda _shape, _m, by_tag=by_tag: [configs[t] for t in by_tag],
                                     lambda _shape, _m, candidates, by_tag=by_tag: [by_tag[c.tag] for c in candidates],
                                     device.name, device.date)
                for key, buckets in best.items():
                    measured.setdefault(key, {}).update(buckets)
            exit_code |= write_measured(output_dir, device.target, kind, measured)
    return exit_code
