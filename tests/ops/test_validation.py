"""Bad input to the ops: each case raises a clear error naming the problem."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vllm_rdna_w8a8.ops import hip_backend, reference

BACKENDS = [reference, hip_backend]
i8 = torch.int8


def _gemm_args(**changes):
    args = dict(
        a=torch.zeros((4, 32), dtype=i8), b=torch.zeros((8, 32), dtype=i8),
        a_scale=torch.ones(4), b_scale=torch.ones(8), out_dtype=torch.float16,
        azp=None, azp_adj=None, bias=None,
    )
    args.update(changes)
    return args


GEMM_CASES = [
    (dict(a=torch.zeros((4, 32), dtype=torch.int16)), TypeError, "a must be int8, got int16"),
    (dict(b=[[1]]), TypeError, "b must be a torch.Tensor, got list"),
    (dict(a=torch.zeros((2, 2, 32), dtype=i8)), ValueError, "a and b must be 2-D"),
    (dict(b=torch.zeros((8, 48), dtype=i8)), ValueError, "K differs"),
    (dict(out_dtype=torch.float32), TypeError, "out_dtype must be float16 or bfloat16, got float32"),
    (dict(out_dtype="half"), TypeError, "out_dtype must be a torch.dtype"),
    (dict(a_scale=torch.ones(3)), ValueError, r"a_scale must have shape \[4\] or \[1\]"),
    (dict(a_scale=torch.ones(4, dtype=torch.float64)), TypeError, "a_scale must be float32, got float64"),
    (dict(b_scale=torch.ones(2, 4)), ValueError, r"b_scale must have shape \[8\] or \[1\]"),
    (dict(azp=torch.zeros(4, dtype=torch.int32)), ValueError, "azp given without azp_adj"),
    (dict(azp_adj=torch.zeros(7, dtype=torch.int32)), ValueError, r"azp_adj must have shape \[8\]"),
    (dict(azp_adj=torch.zeros(8, dtype=torch.int64)), TypeError, "azp_adj must be int32, got int64"),
    (dict(azp=torch.zeros(1, dtype=torch.int32), azp_adj=torch.zeros(8, dtype=torch.int32)), ValueError,
     r"azp must have shape \[4\]"),
    (dict(bias=torch.zeros(8, dtype=torch.bfloat16)), TypeError, "bias must have the output dtype float16, got bfloat16"),
    (dict(bias=torch.zeros(9, dtype=torch.float16)), ValueError, r"bias must have shape \[8\]"),
    (dict(b_scale=torch.ones(8, device="meta")), ValueError, "b_scale is on meta, the activations on cpu"),
]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize(("changes", "error", "match"), GEMM_CASES)
def test_gemm_rejects_bad_input(backend, changes, error, match) -> None:
    with pytest.raises(error, match=match):
        backend.int8_scaled_mm(**_gemm_args(**changes))


QUANT_CASES = [
    (dict(x=torch.zeros(4, 32)), TypeError, "x must be float16, bfloat16, got float32"),
    (dict(x=torch.zeros(4, 2, 16, dtype=torch.float16)), ValueError, r"x must be 2-D \[M, K\] with K >= 1"),
    (dict(padded_k=40), ValueError, "padded_k must be a multiple of 16 and >= K=32, got 40"),
    (dict(padded_k=16), ValueError, "padded_k must be a multiple of 16 and >= K=32, got 16"),
    (dict(padded_k=32.0), TypeError, "padded_k must be an int"),
    (dict(symmetric=1), TypeError, "symmetric must be a bool"),
    (dict(azp=torch.zeros(1, dtype=torch.int32)), ValueError, "azp given without scale"),
    (dict(scale=torch.ones(4)), ValueError, r"scale must have shape \[1\]"),
    (dict(scale=torch.ones(1, dtype=torch.float16)), TypeError, "scale must be float32, got float16"),
    (dict(scale=torch.ones(1), azp=torch.zeros(1, dtype=torch.int32)), ValueError,
     "azp must be None for symmetric quantization"),
    (dict(scale=torch.ones(1), symmetric=False), ValueError, "asymmetric static quantization needs azp"),
    (dict(scale=torch.ones(1), symmetric=False, azp=torch.zeros(1, dtype=torch.int8)), TypeError,
     "azp must be int32, got int8"),
]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize(("changes", "error", "match"), QUANT_CASES)
def test_quant_rejects_bad_input(backend, changes, error, match) -> None:
    args = dict(x=torch.zeros((4, 32), dtype=torch.float16), scale=None, azp=None, symmetric=True, padded_k=32)
    args.update(changes)
    with pytest.raises(error, match=match):
        backend.scaled_int8_quant(**args)


@pytest.fixture
def recorded_launches(monkeypatch) -> list:
    """hip_backend launches recorded instead of run, device 0 an emulated gfx1100."""
    launches: list = []
    hip_backend._thread_plans().clear()  # no plan of an earlier test's kernels
    monkeypatch.setattr(hip_backend, "_kernel", lambda device, name: _Recorder(launches))
    monkeypatch.setattr(hip_backend, "_target", lambda device: "gfx1100")
    return launches


HIP_ONLY_GEMM_CASES = [
    (dict(a=torch.zeros((4, 40), dtype=i8), b=torch.zeros((8, 40), dtype=i8)), "K=40 must be a multiple of 16"),
    (dict(a=torch.zeros((32, 4), dtype=i8).T), r"a needs contiguous rows \(stride\(1\) == 1\)"),
    (dict(b=torch.zeros((8, 48), dtype=i8)[:, :32]), None),  # ldb 48: allowed
    (dict(b=torch.zeros((8, 40), dtype=i8)[:, :32]), "b's row stride 40 must be a multiple of 16"),
    (dict(a=torch.zeros(4 * 32 + 1, dtype=i8)[1:].view(4, 32)), "a must start on a 16-byte boundary"),
    (dict(b_scale=torch.ones(8, 2)[:, 0]), "b_scale must be contiguous"),
]


@pytest.mark.parametrize(("changes", "match"), HIP_ONLY_GEMM_CASES)
def test_hip_gemm_layout_requirements(changes, match, recorded_launches) -> None:
    if match is None:
        hip_backend.int8_scaled_mm(**_gemm_args(**changes))
        assert len(recorded_launches) == 1
        return
    with pytest.raises(ValueError, match=match):
        hip_backend.int8_scaled_mm(**_gemm_args(**changes))
    assert not recorded_launches


def test_hip_quant_needs_contiguous_rows() -> None:
    x = torch.zeros((32, 4), dtype=torch.float16).T
    with pytest.raises(ValueError, match=r"x needs contiguous rows"):
        hip_backend.scaled_int8_quant(x, None, None, True, 32)


class _Recorder:
    def __init__(self, launches: list) -> None:
        self.launches = launches

    def launch_values(self, grid, block, kinds, values, stream) -> None:
        self.launches.append((grid, block, list(zip(kinds, values)), stream))

    def prepare(self, block, kinds, values, variable) -> SimpleNamespace:
        """A PreparedLaunch: the prepared values, the variable ones replaced per launch."""
        def launch(grid, stream, *variable_values) -> None:
            full = list(values)
            for index, value in zip(variable, variable_values, strict=True):
                full[index] = value
            self.launch_values(grid, block, kinds, full, stream)
        return SimpleNamespace(launch=launch)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_fp8_gemm_rejects_int8_operands(backend) -> None:
    args = _gemm_args()
    with pytest.raises(TypeError, match="a must be float8_e4m3fn, got int8"):
        backend.fp8_scaled_mm(args["a"], args["b"], args["a_scale"], args["b_scale"], torch.float16, None)


def test_fp8_gemm_takes_no_zero_points() -> None:
    from vllm_rdna_w8a8.ops.validation import check_gemm_args

    a = torch.zeros((4, 32), dtype=torch.float8_e4m3fn)
    b = torch.zeros((8, 32), dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="fp8 GEMMs take no zero points"):
        check_gemm_args(a, b, torch.ones(4), torch.ones(8), torch.float16, None,
                        torch.zeros(8, dtype=torch.int32), None, torch.float8_e4m3fn)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_int8_gemm_refuses_k_beyond_what_int32_sums_hold(backend, recorded_launches) -> None:
    # Issue 11: K = 2^17 with every operand -128 sums to 2^31, one past int32 (the kernel
    # returned -128 where the reference gave +128).
    k = 2**17
    a, b = torch.full((1, k), -128, dtype=i8), torch.full((16, k), -128, dtype=i8)
    with pytest.raises(ValueError, match=r"K=131072 exceeds 131071, the largest K whose int8 sums"):
        backend.int8_scaled_mm(a, b, torch.ones(1), torch.ones(1), torch.float16)
    assert not recorded_launches
    longest = 131071 // 16 * 16  # the longest K the kernels take: served
    backend.int8_scaled_mm(a[:, :longest], b[:, :longest], torch.ones(1), torch.ones(1), torch.float16)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("k", [131060, 2**17])  # 131060: padded to 131072
def test_int8_layer_op_refuses_k_beyond_what_int32_sums_hold(backend, recorded_launches, k) -> None:
    # The op of an int8 layer, called directly (our class hands such layers to upstream).
    x = torch.zeros((1, k), dtype=torch.float16)
    b = torch.zeros((16, 2**17), dtype=i8)
    with pytest.raises(ValueError, match=r"K=131072 exceeds 131071, the largest K whose int8 sums"):
        backend.int8_quant_scaled_mm(x, b, None, None, True, torch.ones(16), torch.float16)
    assert not recorded_launches


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("operand_dtype", [i8, torch.float8_e4m3fn], ids=["int8", "fp8"])
def test_gemm_with_k_0_is_one_clear_error(backend, operand_dtype, recorded_launches) -> None:
    a, b = torch.zeros((4, 0), dtype=operand_dtype), torch.zeros((8, 0), dtype=operand_dtype)
    gemm = backend.int8_scaled_mm if operand_dtype == i8 else backend.fp8_scaled_mm
    with pytest.raises(ValueError, match="K=0: a and b have no columns, the GEMMs need K >= 1"):
        gemm(a, b, torch.ones(1), torch.ones(1), torch.float16)
    assert not recorded_launches
