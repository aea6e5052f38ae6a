"""python -m vllm_rdna_w8a8.tools.moe_model: the floors and the grouped model's predictions of one
MoE layer, as docs/performance.md prints them (predictions and paper-peak floors only)."""

from __future__ import annotations

import pytest

from vllm_rdna_w8a8 import dispatch
from vllm_rdna_w8a8.dispatch import perf_model
from vllm_rdna_w8a8.dispatch.model_shapes import KNOWN_MOE_MODELS, expert_shapes, routed_load
from vllm_rdna_w8a8.tools import moe_model


@pytest.mark.parametrize("tokens", [1, 512])
def test_a_row_is_the_floors_and_the_sum_of_the_dispatched_launches(tokens: int) -> None:
    qwen = KNOWN_MOE_MODELS["Qwen/Qwen3-30B-A3B"]
    row = moe_model.layer_row("gfx1151", qwen, 1, tokens)
    assert row.floors == perf_model.moe_expert_floors("gfx1151", qwen, 1, tokens)
    load = routed_load(128, 8, tokens)
    assert (row.active_experts, row.tokens_per_expert) == (load.active_experts, load.tokens_per_expert)
    for kind, moe_kind in (("i8", "i8_moe"), ("f8", "f8_moe")):
        configs = [dispatch.pick_moe_config("gfx1151", tokens, 8, 128, shape.n, shape.k, kind)
                   for shape in expert_shapes(qwen, 1)]
        predicted = [perf_model.predict_grouped("gfx1151", config, load.active_experts, load.tokens_per_expert,
                                                shape.n, shape.k, moe_kind)
                     for config, shape in zip(configs, expert_shapes(qwen, 1))]
        assert row.predictions[kind].tags == tuple(config.tag for config in configs)
        assert row.predictions[kind].time_us == pytest.approx(sum(p.time_us for p in predicted))


def test_cli_prints_a_labelled_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert moe_model.main(["--model", "Qwen3.6-35B-A3B", "--targets", "gfx1100", "--tokens", "1", "4096"]) == 0
    out = capsys.readouterr().out
    assert "nothing measured" in out and "model prediction (us)" in out and "memory floor (us)" in out
    assert out.count("| gfx1100 |") == 2


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "Llama-3-8B"], "not a known MoE model"),
    (["--tokens", "0"], "every --tokens must be >= 1"),
    (["--tp", "5"], "not divisible by tp=5"),
])
def test_cli_names_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        moe_model.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
