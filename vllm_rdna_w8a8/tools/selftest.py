"""`python -m vllm_rdna_w8a8 selftest`: does every shipped kernel compute the right bits on this
machine's gfx11 devices, and how fast is each GEMM tile config there?

For every gfx11 device (or `--device N`):
- every kernel of the device's code objects, discovered from the code-object index
  (quantization, each int8 and fp8 GEMM config, the fused decode GEMMs, the int8 and fp8 MoE
  grouped GEMMs as a whole small MoE layer; a kernel this module has no cases for is a failure,
  never silently left out), through the production ops with
  the tile config forced, on fixed shapes with edges (M = 1, 16, 17, 4096; N and K not
  multiples of the tile; strided rows; every epilogue variant on the edge shape) against
  ops/reference.py: the int8 paths bit-exact, fp8 within FP8_BOUND;
- an int8 layer's op and an fp8 GEMM captured in a HIP graph and replayed, equal to eager
  (ROCm only: a skipped row on the stand-in runtime, never a pass);
- each GEMM config timed against vLLM's triton_scaled_mm (and torch._scaled_mm for fp8, where
  ROCm supports it) on Llama-3-8B shapes, medians of HIP-event timings (ROCm only).

Prints a progress bar and a verdict table, writes `--report PATH` (JSON: device, target,
versions, every result; `python -m vllm_rdna_w8a8.tune --from-selftest PATH` turns its
timings into a tuning table) and exits 1 on any mismatch, naming the shape and the first
differing element. On the emulated backend (VLLM_RDNA_W8A8_EMULATE) the same code runs on the
CPU emulator; HARDWARE_GEMM_SHAPES / HARDWARE_QUANT_SHAPES (K up to 14336, M = 4096 at
N = 4104), the HIP graph and the timings run on ROCm only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from vllm_rdna_w8a8.bench.run import EXIT_NO_GFX11
from vllm_rdna_w8a8.testing.launch_counter import counted_launches

EXIT_MISMATCH = 1
EXIT_USAGE = 2
REPORT_FORMAT = "vllm-rdna-w8a8 selftest report"
REPORT_VERSION = 1
EMULATED_GRAPH_SKIP = "not available on the stand-in runtime (HIP graphs need ROCm)"
EMULATED_TIMING_SKIP = ("emulated device: the CPU emulator's times say nothing about a GPU; "
                        "timings run on ROCm only")
FP8_BOUND = ("|out - reference| <= 1 output ulp + (K + 8) * eps32 * |a_scale * b_scale| * sum|a * b| "
             "+ 4 * eps32 * |largest epilogue term| (eps32 = 2^-23: fp32 sums)")
_EPS32 = torch.finfo(torch.float32).eps


# --- what runs -------------------------------------------------------------------------------

@dataclass(frozen=True)
class GemmShape:
    """C[M, N] = A[M, K] B[N, K]^T; a_pad / b_pad extra elements per row (strided rows)."""

    m: int
    n: int
    k: int
    a_pad: int = 0
    b_pad: int = 0

    def label(self) -> str:
        strides = "".join(f" {name}={self.k + pad}" for name, pad in (("lda", self.a_pad), ("ldb", self.b_pad))
                          if pad)
        return f"M={self.m} N={self.n} K={self.k}{strides}"


# K = 200 and 208 are multiples of 16 (the kernels' step) but of no tile's BLOCK_K; N = 72, 136
# of no BLOCK_N. The edge shape (M = 17: one row past a decode tile, both operands strided) runs
# every epilogue variant, the others the two of ROTATING_VARIANTS.
EDGE_GEMM_SHAPE = GemmShape(17, 136, 208, a_pad=32, b_pad=16)
GEMM_SHAPES = (GemmShape(1, 72, 208), GemmShape(16, 136, 208, a_pad=32), EDGE_GEMM_SHAPE,
               GemmShape(4096, 136, 208, b_pad=32))
QUICK_GEMM_SHAPES = (GemmShape(1, 72, 208), EDGE_GEMM_SHAPE)
# Too slow for the emulator: Llama-sized K and N, and M = 4096 over many tiles.
HARDWARE_GEMM_SHAPES = (GemmShape(4096, 4104, 4112, a_pad=16), GemmShape(1, 4104, 14336),
                        GemmShape(16, 14344, 4096, b_pad=128))
# The fused decode GEMMs (M <= 16): x has K = 200 (b is padded to 208), rows 216 apart.
FUSED_SHAPES = (GemmShape(1, 72, 200), GemmShape(16, 136, 200, a_pad=16))
EDGE_FUSED_SHAPE = FUSED_SHAPES[1]
HARDWARE_FUSED_SHAPES = (GemmShape(16, 4104, 14336, a_pad=8),)
# Quantization: M rows of K = 200 values (padded to 208), rows 232 apart.
QUANT_SHAPES = tuple(GemmShape(m, 0, 200, a_pad=32) for m in (1, 16, 17, 4096))
QUICK_QUANT_SHAPES = QUANT_SHAPES[:1] + QUANT_SHAPES[2:3]
HARDWARE_QUANT_SHAPES = (GemmShape(4096, 0, 14336, a_pad=64),)
# Timing: Llama-3-8B's linear layers (tp=1) at these M.
TIMING_MODEL = "Meta-Llama-3-8B"
TIMING_M = (1, 16, 128, 1024, 4096)
QUICK_TIMING_M = (16, 4096)


@dataclass(frozen=True)
class Variant:
    """One epilogue variant. For the fused decode GEMMs per_token_a means dynamic quantization
    and the zero point says how it is asymmetric (dynamic: per token, static: one)."""

    per_token_a: bool
    per_channel_b: bool
    bias: bool
    zero_point: str  # none, static (folded into azp_adj), dynamic (per-token azp)
    bf16: bool

    def label(self) -> str:
        return ", ".join((
            f"a {'per-token' if self.per_token_a else 'per-tensor'}",
            f"b {'per-channel' if self.per_channel_b else 'per-tensor'}",
            "bias" if self.bias else "no bias",
            f"azp {self.zero_point}",
            "bf16 out" if self.bf16 else "fp16 out",
        ))


ALL_VARIANTS = tuple(Variant(*values) for values in itertools.product(
    (True, False), (True, False), (True, False), ("none", "static", "dynamic"), (False, True)))
FP8_VARIANTS = tuple(v for v in ALL_VARIANTS if v.zero_point == "none")
# Quantization modes a fused decode GEMM takes: dynamic (per-token scale) with a per-token zero
# point or none, static (one scale) with one zero point or none.
FUSED_VARIANTS = tuple(v for v in ALL_VARIANTS
                       if v.zero_point != ("static" if v.per_token_a else "dynamic"))


def _features(variant: Variant) -> int:
    return (variant.per_token_a + variant.per_channel_b + variant.bias + variant.bf16
            + ("none", "static", "dynamic").index(variant.zero_point))


def rotating_variants(variants: Sequence[Variant]) -> tuple[Variant, Variant]:
    """The plainest and the fullest of `variants`: what the non-edge shapes run."""
    return min(variants, key=_features), max(variants, key=_features)


# --- results ---------------------------------------------------------------------------------

@dataclass
class CaseResult:
    check: str  # code objects, quantization, int8 GEMM, fp8 GEMM, fused decode GEMM, HIP graph, timing
    kernel: str | None
    case: str
    status: str  # pass, fail, skip
    detail: str = ""  # fail: what differs (first element); skip: why
    launched: list[str] = field(default_factory=list)


@dataclass
class Timing:
    kind: str
    layer: str
    M: int
    N: int
    K: int
    config: str
    ours_us: float | None
    baselines_us: dict[str, float | None]
    problems: list[str] = field(default_factory=list)


@dataclass
class DeviceReport:
    index: int
    target: str
    name: str
    emulated: bool
    results: list[CaseResult] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    timing_method: str = ""

    @property
    def verdict(self) -> str:
        return "FAIL" if any(result.status == "fail" for result in self.results) else "PASS"


class SkipCase(Exception):
    """A case that cannot run here (the reason is the message)."""


# --- devices ---------------------------------------------------------------------------------

class NoDevice(RuntimeError):
    """No gfx11 device to test (or --device names none)."""


@dataclass(frozen=True)
class Placement:
    """A gfx11 device: ROCm's cuda:<index>, or an emulated one (CPU tensors placed on it)."""

    index: int
    target: str
    emulated: bool

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self.emulated else torch.device("cuda", self.index)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        from vllm_rdna_w8a8.runtime.device import emulated_device

        with emulated_device(self.index) if self.emulated else torch.cuda.device(self.index):
            yield

    def name(self) -> str:
        if self.emulated:
            return f"emulated {self.target} (CPU emulator, stand-in HIP runtime)"
        return torch.cuda.get_device_name(self.index)


def gfx11_placements(device: int | None) -> list[Placement]:
    """Every gfx11 device here (or just `device`), emulated or ROCm."""
    from vllm_rdna_w8a8.runtime.device import gfx_target, torch_is_rocm
    from vllm_rdna_w8a8.settings import emulated_targets, is_gfx11

    emulated = bool(emulated_targets())
    if emulated:
        count = len(emulated_targets())
    elif torch_is_rocm() and torch.cuda.is_available():
        count = torch.cuda.device_count()
    else:
        raise NoDevice("no ROCm GPU visible (torch "
                       f"{torch.__version__}, HIP {getattr(torch.version, 'hip', None)}); on a machine "
                       "without one, VLLM_RDNA_W8A8_EMULATE=gfx1100 runs selftest on the CPU emulator")
    indices = range(count) if device is None else [device]
    if device is not None and not 0 <= device < count:
        raise NoDevice(f"--device {device}: this machine has {count} device(s) (0..{count - 1})")
    placements = [Placement(index, gfx_target(index), emulated) for index in indices]
    gfx11 = [placement for placement in placements if is_gfx11(placement.target)]
    if not gfx11:
        found = ", ".join(f"{p.index}: {p.target}" for p in placements)
        raise NoDevice(f"no gfx11 device among {found}: our kernels run on gfx11 only")
    return gfx11


# --- comparisons -----------------------------------------------------------------------------

_BITS_DTYPES = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.view(_BITS_DTYPES[tensor.dtype]) if tensor.dtype in _BITS_DTYPES else tensor


def _show(tensor: torch.Tensor, index: tuple[int, ...]) -> str:
    value = tensor[index].item()
    if tensor.dtype in _BITS_DTYPES:
        width = 8 if tensor.dtype == torch.float32 else 4
        bits = _bits(tensor)[index].item() & (2 ** (4 * width) - 1)
        return f"{value!r} (0x{bits:0{width}x})"
    return repr(value)


def _first_flagged(name: str, flagged: torch.Tensor, got: torch.Tensor, expected: torch.Tensor,
                   extra: Callable[[tuple[int, ...]], str] = lambda _index: "") -> str | None:
    if not bool(flagged.any()):
        return None
    index = tuple(int(i) for i in flagged.nonzero()[0])
    return (f"{name}{list(index)}: got {_show(got, index)}, expected {_show(expected, index)}"
            f"{extra(index)} ({int(flagged.sum())} of {flagged.numel()} elements differ)")


def bit_difference(name: str, got: torch.Tensor | None, expected: torch.Tensor | None) -> str | None:
    """None when `got` equals `expected` bit for bit (any NaN matches any NaN: its sign and
    payload are the hardware's), else where the first element differs."""
    if got is None or expected is None:
        return None if got is None and expected is None else f"{name}: got {got}, expected {expected}"
    if got.dtype != expected.dtype or got.shape != expected.shape:
        return (f"{name}: got {got.dtype} {list(got.shape)}, "
                f"expected {expected.dtype} {list(expected.shape)}")
    got, expected = got.cpu(), expected.cpu()
    differ = _bits(got) != _bits(expected)
    if got.is_floating_point():
        differ &= ~(got.isnan() & expected.isnan())
    return _first_flagged(name, differ, got, expected)


def fp8_difference(out: torch.Tensor, expected: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                   a_scale: torch.Tensor, b_scale: torch.Tensor, bias: torch.Tensor | None) -> str | None:
    """None when `out` is within FP8_BOUND of the reference's `expected`, else the first
    element that is not (NaN anywhere is outside)."""
    a64, b64 = a.double(), b.double()
    scale = (a_scale.double().reshape(-1, 1) * b_scale.double().reshape(1, -1)).abs()
    terms = scale * (a64 @ b64.T).abs()
    if bias is not None:
        terms = torch.maximum(terms, bias.double().abs().reshape(1, -1))
    sum_bound = (a.shape[1] + 8) * _EPS32 * scale * (a64.abs() @ b64.abs().T)
    got, reference = out.double(), expected.double()
    finfo = torch.finfo(out.dtype)
    magnitude = torch.maximum(got.abs(), reference.abs()).clamp_min(finfo.smallest_normal)
    ulp = torch.exp2(torch.floor(torch.log2(magnitude))) * finfo.eps
    allowed = ulp + 4 * _EPS32 * terms + sum_bound
    outside = ~((got - reference).abs() <= allowed)
    allowed_cpu = allowed.cpu()
    return _first_flagged("out", outside.cpu(), out.cpu(), expected.cpu(),
                          lambda index: f", allowed difference {allowed_cpu[index].item():.3g}")


# --- inputs ----------------------------------------------------------------------------------

def _strided(values: torch.Tensor, pad: int, device: torch.device) -> torch.Tensor:
    """`values` on `device`, rows `pad` elements further apart than its width (junk between)."""
    if not pad:
        return values.to(device)
    wide = torch.full((values.shape[0], values.shape[1] + pad), 99.0).to(values.dtype)
    wide[:, : values.shape[1]] = values
    return wide.to(device)[:, : values.shape[1]]


def _scales(count: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Positive float32 scales of about 1 / (8 sqrt(K)): outputs stay well inside fp16."""
    return (torch.rand(count, generator=generator) + 0.5) / (8 * math.sqrt(k))


def int8_operands(shape: GemmShape, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random int8 A and B with the extreme rows (all -128 in A and B, all 127 in B)."""
    a = torch.randint(-128, 128, (shape.m, shape.k), dtype=torch.int8, generator=generator)
    b = torch.randint(-128, 128, (shape.n, shape.k), dtype=torch.int8, generator=generator)
    a[0] = -128
    b[0] = -128
    b[min(1, shape.n - 1)] = 127
    return a, b


def fp8_operands(shape: GemmShape, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random e4m3fn A and B (no NaN) with a row of 448, a row of -448, a subnormal row and a
    zero row."""
    def random(rows: int) -> torch.Tensor:
        return (torch.randn(rows, shape.k, generator=generator) * 32).clamp(-448, 448)

    a, b = random(shape.m), random(shape.n)
    a[0], b[0] = 448.0, -448.0
    if shape.m > 2:
        a[1] = torch.randint(-7, 8, (shape.k,), generator=generator) * 2.0**-9  # subnormals
        a[2] = 0.0
    return a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)


def activations(rows: int, k: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """fp16/bf16 rows with the quantizer's edges: a zero row, a constant row, a row at the
    dtype's largest value, a row with a NaN and an inf."""
    x = torch.randn(rows, k, generator=generator) * 3
    edges = [torch.zeros(k), torch.full((k,), 1.5), torch.randn(k, generator=generator).sign()
             * torch.finfo(dtype).max]
    nan_inf = torch.randn(k, generator=generator)
    nan_inf[k // 3], nan_inf[k // 2] = math.nan, math.inf
    edges.append(nan_inf)
    for row, values in zip(range(1, rows), edges):
        x[row] = values
    return x.to(dtype)


# --- cases -----------------------------------------------------------------------------------

@dataclass
class PlannedCase:
    check: str
    kernel: str | None
    case: str
    run: Callable[[], str | None]  # None: pass; text: what differs; raises SkipCase


def _quant_case(placement: Placement, kernel: str, dtype: torch.dtype, shape: GemmShape,
                static: bool, symmetric: bool, seed: int) -> PlannedCase:
    from vllm_rdna_w8a8.ops import hip_backend, reference
    from vllm_rdna_w8a8.ops.validation import padded_k

    mode = f"{'static' if static else 'dynamic'} {'symmetric' if symmetric else 'asymmetric'}"

    def run() -> str | None:
        generator = torch.Generator().manual_seed(seed)
        x = _strided(activations(shape.m, shape.k, dtype, generator), shape.a_pad, placement.device)
        scale = torch.tensor([0.05], device=placement.device) if static else None
        azp = torch.tensor([3], dtype=torch.int32, device=placement.device) if static and not symmetric else None
        got = hip_backend.scaled_int8_quant(x, scale, azp, symmetric, padded_k(shape.k))
        expected = reference.scaled_int8_quant(x, scale, azp, symmetric, padded_k(shape.k))
        return next(filter(None, (bit_difference(name, g, e) for name, g, e in
                                  zip(("q", "scale", "azp"), got, expected))), None)

    return PlannedCase("quantization", kernel, f"M={shape.m} K={shape.k} ldx={shape.k + shape.a_pad}, {mode}", run)


def _gemm_case(placement: Placement, kernel: str, kind: str, config: Any, shape: GemmShape,
               variant: Variant, seed: int) -> PlannedCase:
    from vllm_rdna_w8a8 import dispatch
    from vllm_rdna_w8a8.ops import hip_backend, reference

    def run() -> str | None:
        generator = torch.Generator().manual_seed(seed)
        device = placement.device
        a, b = (int8_operands if kind == "i8" else fp8_operands)(shape, generator)
        out_dtype = torch.bfloat16 if variant.bf16 else torch.float16
        a_scale = _scales(shape.m if variant.per_token_a else 1, shape.k, generator).to(device)
        b_scale = _scales(shape.n if variant.per_channel_b else 1, shape.k, generator).to(device)
        bias = torch.randn(shape.n, generator=generator).to(out_dtype).to(device) if variant.bias else None
        azp = azp_adj = None
        if variant.zero_point != "none":
            column_sums = b.to(torch.int32).sum(dim=1, dtype=torch.int32)
            if variant.zero_point == "static":
                azp_adj = (column_sums * 7).to(device)
            else:
                azp_adj = column_sums.to(device)
                azp = torch.randint(-128, 128, (shape.m,), dtype=torch.int32, generator=generator).to(device)
        a, b = _strided(a, shape.a_pad, device), _strided(b, shape.b_pad, device)
        with dispatch.forced_gemm_config(config):
            if kind == "i8":
                got = hip_backend.int8_scaled_mm(a, b, a_scale, b_scale, out_dtype, azp, azp_adj, bias)
            else:
                got = hip_backend.fp8_scaled_mm(a, b, a_scale, b_scale, out_dtype, bias)
        if kind == "i8":
            return bit_difference("out", got, reference.int8_scaled_mm(a, b, a_scale, b_scale, out_dtype,
                                                                        azp, azp_adj, bias))
        expected = reference.fp8_scaled_mm(a, b, a_scale, b_scale, out_dtype, bias)
        return fp8_difference(got, expected, a, b, a_scale, b_scale, bias)

    check = "int8 GEMM" if kind == "i8" else "fp8 GEMM"
    return PlannedCase(check, kernel, f"{shape.label()}, {variant.label()}", run)


def _fused_case(placement: Placement, kernel: str, dtype: torch.dtype, config: Any, shape: GemmShape,
                variant: Variant, seed: int) -> PlannedCase:
    from vllm_rdna_w8a8 import dispatch
    from vllm_rdna_w8a8.ops import hip_backend, reference
    from vllm_rdna_w8a8.ops.validation import padded_k

    def run() -> str | None:
        generator = torch.Generator().manual_seed(seed)
        device = placement.device
        weights = GemmShape(shape.m, shape.n, padded_k(shape.k))
        _unused, b = int8_operands(weights, generator)
        b[:, shape.k:] = 0  # the padded columns of a prepared weight
        x = _strided(activations(shape.m, shape.k, dtype, generator), shape.a_pad, device)
        out_dtype = torch.bfloat16 if variant.bf16 else torch.float16
        b_scale = _scales(shape.n if variant.per_channel_b else 1, shape.k, generator).to(device)
        bias = torch.randn(shape.n, generator=generator).to(out_dtype).to(device) if variant.bias else None
        static = variant.zero_point == "static" or not variant.per_token_a
        symmetric = variant.zero_point == "none"
        x_scale = torch.tensor([0.05], device=device) if static else None
        x_azp = torch.tensor([3], dtype=torch.int32, device=device) if static and not symmetric else None
        column_sums = b.to(torch.int32).sum(dim=1, dtype=torch.int32)
        azp_adj = None if symmetric else (column_sums * (3 if static else 1)).to(device)
        b = b.to(device)
        with dispatch.forced_gemm_config(config):
            got = hip_backend.int8_quant_scaled_mm(x, b, x_scale, x_azp, symmetric, b_scale, out_dtype,
                                                   azp_adj, bias)
        return bit_difference("out", got, reference.int8_quant_scaled_mm(
            x, b, x_scale, x_azp, symmetric, b_scale, out_dtype, azp_adj, bias))

    mode = "dynamic" if variant.per_token_a else "static"
    label = f"{shape.label().replace('lda', 'ldx')}, {mode} quantization, {variant.label()}"
    return PlannedCase("fused decode GEMM", kernel, label, run)


# A small MoE layer: K = 40 and 24 (padded to 48 and 32), 4 experts, top-2; at 1 token two
# experts receive none.
MOE_TOKENS = (1, 5)
MOE_HIDDEN, MOE_INTERMEDIATE, MOE_EXPERTS, MOE_TOP_K = 40, 24, 4, 2


def _moe_case(placement: Placement, kernel: str, kind: str, dtype: torch.dtype, config: Any, tokens: int,
              seed: int) -> PlannedCase:
    from vllm_rdna_w8a8 import dispatch
    from vllm_rdna_w8a8.moe import hip_backend as moe_hip_backend
    from vllm_rdna_w8a8.moe import reference as moe_reference

    def run() -> str | None:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(tokens, MOE_HIDDEN, generator=generator).to(dtype)
        shapes = ((MOE_EXPERTS, 2 * MOE_INTERMEDIATE, MOE_HIDDEN), (MOE_EXPERTS, MOE_HIDDEN, MOE_INTERMEDIATE))
        if kind == "i8":
            w13, w2 = (torch.randint(-127, 128, shape, dtype=torch.int8, generator=generator) for shape in shapes)
        else:  # weights in {0, +-1}: at K <= 48 the kernels' float32 sums are exact, as the reference's
            w13, w2 = (torch.randint(-1, 2, shape, generator=generator).to(torch.float8_e4m3fn) for shape in shapes)
        w13_scale = torch.rand(MOE_EXPERTS, 2 * MOE_INTERMEDIATE, generator=generator) / 200
        w2_scale = torch.rand(MOE_EXPERTS, MOE_HIDDEN, generator=generator) / 200
        topk_weights, topk_ids = moe_reference.route(torch.randn(tokens, MOE_EXPERTS, generator=generator),
                                                     MOE_TOP_K, True)
        layer = (x, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids)
        hip_layer, reference_layer = ((moe_hip_backend.int8_moe, moe_reference.int8_moe) if kind == "i8"
                                      else (moe_hip_backend.fp8_moe, moe_reference.fp8_moe))
        with dispatch.forced_gemm_config(config):
            got = hip_layer(*(tensor.to(placement.device) for tensor in layer))
        return bit_difference("out", got.cpu(), reference_layer(*layer))

    precision = "int8" if kind == "i8" else "fp8"
    label = (f"{tokens} token(s), H={MOE_HIDDEN} I={MOE_INTERMEDIATE}, {MOE_EXPERTS} experts, "
             f"top-{MOE_TOP_K}, {precision}")
    return PlannedCase("MoE grouped GEMM", kernel, label, run)


def _silu_mul_quant_case(placement: Placement, kernel: str, dtype: torch.dtype, rows: int, intermediate: int,
                         seed: int) -> PlannedCase:
    from vllm_rdna_w8a8.moe import hip_backend as moe_hip_backend
    from vllm_rdna_w8a8.moe import reference as moe_reference
    from vllm_rdna_w8a8.ops import reference
    from vllm_rdna_w8a8.ops.validation import padded_k

    def run() -> str | None:
        generator = torch.Generator().manual_seed(seed)
        gate_up = (torch.randn(rows, 2 * intermediate, generator=generator) * 4).to(dtype)
        gate_up[0] = 0  # a zero row: scale 0, q 0
        got = moe_hip_backend.silu_and_mul_quant(gate_up.to(placement.device))
        expected = reference.scaled_int8_quant(moe_reference.silu_and_mul(gate_up), None, None, True,
                                               padded_k(intermediate))[:2]
        return next(filter(None, (bit_difference(name, g.cpu(), e) for name, g, e in
                                  zip(("q", "scale"), got, expected))), None)

    return PlannedCase("SiLU-and-mul quantization", kernel, f"{rows} rows, I={intermediate}", run)


# (rows, I) of the fused SiLU-and-mul quantization cases: whole 16-byte vectors, then I % 8 != 0
SILU_MUL_QUANT_SHAPES = ((5, 64), (17, 37))
_KERNEL_DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16}
_GEMM_KERNEL = re.compile(r"w8a8_(i8|f8)_gemm_(\w+)")
_FUSED_KERNEL = re.compile(r"w8a8_i8q_(f16|bf16)_gemm_(\w+)")
_MOE_KERNEL = re.compile(r"w8a8_(i8|f8)_moe_(f16|bf16)_gemm_(\w+)")
_QUANT_KERNEL = re.compile(r"w8a8_quant_i8_(f16|bf16)")
_SILU_MUL_QUANT_KERNEL = re.compile(r"w8a8_silu_mul_quant_i8_(f16|bf16)")


def kernel_cases(placement: Placement, kernel: str, quick: bool) -> list[PlannedCase]:
    """The cases that test `kernel` on `placement`; a kernel without any is one failing case."""
    from vllm_rdna_w8a8.dispatch import configs_by_tag, load_tile_configs

    hardware = not placement.emulated and not quick
    seeds = itertools.count(sum(map(ord, kernel)) * 1000)
    if match := _QUANT_KERNEL.fullmatch(kernel):
        shapes = QUICK_QUANT_SHAPES if quick else QUANT_SHAPES + (HARDWARE_QUANT_SHAPES if hardware else ())
        return [_quant_case(placement, kernel, _KERNEL_DTYPES[match[1]], shape, static, symmetric, next(seeds))
                for shape in shapes for static in (False, True) for symmetric in (True, False)]
    if match := _SILU_MUL_QUANT_KERNEL.fullmatch(kernel):
        return [_silu_mul_quant_case(placement, kernel, _KERNEL_DTYPES[match[1]], rows, intermediate, next(seeds))
                for rows, intermediate in SILU_MUL_QUANT_SHAPES]
    gemm, fused, moe = _GEMM_KERNEL.fullmatch(kernel), _FUSED_KERNEL.fullmatch(kernel), _MOE_KERNEL.fullmatch(kernel)
    match = gemm or fused or moe
    config = configs_by_tag(load_tile_configs()).get(match.groups()[-1]) if match else None
    if config is None:
        why = (f"its tile config {match.groups()[-1]!r} is not a row of gemm_configs.def" if match
               else "selftest has no cases for this kind of kernel: add them to vllm_rdna_w8a8/tools/selftest.py")
        return [PlannedCase("kernel discovery", kernel, "shipped kernel", lambda why=why: why)]
    if moe:
        return [_moe_case(placement, kernel, moe[1], _KERNEL_DTYPES[moe[2]], config, tokens, next(seeds))
                for tokens in MOE_TOKENS]
    if gemm:
        kind = match[1]
        variants = ALL_VARIANTS if kind == "i8" else FP8_VARIANTS
        plan = _plan(QUICK_GEMM_SHAPES if quick else GEMM_SHAPES, EDGE_GEMM_SHAPE,
                     HARDWARE_GEMM_SHAPES if hardware else (), variants, quick)
        return [_gemm_case(placement, kernel, kind, config, shape, variant, next(seeds)) for shape, variant in plan]
    plan = _plan(FUSED_SHAPES, EDGE_FUSED_SHAPE, HARDWARE_FUSED_SHAPES if hardware else (), FUSED_VARIANTS, quick)
    return [_fused_case(placement, kernel, _KERNEL_DTYPES[match[1]], config, shape, variant, next(seeds))
            for shape, variant in plan]


def _plan(shapes: Sequence[GemmShape], edge: GemmShape, hardware_shapes: Sequence[GemmShape],
          variants: Sequence[Variant], quick: bool) -> list[tuple[GemmShape, Variant]]:
    """Every variant on the edge shape (unless quick), the rotating two on the others."""
    plan = []
    for shape in (*shapes, *hardware_shapes):
        chosen = variants if shape == edge and not quick else rotating_variants(variants)
        plan += [(shape, variant) for variant in chosen]
    return plan


def graph_cases(placement: Placement) -> list[PlannedCase]:
    """An int8 layer's op (decode M: the fused launch; M = 17: quantization then GEMM) and an
    fp8 GEMM, captured in a HIP graph and replayed on new inputs, equal to eager."""
    from vllm_rdna_w8a8.ops import custom_ops

    def layer_case(kind: str, m: int) -> PlannedCase:
        def run() -> str | None:
            if placement.emulated:
                raise SkipCase(EMULATED_GRAPH_SKIP)
            generator = torch.Generator().manual_seed(m)
            device = placement.device
            shape = GemmShape(m, 4096, 4096)
            if kind == "i8":
                _unused, weight = int8_operands(shape, generator)
                weight_scale = _scales(shape.n, shape.k, generator).to(device)
                weight = weight.to(device)

                def layer(x: torch.Tensor) -> torch.Tensor:
                    return custom_ops.int8_quant_scaled_mm(x, weight, None, None, True, weight_scale,
                                                           torch.float16)

                inputs = [activations(m, shape.k, torch.float16, generator).to(device) for _ in range(2)]
            else:
                a_values, weight = fp8_operands(shape, generator)
                scales = [_scales(count, shape.k, generator).to(device) for count in (m, shape.n)]
                weight = weight.to(device)

                def layer(a: torch.Tensor) -> torch.Tensor:
                    return custom_ops.fp8_scaled_mm(a, weight, scales[0], scales[1], torch.float16)

                inputs = [a_values.to(device), fp8_operands(shape, generator)[0].to(device)]
            return graph_difference(layer, *inputs)

        what = "int8 layer (int8_quant_scaled_mm)" if kind == "i8" else "fp8 GEMM (fp8_scaled_mm)"
        return PlannedCase("HIP graph", None, f"{what} M={m} N=4096 K=4096", run)

    return [layer_case("i8", 1), layer_case("i8", 17), layer_case("f8", 16)]


def graph_difference(layer: Callable[[torch.Tensor], torch.Tensor], first: torch.Tensor,
                     second: torch.Tensor) -> str | None:
    """Capture `layer(static input)` in a HIP graph, replay it on `second`: equal to eager?"""
    static_input = first.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # loads the kernels before capture, as vLLM's warm-up does
        layer(static_input)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = layer(static_input)
    results = []
    for values in (first, second):
        static_input.copy_(values)
        graph.replay()
        torch.cuda.synchronize()
        results.append(bit_difference("replayed out", static_output.clone(), layer(values)))
    return next(filter(None, results), None)


# --- timing (ROCm only) ----------------------------------------------------------------------

def time_configs(placement: Placement, kernels: Sequence[str], m_values: Sequence[int],
                 progress: Progress, warmup: int = 10, iterations: int = 50) -> list[Timing]:
    """Median HIP-event times of every GEMM kernel's config and of the baselines on the
    timing model's shapes at `m_values`."""
    from vllm_rdna_w8a8 import dispatch
    from vllm_rdna_w8a8.bench import timing
    from vllm_rdna_w8a8.bench.run import rotating_int8_inputs
    from vllm_rdna_w8a8.dispatch.model_shapes import linear_shapes, resolve_model

    configs = dispatch.configs_by_tag(dispatch.load_tile_configs())
    timings = []
    for kind in ("i8", "f8"):
        tags = [match[2] for match in map(_GEMM_KERNEL.fullmatch, kernels) if match and match[1] == kind
                and match[2] in configs]
        implementations = timed_implementations(kind)
        for shape in linear_shapes(resolve_model(TIMING_MODEL), 1):
            for m in m_values:
                inputs = rotating_int8_inputs(m, shape.n, shape.k, device=str(placement.device))
                if kind == "f8":
                    inputs = [tuple(t.float().to(torch.float8_e4m3fn) if t.dtype == torch.int8 else t
                                    for t in tensors) for tensors in inputs]
                problems: list[str] = []

                def median(run: Callable[[tuple], object], what: str) -> float | None:
                    try:
                        return timing.median_time_us(run, inputs, warmup, iterations)
                    except Exception as error:  # e.g. no torch._scaled_mm on this arch: report, go on
                        problems.append(f"{what}: not timed ({type(error).__name__}: {error})")
                        return None

                baselines = {name: median(run, name) for name, run in implementations.items() if name != "ours"}
                for tag in tags:
                    with dispatch.forced_gemm_config(configs[tag]):
                        ours = median(implementations["ours"], tag)
                    timings.append(Timing(kind, shape.layer, m, shape.n, shape.k, tag, ours, baselines,
                                          list(problems)))
                    progress.advance(f"timing {kind} {tag} {shape.layer} M={m}")
                del inputs
                torch.cuda.empty_cache()
    return timings


def timed_implementations(kind: str) -> dict[str, Callable[[tuple], object]]:
    """Our op and the baselines, each computing fp16 (a @ b^T) * a_scale * b_scale."""
    from vllm.model_executor.layers.quantization.compressed_tensors.triton_scaled_mm import triton_scaled_mm

    from vllm_rdna_w8a8.ops import custom_ops

    ours_op = custom_ops.int8_scaled_mm if kind == "i8" else custom_ops.fp8_scaled_mm

    def ours(inputs: tuple) -> object:
        a, b, a_scale, b_scale = inputs
        return ours_op(a, b, a_scale, b_scale, torch.float16)

    def triton(inputs: tuple) -> object:
        a, b, a_scale, b_scale = inputs
        return triton_scaled_mm(a, b.t(), a_scale, b_scale, torch.float16)

    def scaled_mm(inputs: tuple) -> object:
        a, b, a_scale, b_scale = inputs
        return torch._scaled_mm(a, b.t(), scale_a=a_scale.reshape(-1, 1), scale_b=b_scale.reshape(1, -1),
                                out_dtype=torch.float16)

    implementations = {"ours": ours, "triton_scaled_mm": triton}
    if kind == "f8":
        implementations["torch._scaled_mm"] = scaled_mm
    return implementations


def timing_count(placement: Placement, kernels: Sequence[str], m_values: Sequence[int]) -> int:
    from vllm_rdna_w8a8.dispatch.model_shapes import linear_shapes, resolve_model

    if placement.emulated:
        return 0
    gemms = sum(1 for kernel in kernels if _GEMM_KERNEL.fullmatch(kernel))
    return gemms * len(linear_shapes(resolve_model(TIMING_MODEL), 1)) * len(m_values)


# --- running ---------------------------------------------------------------------------------

class Progress:
    """A progress bar on a terminal (redrawn in place), a line per tenth elsewhere (CI logs)."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.interactive = stream.isatty()

    def advance(self, label: str) -> None:
        self.done += 1
        filled = self.WIDTH * self.done // self.total
        bar = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total}"
        if self.interactive:
            self.stream.write(f"\r{bar} {label[:60]:<60}")
        elif 10 * self.done // self.total != 10 * (self.done - 1) // self.total:
            self.stream.write(f"selftest {bar}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def run_case(placement: Placement, planned: PlannedCase) -> CaseResult:
    """Run one case on its device; an exception is a failure that names it."""
    result = CaseResult(planned.check, planned.kernel, planned.case, "pass")
    with placement.active(), counted_launches() as launched:
        try:
            difference = planned.run()
        except SkipCase as skip:
            result.status, result.detail = "skip", str(skip)
            return result
        except Exception as error:  # a crash of one case is reported, the others still run
            difference = f"raised {type(error).__name__}: {error}"
    result.launched = list(dict.fromkeys(launched))
    if difference is None and planned.kernel is not None and planned.kernel not in launched:
        difference = f"the case did not launch {planned.kernel} (launched: {', '.join(launched) or 'nothing'})"
    if difference is not None:
        result.status, result.detail = "fail", difference
    return result


def device_kernels(placement: Placement) -> tuple[list[str], str | None]:
    """The kernel names of the device's code objects, or why there are none."""
    from vllm_rdna_w8a8.runtime import launcher

    problem = launcher.missing_reason(placement.target)
    return ([], problem) if problem else (launcher.kernel_names(placement.target), None)


def run_selftest(placements: Sequence[Placement], quick: bool, progress_stream: TextIO = sys.stderr) -> list[DeviceReport]:
    m_values = QUICK_TIMING_M if quick else TIMING_M
    plans = []
    for placement in placements:
        kernels, problem = device_kernels(placement)
        cases = [case for kernel in kernels for case in kernel_cases(placement, kernel, quick)]
        plans.append((placement, kernels, problem, cases + graph_cases(placement)))
    progress = Progress(sum(len(cases) + timing_count(placement, kernels, m_values)
                            for placement, kernels, _problem, cases in plans), progress_stream)
    reports = []
    for placement, kernels, problem, cases in plans:
        report = DeviceReport(placement.index, placement.target, placement.name(), placement.emulated)
        if problem:
            report.results.append(CaseResult("code objects", None, placement.target, "fail", problem))
        for planned in cases:
            report.results.append(run_case(placement, planned))
            progress.advance(f"device {placement.index} {planned.kernel or planned.check} {planned.case}")
        if placement.emulated:
            report.results.append(CaseResult("timing", None, f"{TIMING_MODEL} shapes", "skip", EMULATED_TIMING_SKIP))
        elif report.verdict == "FAIL":
            report.results.append(CaseResult("timing", None, f"{TIMING_MODEL} shapes", "skip",
                                             "not timed: fix the mismatches first"))
        else:
            with placement.active():
                report.timings = time_configs(placement, kernels, m_values, progress)
            report.timing_method = (f"median of 50 HIP-event timings after 10 warm-up calls, rotating inputs "
                                    f"larger than twice the Infinity Cache, measured on {report.name}")
        reports.append(report)
    progress.finish()
    return reports


# --- output ----------------------------------------------------------------------------------

def format_verdicts(reports: Sequence[DeviceReport]) -> str:
    lines = []
    for report in reports:
        lines += ["", f"device {report.index}: {report.target}, {report.name}"]
        groups: dict[tuple[str, str], list[CaseResult]] = {}
        for result in report.results:
            groups.setdefault((result.check, result.kernel or result.check), []).append(result)
        width = max(len(name) for _check, name in groups) if groups else 10
        lines.append(f"  {'kernel / check':<{width}}  cases  pass  fail  skip  verdict")
        for (_check, name), results in groups.items():
            counts = {status: sum(r.status == status for r in results) for status in ("pass", "fail", "skip")}
            verdict = "FAIL" if counts["fail"] else "PASS" if counts["pass"] else "SKIP"
            note = next((f"  {r.detail}" for r in results if r.status == "skip"), "") if verdict == "SKIP" else ""
            lines.append(f"  {name:<{width}}  {len(results):5d}  {counts['pass']:4d}  {counts['fail']:4d}  "
                         f"{counts['skip']:4d}  {verdict}{note}")
        failures = [r for r in report.results if r.status == "fail"]
        if failures:
            lines.append(f"  mismatches on device {report.index}:")
            lines += [f"    FAIL {r.kernel or r.check} {r.case}: {r.detail}" for r in failures]
        if report.timings:
            lines += ["", f"  timing ({report.timing_method}); the fastest config per shape:",
                      format_best_timings(report.timings)]
    passed = sum(r.status == "pass" for report in reports for r in report.results)
    failed = sum(r.status == "fail" for report in reports for r in report.results)
    skipped = sum(r.status == "skip" for report in reports for r in report.results)
    verdict = "FAIL" if failed else "PASS"
    lines += ["", f"selftest: {verdict} on {len(reports)} device(s): {passed} passed, {failed} failed, "
                  f"{skipped} skipped"]
    return "\n".join(lines)


def format_best_timings(timings: Sequence[Timing]) -> str:
    from vllm_rdna_w8a8.bench.timing import format_table

    best: dict[tuple[str, str, int], Timing] = {}
    for row in timings:
        key = (row.kind, row.layer, row.M)
        if row.ours_us is not None and (key not in best or row.ours_us < best[key].ours_us):
            best[key] = row
    rows = []
    for row in best.values():
        line: dict[str, object] = {"kind": row.kind, "layer": row.layer, "M": row.M, "N": row.N, "K": row.K,
                                   "config": row.config, "ours_us": row.ours_us}
        for name, time_us in row.baselines_us.items():
            line[f"{name}_us"] = time_us
            line[f"x_{name}"] = time_us / row.ours_us if time_us else None
        rows.append(line)
    return format_table(rows) if rows else "  no config was timed"


def _runtime_origin() -> str:
    from vllm_rdna_w8a8.runtime.hip import HipError, get_runtime

    try:
        return get_runtime().origin
    except HipError as error:
        return f"none ({error})"


def report_data(reports: Sequence[DeviceReport], args: argparse.Namespace) -> dict[str, Any]:
    from vllm_rdna_w8a8.tools.doctor import versions

    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "arguments": {"device": args.device, "quick": args.quick},
        "versions": versions(),
        "hip_runtime_library": _runtime_origin(),
        "fp8_bound": FP8_BOUND,
        "verdict": "FAIL" if any(report.verdict == "FAIL" for report in reports) else "PASS",
        "devices": [{**dataclasses.asdict(report), "verdict": report.verdict} for report in reports],
    }


@dataclass(frozen=True)
class MeasuredDevice:
    """The GEMM timings a selftest report holds for one ROCm device (tune's measured input)."""

    target: str
    name: str
    date: str
    timings: tuple[Timing, ...]


def measured_devices(data: Any, source: str) -> list[MeasuredDevice]:
    """The measured timings of a selftest report (`data`, parsed JSON from `source`); ValueError
    naming the problem when it is not a report, or holds no measurement a tuning table may use:
    emulated devices, devices that failed a check, devices without timings."""
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise ValueError(f"{source} is not a selftest report (no \"format\": \"{REPORT_FORMAT}\")")
    if data.get("format_version") != REPORT_VERSION:
        raise ValueError(f"{source}: format_version {data.get('format_version')!r}, this version reads "
                         f"{REPORT_VERSION}")
    measured, problems = [], []
    for device in data.get("devices", []):
        where = f"device {device.get('index')} ({device.get('target')})"
        if device.get("emulated"):
            problems.append(f"{where} is emulated: its report has no measurements")
        elif device.get("verdict") != "PASS":
            problems.append(f"{where} failed selftest: fix the mismatches before tuning on it")
        elif not device.get("timings"):
            problems.append(f"{where} has no timings")
        else:
            try:
                timings = tuple(Timing(**row) for row in device["timings"])
            except TypeError as error:
                raise ValueError(f"{source}: {where}: malformed timing row ({error})") from None
            measured.append(MeasuredDevice(device["target"], device["name"], data["created"][:10], timings))
    if not measured:
        raise ValueError(f"{source}: nothing measured to tune from: {'; '.join(problems) or 'no devices'}")
    return measured


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=int, help="test only this device index (default: every gfx11 device)")
    parser.add_argument("--report", type=Path, help="write every result as JSON here (attach it to a bug report)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer shapes and epilogue variants, timing at fewer M")


def run(args: argparse.Namespace) -> int:
    """The command with parsed `add_arguments` arguments; returns the exit code."""
    from vllm_rdna_w8a8 import settings

    try:
        if settings.ops_backend() == "reference":
            print(f"error: {settings.OPS_ENV}=reference would compare the reference with itself; unset it",
                  file=sys.stderr)
            return EXIT_USAGE
        placements = gfx11_placements(args.device)
    except NoDevice as error:
        print(f"selftest: {error}", file=sys.stderr)
        return EXIT_NO_GFX11
    except (ValueError, RuntimeError) as error:  # a bad VLLM_RDNA_W8A8_* setting
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    reports = run_selftest(placements, args.quick)
    print(format_verdicts(reports))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report_data(reports, args), indent=1) + "\n")
        print(f"report: {args.report}")
    return EXIT_MISMATCH if any(report.verdict == "FAIL" for report in reports) else 0
