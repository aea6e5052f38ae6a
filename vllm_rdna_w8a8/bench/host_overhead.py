"""python -m vllm_rdna_w8a8.bench.host_overhead: the host time of one int8 (or, with --scheme fp8,
fp8) linear layer, kernels excluded (issue 13 part 2; docs/performance.md "Host time per layer").

What is timed, per call: `RdnaHipInt8ScaledMMLinearKernel.apply_weights` (N = K = 4096 by default,
fp16, dynamic symmetric per-token activations, per-channel weights, as vLLM builds such a layer),
i.e. vLLM's parameter lookup, the torch dispatcher, the choice of implementation, the layer's
launch plan (checks of x, the tile pick, the output allocation), the kernarg writes and the
ctypes calls into the HIP runtime: at M <= 16 one fused launch, above two. Under
torch.inference_mode, as vLLM runs models. --scheme fp8: `RdnaHipFp8ScaledMMLinearKernel.apply_weights`
(per-channel weights, dynamic per-token activations, as vLLM builds an FP8-Dynamic layer):
vLLM's activation quantization (QuantFP8, torch ops) and our GEMM op, one launch.

What is not: the kernels, and what a HIP runtime does inside `hipModuleLaunchKernel`. The
emulated gfx1100 backend loads the code objects through the emulator's stand-in runtime as in
production, then its launch entry point is replaced by a C function with the same arguments
that only counts its calls (each round checks every launch reached it). Needs clang for that
function and the emulator.

Figures per M: the median and minimum of single calls over all rounds, the lowest round median
(the figure at the box's quietest moment: on a shared machine the median moves with the load,
which is printed too), and the thread's CPU time per call over all rounds (time spent waiting
for a CPU on a loaded machine is in no figure: a whole loop timed by the wall clock would be,
which is why single calls are timed), then the medians of the same call without apply_weights (the
op called directly) and without the dispatcher (the HIP backend's function); --profile adds
cProfile's view (which inflates every Python call).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

NOOP_LAUNCH_C = """
static int launches;
int hipModuleLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                          unsigned by, unsigned bz, unsigned shared, void* stream,
                          void** params, void** extra) {
    (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)shared;
    (void)stream; (void)params; (void)extra;
    ++launches;
    return 0;
}
int noop_launches(void) { return launches; }
"""
DEFAULT_M = (1, 64)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m vllm_rdna_w8a8.bench.host_overhead",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, nargs="+", default=list(DEFAULT_M), help="token counts M (default 1 64)")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=1000, help="calls per round")
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top functions per M")
    parser.add_argument("--scheme", choices=("int8", "fp8"), default="int8", help="the layer's scheme (default int8)")
    args = parser.parse_args(argv)
    if min(args.m) < 1 or args.n < 1 or args.k < 1 or args.rounds < 1 or args.calls < 1:
        parser.error("--m, --n, --k, --rounds and --calls must be >= 1")
    return args


def build_noop_launch(directory: Path) -> ctypes.CDLL:
    """The counting stand-in for hipModuleLaunchKernel, compiled with the project's clang."""
    from vllm_rdna_w8a8.build import find_clang

    source = directory / "noop_launch.c"
    source.write_text(NOOP_LAUNCH_C)
    library = directory / "libnoop_launch.so"
    subprocess.run([str(find_clang().path), "-x", "c", "-shared", "-fPIC", "-O1", str(source), "-o", str(library)],
                   check=True, capture_output=True, text=True)
    noop = ctypes.CDLL(str(library))
    noop.noop_launches.restype = ctypes.c_int
    noop.hipModuleLaunchKernel.restype = ctypes.c_int
    return noop


def int8_layer(n: int, k: int):
    """vLLM's int8 layer as its compressed-tensors scheme leaves it (dynamic symmetric
    activations, per-channel weights), prepared by our kernel class; returns (kernel, layer)."""
    import torch
    from vllm.model_executor.kernels.linear.scaled_mm.ScaledMMLinearKernel import Int8ScaledMMLinearLayerConfig

    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipInt8ScaledMMLinearKernel

    config = Int8ScaledMMLinearLayerConfig(is_static_input_scheme=False, is_channelwise=True, input_symmetric=True)
    names = ("weight", "weight_scale", "input_scale", "input_zero_point", "azp_adj")
    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # vLLM builds layers under the model dtype
    try:
        kernel = RdnaHipInt8ScaledMMLinearKernel(config, names)
    finally:
        torch.set_default_dtype(previous_dtype)
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=generator),
                                      requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(torch.rand(n, 1, generator=generator) * 0.01, requires_grad=False)
    for name in names[2:]:
        setattr(layer, name, None)
    layer.logical_widths = [n]
    kernel.process_weights_after_loading(layer)
    return kernel, layer


def fp8_layer(n: int, k: int):
    """vLLM's fp8 layer as its FP8-Dynamic scheme leaves it (per-channel weights as a [K, N] view,
    dynamic per-token activations), prepared by our kernel class; returns (kernel, layer)."""
    import torch
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.kernels.linear.scaled_mm.ScaledMMLinearKernel import FP8ScaledMMLinearLayerConfig
    from vllm.model_executor.layers.quantization.utils.quant_utils import kFp8DynamicTokenSym, kFp8StaticChannelSym

    from vllm_rdna_w8a8.scaled_mm.rdna_hip import RdnaHipFp8ScaledMMLinearKernel

    config = FP8ScaledMMLinearLayerConfig(weight_quant_key=kFp8StaticChannelSym, activation_quant_key=kFp8DynamicTokenSym,
                                          weight_shape=(n, k), input_dtype=torch.float16, out_dtype=torch.float16)
    with set_current_vllm_config(VllmConfig()):  # vLLM's QuantFP8 picks its implementation from it
        kernel = RdnaHipFp8ScaledMMLinearKernel(config, ("weight", "weight_scale", "input_scale", "input_scale_ub"))
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(n, k, generator=generator) * 60).clamp(-448, 448).to(torch.float8_e4m3fn)
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(weight.t(), requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(torch.rand(n, 1, generator=generator) * 0.01, requires_grad=False)
    layer.input_scale = layer.input_scale_ub = None
    kernel.process_weights_after_loading(layer)
    return kernel, layer


def layer_calls(scheme: str, kernel, layer, x) -> tuple[Callable[[], object], ...]:
    """(the layer's apply_weights, its GEMM op through the dispatcher, the HIP backend's function)
    for activations x; fp8's op and backend take x as the layer quantizes it."""
    import torch

    from vllm_rdna_w8a8.ops import custom_ops, hip_backend

    if scheme == "int8":
        args = (x, layer.weight, None, None, True, layer.weight_scale, torch.float16, None, None)
        op, backend = custom_ops.int8_quant_scaled_mm, hip_backend.int8_quant_scaled_mm
    else:
        x_q, x_scale = kernel.quant_fp8(x, None, None)
        args = (x_q, layer.weight.t(), x_scale.reshape(-1), layer.weight_scale.reshape(-1), torch.float16, None)
        op, backend = custom_ops.fp8_scaled_mm, hip_backend.fp8_scaled_mm
    return lambda: kernel.apply_weights(layer, x), lambda: op(*args), lambda: backend(*args)


def time_calls(call: Callable[[], object], rounds: int, calls: int) -> dict[str, float]:
    """Times in us: median and min of single calls over every call, the lowest round median, and
    this thread's CPU time per call over all of them (the clock reads included)."""
    call()  # the first call builds the plan and loads the kernels
    samples: list[float] = []
    round_medians = []
    clock = time.perf_counter_ns
    cpu_start = time.thread_time_ns()
    for _ in range(rounds):
        this_round = []
        for _ in range(calls):
            start = clock()
            call()
            this_round.append((clock() - start) / 1e3)
        round_medians.append(statistics.median(this_round))
        samples += this_round
    cpu_us = (time.thread_time_ns() - cpu_start) / 1e3 / len(samples)
    return {"median": statistics.median(samples), "min": min(samples), "quiet": min(round_medians), "cpu": cpu_us}


def _print_profile(call: Callable[[], object], calls: int) -> None:
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        call()
    profile.disable()
    pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(15)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("VLLM_RDNA_W8A8_EMULATE", "gfx1100")
    os.environ.pop("VLLM_RDNA_W8A8_OPS", None)
    import torch

    from vllm_rdna_w8a8.runtime.hip import get_runtime

    with tempfile.TemporaryDirectory(prefix="rdna-noop-launch-") as directory:
        noop = build_noop_launch(Path(directory))
        get_runtime()._launch_unchecked = noop.hipModuleLaunchKernel  # the foreign call itself
        kernel, layer = (int8_layer if args.scheme == "int8" else fp8_layer)(args.n, args.k)
        load_before = os.getloadavg()[0]
        print(f"host time per {args.scheme} layer call, N={args.n} K={args.k} fp16, launch stubbed (kernels not run), "
              f"{os.cpu_count()} CPUs, {args.rounds} rounds x {args.calls} calls; load average {load_before:.2f}")
        print("M launches apply_weights_median_us min_us quiet_us cpu_us | op_median_us hip_backend_median_us")
        with torch.inference_mode():
            for m in args.m:
                x = torch.randn(m, args.k, generator=torch.Generator().manual_seed(m)).to(torch.float16)
                apply, op, backend = layer_calls(args.scheme, kernel, layer, x)
                before = noop.noop_launches()
                layer_us = time_calls(apply, args.rounds, args.calls)
                launches, remainder = divmod(noop.noop_launches() - before, args.rounds * args.calls + 1)
                if remainder or launches not in ((1, 2) if args.scheme == "int8" else (1,)):
                    raise RuntimeError(f"M={m}: launches bypassed the stub ({noop.noop_launches() - before} counted)")
                op_us = time_calls(op, args.rounds, args.calls)
                backend_us = time_calls(backend, args.rounds, args.calls)
                print(f"{m} {launches} {layer_us['median']:.1f} {layer_us['min']:.1f} {layer_us['quiet']:.1f} "
                      f"{layer_us['cpu']:.1f} | "
                      f"{op_us['median']:.1f} {backend_us['median']:.1f}")
                if args.profile:
                    _print_profile(apply, args.rounds * args.calls)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
