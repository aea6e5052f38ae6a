"""The registered torch.library ops: fakes, opcheck, and which implementation runs."""

from __future__ import annotations

import operator
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd
from torch._subclasses.fake_tensor import FakeTensorMode

from vllm_rdna_w8a8 import settings
from vllm_rdna_w8a8.ops import custom_ops, hip_backend, reference


def _quant_samples():
    x = torch.randn(5, 20).to(torch.float16)
    return [
        (x, None, None, True, 32),
        (x, None, None, False, 32),
        (x, torch.tensor([0.02]), None, True, 32),
        (x.to(torch.bfloat16), torch.tensor([0.02]), torch.tensor([3], dtype=torch.int32), False, 48),
    ]


def _gemm_samples():
    a = torch.randint(-128, 128, (5, 32), dtype=torch.int8)
    b = torch.randint(-128, 128, (7, 32), dtype=torch.int8)
    return [
        (a, b, torch.rand(5), torch.rand(7), torch.float16, None, None, None),
        (a, b, torch.rand(1), torch.rand(1), torch.bfloat16, torch.zeros(5, dtype=torch.int32),
         torch.ones(7, dtype=torch.int32), torch.randn(7).to(torch.bfloat16)),
    ]


@pytest.mark.parametrize("args", _quant_samples())
def test_quant_op_passes_opcheck(args) -> None:
    torch.library.opcheck(torch.ops.rdna_w8a8.scaled_int8_quant.default, args)


@pytest.mark.parametrize("args", _gemm_samples())
def test_gemm_op_passes_opcheck(args) -> None:
    torch.library.opcheck(torch.ops.rdna_w8a8.int8_scaled_mm.default, args)


def test_fakes_give_the_real_shapes_and_dtypes() -> None:
    for args in _quant_samples():
        real = torch.ops.rdna_w8a8.scaled_int8_quant(*args)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = torch.ops.rdna_w8a8.scaled_int8_quant(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
        assert [(t.shape, t.dtype) for t in fake] == [(t.shape, t.dtype) for t in real]
    for args in _gemm_samples():
        real = torch.ops.rdna_w8a8.int8_scaled_mm(*args)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = torch.ops.rdna_w8a8.int8_scaled_mm(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
        assert (fake.shape, fake.dtype) == (real.shape, real.dtype)


def test_wrapper_returns_the_callers_static_scale_and_zero_point() -> None:
    x = torch.randn(3, 16).to(torch.float16)
    scale, azp = torch.tensor([0.1]), torch.tensor([4], dtype=torch.int32)
    q, out_scale, out_azp = custom_ops.scaled_int8_quant(x, scale, azp, symmetric=False)
    assert out_scale is scale and out_azp is azp
    q_ref, _, _ = reference.scaled_int8_quant(x, scale, azp, symmetric=False)
    assert torch.equal(q, q_ref)
    _, dynamic_scale, dynamic_azp = custom_ops.scaled_int8_quant(x)
    assert dynamic_scale.shape == (3,) and dynamic_azp is None


def test_cpu_tensors_run_the_reference(monkeypatch) -> None:
    monkeypatch.delenv(settings.EMULATE_ENV, raising=False)
    assert custom_ops._implementation(torch.zeros(1)) is reference


def test_emulated_cpu_runs_the_hip_backend_unless_forced_to_reference(monkeypatch) -> None:
    monkeypatch.setenv(settings.EMULATE_ENV, "gfx1100")
    monkeypatch.delenv(settings.OPS_ENV, raising=False)
    assert custom_ops._implementation(torch.zeros(1)) is hip_backend
    monkeypatch.setenv(settings.OPS_ENV, "reference")
    assert custom_ops._implementation(torch.zeros(1)) is reference


def test_compiled_graph_keeps_the_ops_opaque() -> None:
    def layer(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
        q, scale, _ = custom_ops.scaled_int8_quant(x, padded_k=w.shape[1])
        return custom_ops.int8_scaled_mm(q, w, scale, w_scale, x.dtype)

    graphs: list[torch.fx.GraphModule] = []

    def keep_graph(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
        graphs.append(graph)
        return graph.forward

    x = torch.randn(4, 32).to(torch.float16)
    w = torch.randint(-128, 128, (8, 32), dtype=torch.int8)
    w_scale = torch.rand(8)
    compiled = torch.compile(layer, backend=aot_autograd(fw_compiler=keep_graph), fullgraph=True)
    torch.testing.assert_close(compiled(x, w, w_scale), layer(x, w, w_scale), rtol=0, atol=0)
    # The ATen-level graph calls each op as one node; nothing of their implementations is
    # traced into it (only the getitems that unpack the quantization's outputs).
    (graph,) = graphs
    called = [node.target for node in graph.graph.nodes if node.op == "call_function"]
    assert [target for target in called if target is not operator.getitem] == [
        torch.ops.rdna_w8a8.scaled_int8_quant.default, torch.ops.rdna_w8a8.int8_scaled_mm.default]


def test_fp8_gemm_op_passes_opcheck_and_its_fake_matches() -> None:
    a = torch.randn(5, 32).to(torch.float8_e4m3fn)
    b = torch.randn(7, 32).to(torch.float8_e4m3fn)
    args = (a, b, torch.rand(5), torch.rand(1), torch.bfloat16, torch.randn(7).to(torch.bfloat16))
    # test_schema compares fp8 inputs with ops the CPU build lacks for float8: skip that one.
    torch.library.opcheck(torch.ops.rdna_w8a8.fp8_scaled_mm.default, args,
                          test_utils=("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))
    real = custom_ops.fp8_scaled_mm(*args)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = torch.ops.rdna_w8a8.fp8_scaled_mm(*(mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in args))
    assert (fake.shape, fake.dtype) == (real.shape, real.dtype) == ((5, 7), torch.bfloat16)


def _on_meta(args: tuple, index: int) -> tuple:
    return tuple(arg.to("meta") if i == index else arg for i, arg in enumerate(args))


def _tensor_positions(args: tuple) -> list[int]:
    return [i for i, arg in enumerate(args) if isinstance(arg, torch.Tensor)]


GEMM_ARG_NAMES = ("a", "b", "a_scale", "b_scale", "out_dtype", "azp", "azp_adj", "bias")


@pytest.mark.parametrize("position", _tensor_positions(_gemm_samples()[1])[1:],
                         ids=lambda i: GEMM_ARG_NAMES[i])
def test_gemm_with_one_meta_argument_is_refused(position: int) -> None:
    # Issue 11: a CPU `a` with a meta b (or scale, zero point, bias) ran the Meta kernel and
    # returned a CPU tensor of uninitialised memory.
    args = _on_meta(_gemm_samples()[1], position)
    with pytest.raises(ValueError, match=f"{GEMM_ARG_NAMES[position]} is on meta, the activations on cpu"):
        custom_ops.int8_scaled_mm(*args)


def test_fp8_gemm_with_a_meta_argument_is_refused() -> None:
    a = torch.zeros(5, 32).to(torch.float8_e4m3fn)
    args = (a, a[:3].clone(), torch.ones(5), torch.ones(1), torch.float16, torch.zeros(3, dtype=torch.float16))
    for position, name in ((1, "b"), (3, "b_scale"), (5, "bias")):
        with pytest.raises(ValueError, match=f"{name} is on meta, the activations on cpu"):
            custom_ops.fp8_scaled_mm(*_on_meta(args, position))


@pytest.mark.parametrize(("position", "name"), [(1, "scale"), (2, "azp")])
def test_quant_with_a_meta_static_scale_or_zero_point_is_refused(position: int, name: str) -> None:
    args = _quant_samples()[3]
    with pytest.raises(ValueError, match=f"{name} is on meta, the activations on cpu"):
        custom_ops.scaled_int8_quant(*_on_meta(args, position))


def test_fakes_refuse_what_the_implementations_refuse() -> None:
    a, b, a_scale, b_scale, *_ = _gemm_samples()[0]
    a16, b16_columns, x = a.to(torch.int16), b[:, :16].contiguous(), _quant_samples()[0][0]
    with FakeTensorMode() as mode:
        fake = mode.from_tensor
        with pytest.raises(TypeError, match="a must be int8, got int16"):
            custom_ops.int8_scaled_mm(fake(a16), fake(b), fake(a_scale), fake(b_scale), torch.float16)
        with pytest.raises(ValueError, match="K differs"):
            custom_ops.int8_scaled_mm(fake(a), fake(b16_columns), fake(a_scale), fake(b_scale), torch.float16)
        with pytest.raises(TypeError, match="a must be float8_e4m3fn, got int8"):
            custom_ops.fp8_scaled_mm(fake(a), fake(b), fake(a_scale), fake(b_scale), torch.float16)
        with pytest.raises(ValueError, match="padded_k must be a multiple of 16"):
            torch.ops.rdna_w8a8.scaled_int8_quant(fake(x), None, None, True, 24)


@pytest.mark.parametrize("batch", ["dynamic", "unbacked"])
def test_compiled_graph_with_a_symbolic_batch_traces_the_checked_fakes(batch: str) -> None:
    # The fakes' checks must not guard on the batch size: an unbacked one cannot be guarded.
    from torch._dynamo.decorators import mark_unbacked

    def layer(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
        q, scale, azp = custom_ops.scaled_int8_quant(x, padded_k=w.shape[1], symmetric=False)
        dynamic = custom_ops.int8_scaled_mm(q, w, scale, w_scale, x.dtype, azp, w.sum(dim=1, dtype=torch.int32))
        q_static, _, _ = custom_ops.scaled_int8_quant(x, torch.full((1,), 0.05), padded_k=w.shape[1])
        return dynamic + custom_ops.int8_scaled_mm(q_static, w, torch.full((1,), 0.05), w_scale, x.dtype)

    w = torch.randint(-128, 128, (8, 32), dtype=torch.int8)
    w_scale = torch.rand(1)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True, dynamic=batch == "dynamic")
    for rows in (4, 9, 1):
        x = torch.randn(rows, 32).to(torch.float16)
        if batch == "unbacked":
            mark_unbacked(x, 0)
        torch.testing.assert_close(compiled(x, w, w_scale), layer(x, w, w_scale), rtol=0, atol=0)


COMPILED_LAYER_ON_EMULATED_GFX1100 = textwrap.dedent(
    """
    import operator
    import torch
    from torch._dynamo.backends.common import aot_autograd
    from vllm_rdna_w8a8.ops import custom_ops, hip_backend
    from vllm_rdna_w8a8.testing.launch_counter import counted_launches

    counting = counted_launches()
    launched = counting.__enter__()  # counts for the rest of the script
    assert custom_ops._implementation(torch.zeros(1)) is hip_backend
    graphs = []

    def keep_graph(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    def layer(x, w, w_scale, azp_adj):
        return custom_ops.int8_quant_scaled_mm(x, w, None, None, False, w_scale, x.dtype, azp_adj)

    generator = torch.Generator().manual_seed(0)
    w = torch.randint(-128, 128, (40, 64), dtype=torch.int8, generator=generator)
    w_scale, azp_adj = torch.rand(40, generator=generator), w.sum(dim=1, dtype=torch.int32)
    compiled = torch.compile(layer, backend=aot_autograd(fw_compiler=keep_graph), fullgraph=True, dynamic=True)
    for rows in (1, 5, 17, 1, 5):
        x = torch.randn(rows, 64, generator=generator).to(torch.float16)
        launched.clear()
        got = compiled(x, w, w_scale, azp_adj)
        compiled_launches = list(launched)
        want = layer(x, w, w_scale, azp_adj)  # eager
        assert torch.equal(got.view(torch.int16), want.view(torch.int16)), rows
        assert len(compiled_launches) == (1 if rows <= 16 else 2), (rows, compiled_launches)
    for graph in graphs:  # one opaque node each, whatever the batch
        called = [node.target for node in graph.graph.nodes if node.op == "call_function"]
        assert called == [torch.ops.rdna_w8a8.int8_quant_scaled_mm.default], called
    print("GRAPHS", len(graphs))
    """
)


def test_compiled_int8_layer_runs_its_launch_plan_as_eager_does() -> None:
    """The layer op inside a torch.compile graph (dynamic batch) on the emulated gfx1100: one
    opaque node, the HIP backend's plan behind it, the eager bits and launch counts."""
    env = {**os.environ, settings.EMULATE_ENV: "gfx1100"}
    env.pop(settings.OPS_ENV, None)
    result = subprocess.run([sys.executable, "-c", COMPILED_LAYER_ON_EMULATED_GFX1100], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^GRAPHS [12]$", result.stdout, re.MULTILINE), result.stdout
