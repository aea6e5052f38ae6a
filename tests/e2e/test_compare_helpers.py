"""The token comparison the end-to-end tests rely on (fast: no engine)."""

from __future__ import annotations

from typing import Any

import pytest

from e2e_support import assert_greedy_tokens_match, assert_same_tokens
from vllm_rdna_w8a8.testing.engine_probe import summarize


def _run(sequences: list[list[int]], logprobs: list[list[dict[int, float]]] | None = None) -> dict[str, Any]:
    outputs = []
    for index, tokens in enumerate(sequences):
        steps = logprobs[index] if logprobs else [{token: -0.1} for token in tokens]
        outputs.append(
            {"prompt": f"p{index}", "token_ids": tokens, "logprobs": [{str(t): lp for t, lp in s.items()} for s in steps]}
        )
    return {"outputs": outputs}


def test_identical_sequences_match() -> None:
    run = _run([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert_same_tokens(run, run)
    assert assert_greedy_tokens_match(run, run) == []


def test_divergence_at_a_near_tie_is_accepted_and_reported() -> None:
    near = [{1: -0.1}, {2: -0.50, 9: -0.52}, {3: -0.1}, {4: -0.1}]
    baseline = _run([[1, 2, 3, 4], [5, 6, 7, 8]], [near, [{t: -0.1} for t in (5, 6, 7, 8)]])
    flipped = [{1: -0.1}, {9: -0.50, 2: -0.53}, {3: -0.1}, {4: -0.1}]
    candidate = _run([[1, 9, 0, 0], [5, 6, 7, 8]], [flipped, [{t: -0.1} for t in (5, 6, 7, 8)]])
    notes = assert_greedy_tokens_match(candidate, baseline)
    assert len(notes) == 1 and "step 1" in notes[0]
    with pytest.raises(AssertionError):
        assert_same_tokens(candidate, baseline)


def test_divergence_without_a_near_tie_fails() -> None:
    baseline = _run([[1, 2, 3]], [[{1: -0.1}, {2: -0.1, 9: -2.0}, {3: -0.1}]])
    candidate = _run([[1, 9, 3]], [[{1: -0.1}, {9: -0.1, 2: -2.0}, {3: -0.1}]])
    with pytest.raises(AssertionError, match="not a near tie"):
        assert_greedy_tokens_match(candidate, baseline)


def test_divergence_to_a_token_outside_the_top_logprobs_fails() -> None:
    baseline = _run([[1, 2, 3]], [[{1: -0.1}, {2: -0.1, 8: -0.12}, {3: -0.1}]])
    candidate = _run([[1, 9, 3]], [[{1: -0.1}, {9: -0.1, 2: -0.12}, {3: -0.1}]])
    with pytest.raises(AssertionError, match="not both in the baseline's top logprobs"):
        assert_greedy_tokens_match(candidate, baseline)


def test_early_divergence_everywhere_is_not_a_pass() -> None:
    tie = [{1: -0.5, 9: -0.5}, {2: -0.1}, {3: -0.1}, {4: -0.1}]
    baseline = _run([[1, 2, 3, 4]], [tie])
    candidate = _run([[9, 2, 3, 4]], [tie])
    with pytest.raises(AssertionError, match="only 0 of 4 tokens compared equal"):
        assert_greedy_tokens_match(candidate, baseline)


def test_summarize_counts_layers_over_workers() -> None:
    workers = [
        {"layers": {"a": "Ours", "b": "Ours", "lm_head": "Head"}},
        {"layers": {"a": "Ours", "b": "Upstream", "lm_head": "Head"}},
    ]
    assert list(summarize(workers).items()) == [("Ours", 3), ("Head", 2), ("Upstream", 1)]
