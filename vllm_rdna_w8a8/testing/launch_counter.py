"""Counting kernel launches where they reach the HIP runtime (`HipRuntime.launch`): every launch
passes there, `Kernel.launch_values`' and `PreparedLaunch.launch`'s alike. For tests and tools
that assert how many launches an op makes (`counted_launches`), and for engine probes, which
cannot wrap the engine's calls in a block (`count_launches_from_now`)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator

from vllm_rdna_w8a8.runtime import hip

_process_counts: Counter[str] | None = None  # set by count_launches_from_now


def _counting(runtime_launch: Callable, record: Callable[[str], None]) -> Callable:
    def counting_launch(self: hip.HipRuntime, function, grid, block, kernargs, stream, name: str,
                        device_index: int) -> None:
        record(name)
        runtime_launch(self, function, grid, block, kernargs, stream, name, device_index)

    return counting_launch


@contextlib.contextmanager
def counted_launches() -> Iterator[list[str]]:
    """Within the block, the names of the kernels launched, in order, appended to the list yielded."""
    launched: list[str] = []
    runtime_launch = hip.HipRuntime.launch
    hip.HipRuntime.launch = _counting(runtime_launch, launched.append)
    try:
        yield launched
    finally:
        hip.HipRuntime.launch = runtime_launch


def count_launches_from_now() -> None:
    """Count every launch of this process from now on, per kernel name (`process_launch_counts`).
    Idempotent: a second call changes nothing."""
    global _process_counts
    if _process_counts is None:
        counts: Counter[str] = Counter()

        def record(name: str) -> None:
            counts[name] += 1

        hip.HipRuntime.launch = _counting(hip.HipRuntime.launch, record)
        _process_counts = counts


def process_launch_counts() -> dict[str, int] | None:
    """Launches per kernel name since `count_launches_from_now`, or None if it was not called."""
    return None if _process_counts is None else dict(_process_counts)
