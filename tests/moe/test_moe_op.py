"""The `rdna_w8a8::int8_moe` op (moe/op.py): the reference math where the reference
serves, the HIP implementation where ours does (or a clear error while this build has
none), a fake that checks as the implementation does, and opaque under torch.compile."""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Callable

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd
from torch._subclasses.fake_tensor import FakeTensorMode

from vllm_rdna_w8a8 import settings
from vllm_rdna_w8a8.moe import reference as moe_reference
from vllm_rdna_w8a8.moe import op as moe

HIDDEN, INTERMEDIATE, EXPERTS, TOKENS, TOP_K = 48, 40, 4, 6, 2


def _layer_args(dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(7)
    w13 = torch.randint(-127, 128, (EXPERTS, 2 * INTERMEDIATE, HIDDEN), dtype=torch.int8, generator=generator)
    w2 = torch.randint(-127, 128, (EXPERTS, HIDDEN, INTERMEDIATE), dtype=torch.int8, generator=generator)
    w13_scale = torch.rand(EXPERTS, 2 * INTERMEDIATE, generator=generator) / 1000
    w2_scale = torch.rand(EXPERTS, HIDDEN, generator=generator) / 1000
    x = torch.randn(TOKENS, HIDDEN, generator=generator).to(dtype)
    weights, ids = moe_reference.route(torch.randn(TOKENS, EXPERTS, generator=generator), TOP_K, renormalize=True)
    return x, w13, w13_scale, w2, w2_scale, weights, ids


@pytest.fixture
def not_emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.EMULATE_ENV, raising=False)
    monkeypatch.delenv(settings.OPS_ENV, raising=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_plain_cpu_tensors_get_the_reference_math_bit_for_bit(not_emulated: None, dtype: torch.dtype) -> None:
    args = _layer_args(dtype)
    got = moe.int8_moe(*args)
    assert got.dtype == dtype and got.shape == (TOKENS, HIDDEN)
    assert torch.equal(got, moe_reference.int8_moe(*args))


def test_reference_backend_serves_emulated_tensors_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.EMULATE_ENV, "gfx1100")
    monkeypatch.setenv(settings.OPS_ENV, "reference")
    args = _layer_args()
    assert torch.equal(moe.int8_moe(*args), moe_reference.int8_moe(*args))
    assert moe.prepare_moe_weights(args[1], args[3]) == (args[1], args[3])  # the reference's layout


def test_without_a_hip_implementation_our_device_gets_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, moe.HIP_MODULE, None)  # a build without moe/hip_backend.py
    assert not moe.hip_available()
    monkeypatch.setenv(settings.EMULATE_ENV, "gfx1100")
    monkeypatch.delenv(settings.OPS_ENV, raising=False)
    args = _layer_args()
    with pytest.raises(NotImplementedError, match=r"no HIP implementation .*VLLM_RDNA_W8A8_OPS=reference"):
        moe.int8_moe(*args)
    with pytest.raises(NotImplementedError, match=re.escape(f"{moe.HIP_MODULE} is missing")):
        moe.prepare_moe_weights(args[1], args[3])


def test_bad_arguments_are_named_by_the_op_and_its_fake(not_emulated: None) -> None:
    x, w13, w13_scale, w2, w2_scale, weights, ids = _layer_args()
    bad = (x, w13, w13_scale[:, :3], w2, w2_scale, weights, ids)
    with pytest.raises(ValueError, match=r"w13_scale must have shape \[4, 80\]"):
        moe.int8_moe(*bad)
    with pytest.raises(ValueError, match=r"w13_scale must have shape \[4, 80\]"):
        moe.int8_moe(*(arg.to("meta") for arg in bad))  # the fake serves meta tensors
    with pytest.raises(ValueError, match="w13 and w2 must be .* int8"):
        moe.int8_moe(x, w13.float(), w13_scale, w2, w2_scale, weights, ids)


def test_fake_gives_the_output_shape_and_dtype(not_emulated: None) -> None:
    args = _layer_args(torch.float16)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = moe.int8_moe(*(mode.from_tensor(arg) for arg in args))
    assert (tuple(fake.shape), fake.dtype) == ((TOKENS, HIDDEN), torch.float16)
    torch.library.opcheck(moe.int8_moe, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_compiled_graph_keeps_the_op_opaque(not_emulated: None) -> None:
    graphs: list[torch.fx.GraphModule] = []

    def keep_graph(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
        graphs.append(graph)
        return graph.forward

    args = _layer_args()
    compiled = torch.compile(moe.int8_moe, backend=aot_autograd(fw_compiler=keep_graph), fullgraph=True)
    assert torch.equal(compiled(*args), moe_reference.int8_moe(*args))
    (graph,) = graphs
    called = [node.target for node in graph.graph.nodes if node.op == "call_function"]
    assert [target for target in called if target is not operator.getitem] == [torch.ops.rdna_w8a8.int8_moe.default]


def _fp8_layer_args(static: bool) -> tuple[torch.Tensor | None, ...]:
    """int8_moe's arguments with e4m3fn weights, per-tensor weight scales and, when `static`,
    per-tensor activation scales of both stages."""
    x, w13, _, w2, _, weights, ids = _layer_args()
    generator = torch.Generator().manual_seed(8)
    w13_scale = torch.rand(EXPERTS, 1, generator=generator) / 50
    w2_scale = torch.rand(EXPERTS, 1, generator=generator) / 50
    static_scales = (torch.tensor([0.02]), torch.tensor([0.05])) if static else (None, None)
    return (x, w13.to(torch.float8_e4m3fn), w13_scale, w2.to(torch.float8_e4m3fn), w2_scale, weights, ids,
            *static_scales)


@pytest.mark.parametrize("static", [False, True])
def test_fp8_op_gives_the_reference_math_and_its_fake_checks_alike(not_emulated: None, static: bool) -> None:
    args = _fp8_layer_args(static)
    got = moe.fp8_moe(*args)
    assert torch.equal(got, moe_reference.fp8_moe(*args)) and torch.isfinite(got.float()).all()
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = moe.fp8_moe(*(None if arg is None else mode.from_tensor(arg) for arg in args))
    assert (tuple(fake.shape), fake.dtype) == ((TOKENS, HIDDEN), torch.bfloat16)
    # (not "test_schema": torch's schema check multiplies the float8 inputs, which the CPU lacks)
    torch.library.opcheck(moe.fp8_moe, args, test_utils=("test_faketensor", "test_autograd_registration"))
    bad = (*args[:2], args[2][:, :0], *args[3:])
    with pytest.raises(ValueError, match=r"w13_scale must have shape \[4, 80\] or \[4, 1\]"):
        moe.fp8_moe(*(None if arg is None else arg.to("meta") for arg in bad))  # the fake serves meta tensors
