"""Helpers of the end-to-end tests: run engine groups in subprocesses, compare tokens."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vllm_rdna_w8a8.testing.engine_probe import summarize

RUNNER = Path(__file__).with_name("engine_runner.py")

PROMPTS = [
    "Hello, world!",
    "The capital of France is",
    "Once upon a time there was a lighthouse keeper",
    "1 2 3 4",
]
MAX_TOKENS = 16
# A longer text scored teacher-forced (prompt logprobs) by the fp16 model with and
# without online quantization: every position compares the two models on the same prefix.
SCORED_TEXT = (
    "The river runs past the old mill and under the stone bridge before it reaches the sea. "
    "In the morning the baker opens the shop, and the smell of fresh bread fills the street."
)
SCORED_TOP_LOGPROBS = 5
TOP_LOGPROBS = 5

# Two implementations of the same int8 math (vLLM's oneDNN kernel, our reference ops or
# emulated HIP kernels) may round the fp16 linear outputs differently in the last bit.
# Greedy decoding may then pick a different token only where the two best candidates
# were within this many nats of each other in both engines; after that step the
# sequences legitimately diverge and are not compared further.
NEAR_TIE_NATS = 0.15

# The tiny Qwen3-MoE's W8A8 checkpoints: compressed-tensors (written by tiny_model with the
# compressed-tensors library: int8, and fp8 FP8-Dynamic) and AMD Quark (int8 per-channel weights
# with dynamic per-token inputs; fp8 per-tensor static, `fp8`; fp8 per-channel / per-token,
# `ptpc_fp8`). The MoE engine groups (conftest) name each run by its scheme.
MOE_SCHEMES = ("int8", "quark-int8-dynamic", "fp8", "quark-fp8", "quark-ptpc-fp8")
# At TP=2 (a TP=2 engine starts in 60-100 s here) each scheme runs on one op backend (int8 on both).
MOE_TP2_REFERENCE_SCHEMES = ("int8", "quark-fp8", "quark-ptpc-fp8")
MOE_TP2_KERNEL_SCHEMES = ("int8", "quark-int8-dynamic", "fp8")

# Log prefix of the plugin's one line per process.
PLUGIN_LOG_PREFIX = "rdna_w8a8:"


def run_spec(name: str, model: Path, llm: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """One engine run for the runner's plan (greedy, the shared prompts)."""
    return {
        "name": name,
        "model": str(model),
        "llm": llm or {},
        "prompts": PROMPTS,
        "max_tokens": MAX_TOKENS,
        "logprobs": TOP_LOGPROBS,
        **overrides,
    }


@dataclasses.dataclass
class EngineGroup:
    """Results and log of one runner subprocess."""

    results: dict[str, Any]
    log: str
    seconds: float

    def run(self, name: str) -> dict[str, Any]:
        """The results of a successful run; fails the test with the log if it errored."""
        if name not in self.results:
            raise AssertionError(f"run {name!r} did not happen; log tail:\n{self.log[-6000:]}")
        result = self.results[name]
        if "error" in result:
            raise AssertionError(f"run {name!r} failed:\n{result['error']}\nlog:\n{self.run_log(name)[-6000:]}")
        return result

    def run_log(self, name: str) -> str:
        begin, end = f"E2E-RUN-BEGIN {name}\n", f"E2E-RUN-END {name}\n"
        start = self.log.find(begin)
        if start < 0:
            return ""
        stop = self.log.find(end, start)
        return self.log[start : stop if stop >= 0 else len(self.log)]


def run_engine_group(
    runs: list[dict[str, Any]], env: dict[str, str | None], work_dir: Path, timeout: float = 900.0
) -> EngineGroup:
    """Run `runs` in one runner subprocess with `env` added to (None: removed from) the
    environment; its whole output is kept in work_dir/engines.log."""
    work_dir.mkdir(parents=True, exist_ok=True)
    plan, result, log_path = work_dir / "plan.json", work_dir / "result.json", work_dir / "engines.log"
    plan.write_text(json.dumps({"runs": runs}, indent=2))
    child_env = dict(os.environ)
    for key, value in env.items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    # The engine probe is a function sent to the engine process by pickle (local, trusted).
    child_env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    started = time.monotonic()
    with open(log_path, "w") as log_file:
        process = subprocess.run(
            [sys.executable, str(RUNNER), str(plan), str(result)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=work_dir,
            timeout=timeout,
            check=False,
        )
    seconds = time.monotonic() - started
    log = log_path.read_text(errors="replace")
    if process.returncode != 0 or not result.exists():
        raise AssertionError(f"engine runner exited with {process.returncode}; log tail:\n{log[-8000:]}")
    return EngineGroup(json.loads(result.read_text()), log, seconds)


def kernel_counts(result: dict[str, Any]) -> dict[str, int]:
    """Linear layers per serving class, over all workers of a run."""
    return summarize(result["workers"])


def launches(worker: dict[str, Any], prefix: str) -> int:
    """Launches of our HIP kernels named `prefix`... in one worker while its engine generated
    (engine_probe.count_hip_launches): each step runs every layer, so a kernel that serves a
    layer launches at least MAX_TOKENS times."""
    return sum(count for name, count in worker["hip_kernels_launched"].items() if name.startswith(prefix))


def plugin_log_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if PLUGIN_LOG_PREFIX in line]


def assert_same_tokens(candidate: dict[str, Any], baseline: dict[str, Any]) -> None:
    for cand, base in zip(candidate["outputs"], baseline["outputs"], strict=True):
        assert cand["token_ids"] == base["token_ids"], (
            f"prompt {base['prompt']!r}: {cand['token_ids']} != {base['token_ids']}"
        )


def _logprob(step: dict[str, float], token: int) -> float | None:
    value = step.get(str(token))
    return None if value is None else float(value)


def assert_greedy_tokens_match(
    candidate: dict[str, Any], baseline: dict[str, Any], near_tie: float = NEAR_TIE_NATS
) -> list[str]:
    """Same greedy tokens, except that a sequence may diverge at a genuine near tie.

    At the first differing step both tokens must be among both engines' top logprobs and
    within `near_tie` nats of each other in both; the rest of that sequence is then not
    compared. At least half of all generated tokens must have been compared equal, so
    the check cannot pass vacuously. Returns a note per divergence (for the test log).
    """
    notes: list[str] = []
    compared = total = 0
    for cand, base in zip(candidate["outputs"], baseline["outputs"], strict=True):
        assert len(cand["token_ids"]) == len(base["token_ids"]), base["prompt"]
        total += len(base["token_ids"])
        for step, (cand_token, base_token) in enumerate(zip(cand["token_ids"], base["token_ids"])):
            if cand_token == base_token:
                compared += 1
                continue
            gaps = []
            for side, logprobs in (("candidate", cand["logprobs"][step]), ("baseline", base["logprobs"][step])):
                lp_cand, lp_base = _logprob(logprobs, cand_token), _logprob(logprobs, base_token)
                assert lp_cand is not None and lp_base is not None, (
                    f"prompt {base['prompt']!r} step {step}: tokens {cand_token} vs {base_token} differ and "
                    f"are not both in the {side}'s top logprobs {logprobs}"
                )
                gaps.append(abs(lp_cand - lp_base))
            assert max(gaps) <= near_tie, (
                f"prompt {base['prompt']!r} step {step}: tokens {cand_token} vs {base_token} differ with "
                f"logprob gaps {gaps} > {near_tie} (not a near tie)\n"
                f"candidate {cand['token_ids']}\nbaseline  {base['token_ids']}"
            )
            notes.append(f"{base['prompt']!r}: near tie at step {step} (gaps {gaps[0]:.4f}, {gaps[1]:.4f})")
            break
    assert compared * 2 >= total, f"only {compared} of {total} tokens compared equal before near ties"
    return notes
