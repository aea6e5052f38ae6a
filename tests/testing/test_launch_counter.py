"""testing/launch_counter: launches counted where they reach the HIP runtime, per kernel name."""

from __future__ import annotations

import pytest

from vllm_rdna_w8a8.runtime import hip
from vllm_rdna_w8a8.testing import launch_counter


def _launch(runtime: hip.HipRuntime, name: str) -> None:
    runtime.launch(None, (1, 1, 1), (32, 1, 1), None, 0, name, 0)


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> tuple[hip.HipRuntime, list[str]]:
    """A HipRuntime whose launch only records the name (restored, with the process counts, after)."""
    reached: list[str] = []
    monkeypatch.setattr(hip.HipRuntime, "launch", lambda self, *args: reached.append(args[-2]))
    monkeypatch.setattr(launch_counter, "_process_counts", None)
    return object.__new__(hip.HipRuntime), reached


def test_counted_launches_lists_the_block_s_launches_in_order(runtime) -> None:
    hip_runtime, reached = runtime
    _launch(hip_runtime, "before")
    with launch_counter.counted_launches() as launched:
        for name in ("a", "b", "a"):
            _launch(hip_runtime, name)
    _launch(hip_runtime, "after")
    assert launched == ["a", "b", "a"]
    assert reached == ["before", "a", "b", "a", "after"]


def test_process_counts_start_when_asked_and_count_each_launch_once(runtime) -> None:
    hip_runtime, reached = runtime
    _launch(hip_runtime, "before")
    assert launch_counter.process_launch_counts() is None
    launch_counter.count_launches_from_now()
    launch_counter.count_launches_from_now()  # a second call must not wrap twice
    for name in ("a", "b", "a"):
        _launch(hip_runtime, name)
    assert launch_counter.process_launch_counts() == {"a": 2, "b": 1}
    assert reached == ["before", "a", "b", "a"]
