"""Host cost of one decode-shaped linear layer through our ops, kernel execution excluded.

What is timed, per layer (M=1, N=K=4096, fp16, dynamic symmetric quantization):
`custom_ops.scaled_int8_quant` then `custom_ops.int8_scaled_mm`, i.e. the torch dispatcher,
the choice of implementation, argument validation, output allocation (torch.empty on the
CPU; a ROCm build uses its caching allocator instead), the tile-config pick, kernarg
packing, and the two ctypes calls of `hipModuleLaunchKernel`. It runs in a subprocess on
the emulated gfx1100 backend: the shipped gfx1100 code objects are loaded through the
emulator's stand-in runtime as in production.

What is not timed: the kernels. The stand-in runtime's `hipModuleLaunchKernel` handle is
swapped for a C function with the same arguments that only counts its calls (the test
checks both launches of every layer reached it), so neither the emulated execution nor
what a real ROCm runtime does inside that call (writing the dispatch packet) is in the
figure. The figure is a best-of-repeats mean on a shared CPU, not a GPU-machine number.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build import CompilerNotFound, find_clang

# A vLLM Triton launch costs tens of microseconds of host time; several hundred per layer
# would mean a regression (the layer ran at ~107 us on the loaded 2-core CI box).
MAX_HOST_US_PER_LAYER = 500.0

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

SCRIPT = textwrap.dedent(
    """
    import ctypes
    import sys
    import time

    import torch

    from vllm_rdna_w8a8.ops import custom_ops, hip_backend
    from vllm_rdna_w8a8.runtime.hip import get_runtime

    M, N, K = 1, 4096, 4096
    CALLS, REPEATS = 200, 15
    assert custom_ops._implementation(torch.zeros(1)) is hip_backend

    noop = ctypes.CDLL(sys.argv[1])
    noop.noop_launches.restype = ctypes.c_int
    launch = noop.hipModuleLaunchKernel
    launch.restype = ctypes.c_int
    get_runtime()._launch_unchecked = launch  # the lowest level: the foreign call itself

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(M, K, generator=generator).to(torch.float16)
    weight = torch.randint(-128, 128, (N, K), dtype=torch.int8, generator=generator)
    weight_scale = torch.rand(N, generator=generator)

    def quant():
        return custom_ops.scaled_int8_quant(x, padded_k=K)

    q, scale, _ = quant()

    def gemm():
        return custom_ops.int8_scaled_mm(q, weight, scale, weight_scale, torch.float16)

    def layer():
        q, scale, _ = custom_ops.scaled_int8_quant(x, padded_k=K)
        return custom_ops.int8_scaled_mm(q, weight, scale, weight_scale, torch.float16)

    def best_us(call):
        call()  # first call: loads the code object, builds the packing layout
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            for _ in range(CALLS):
                call()
            best = min(best, (time.perf_counter() - start) / CALLS)
        return best * 1e6

    before = noop.noop_launches()
    layer_us = best_us(layer)
    assert noop.noop_launches() - before == 2 * (REPEATS * CALLS + 1), "a launch bypassed the no-op"
    print(f"QUANT_US {best_us(quant):.1f}")
    print(f"GEMM_US {best_us(gemm):.1f}")
    print(f"LAYER_US {layer_us:.1f}")
    """
)


@pytest.fixture(scope="module")
def noop_launch_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        compiler = find_clang().bin_dir / "clang"
    except CompilerNotFound as exc:
        pytest.skip(f"no clang to build the no-op launch: {exc}")
    directory = tmp_path_factory.mktemp("noop-launch")
    source = directory / "noop_launch.c"
    source.write_text(NOOP_LAUNCH_C)
    library = directory / "libnoop_launch.so"
    subprocess.run([str(compiler), "-shared", "-fPIC", "-O1", str(source), "-o", str(library)],
                   check=True, capture_output=True, text=True)
    return library


@pytest.mark.slow  # ~10 s: the subprocess imports torch and finds the emulator library
def test_decode_linear_host_overhead_stays_in_launch_range(noop_launch_library: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    env = {**os.environ, "VLLM_RDNA_W8A8_EMULATE": "gfx1100"}
    env.pop("VLLM_RDNA_W8A8_OPS", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(noop_launch_library)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    figures = dict(re.findall(r"^(\w+_US) ([\d.]+)$", result.stdout, re.MULTILINE))
    assert set(figures) == {"QUANT_US", "GEMM_US", "LAYER_US"}, result.stdout
    with capsys.disabled():
        print(f"\nhost time per call, M=1 N=K=4096, kernels not run (best of 15 x 200 calls): "
              f"quant {figures['QUANT_US']} us, GEMM {figures['GEMM_US']} us, "
              f"quant + GEMM {figures['LAYER_US']} us")
    assert float(figures["LAYER_US"]) < MAX_HOST_US_PER_LAYER, figures
