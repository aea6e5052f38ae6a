"""Counting kernel launches where they reach the HIP runtime (`HipRuntime.launch`): every launch
passes there, `Kernel.launch_values`' and `PreparedLaunch.launch`'s alike. For tests and tools
that assert how many launches an op makes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from vllm_rdna_w8a8.runtime import hip


@contextlib.contextmanager
def counted_launches() -> Iterator[list[str]]:
    """Within the block, the names of the kernels launched, in order, appended to the list yielded."""
    launched: list[str] = []
    runtime_launch = hip.HipRuntime.launch

    def counting_launch(self: hip.HipRuntime, function, grid, block, kernargs, stream, name: str,
                        device_index: int) -> None:
        launched.append(name)
        runtime_launch(self, function, grid, block, kernargs, stream, name, device_index)

    hip.HipRuntime.launch = counting_launch
    try:
        yield launched
    finally:
        hip.HipRuntime.launch = runtime_launch
