"""Run several vLLM engines one after another in this process and record what they did.

Usage: python engine_runner.py PLAN.json RESULT.json

PLAN.json: {"runs": [{"name", "model", "llm": {LLM kwargs}, "prompts": [...],
"max_tokens", "logprobs", "prompt_logprobs" (optional)}]}. For each run it prints
``E2E-RUN-BEGIN <name>`` / ``E2E-RUN-END <name>`` on stdout (the engine and worker
processes share this process's output, so the log between the markers belongs to that
run), generates greedily, asks every worker which kernel serves each linear layer, and
rewrites RESULT.json after each run. A run whose engine fails records the error and the
next run still starts.

The test process starts this script in a subprocess because `LLM` spawns engine
processes and the environment (emulation switches, thread binding) must be set before
vLLM is imported.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
from typing import Any

ENGINE_DEFAULTS: dict[str, Any] = {
    # On the CPU backend this is the share of host RAM reserved for the KV cache.
    "gpu_memory_utilization": 0.1,
    "enforce_eager": True,  # torch.compile would add minutes of start-up on 2 cores
    "max_model_len": 256,
    "seed": 0,
}


def _top_logprobs(step: dict[int, Any] | None) -> dict[str, float]:
    # JSON object keys are strings; the comparison helpers convert back.
    return {str(token): float(entry.logprob) for token, entry in (step or {}).items()}


def run_one(run: dict[str, Any]) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    from vllm_rdna_w8a8.testing.engine_probe import count_hip_launches, describe_linear_kernels

    started = time.monotonic()
    llm = LLM(run["model"], **{**ENGINE_DEFAULTS, **run.get("llm", {})})
    ready = time.monotonic()
    params = SamplingParams(
        temperature=0.0,
        max_tokens=run["max_tokens"],
        ignore_eos=True,
        logprobs=run["logprobs"],
        prompt_logprobs=run.get("prompt_logprobs"),
    )
    llm.apply_model(count_hip_launches)  # in every worker: what generating launches
    outputs = llm.generate(run["prompts"], params, use_tqdm=False)
    workers = llm.apply_model(describe_linear_kernels)
    finished = time.monotonic()
    del llm
    gc.collect()
    return {
        "outputs": [
            {
                "prompt": output.prompt,
                "token_ids": list(output.outputs[0].token_ids),
                "text": output.outputs[0].text,
                "logprobs": [_top_logprobs(step) for step in output.outputs[0].logprobs or []],
                "prompt_token_ids": list(output.prompt_token_ids or []),
                "prompt_logprobs": [_top_logprobs(step) for step in output.prompt_logprobs or []],
            }
            for output in outputs
        ],
        "workers": workers,
        "seconds": {"start": ready - started, "generate": finished - ready},
    }


def main(plan_path: str, result_path: str) -> int:
    with open(plan_path) as plan_file:
        plan = json.load(plan_file)
    results: dict[str, Any] = {}
    for run in plan["runs"]:
        name = run["name"]
        print(f"E2E-RUN-BEGIN {name}", flush=True)
        try:
            results[name] = run_one(run)
        except Exception:
            results[name] = {"error": traceback.format_exc()}
            print(results[name]["error"], flush=True)
        print(f"E2E-RUN-END {name}", flush=True)
        with open(result_path, "w") as result_file:
            json.dump(results, result_file)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
