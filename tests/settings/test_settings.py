"""vllm_rdna_w8a8/settings.py: the emulate switch, the ops backend, the gfx11 policy; and that
ops/ and runtime/ need neither vLLM nor scaled_mm/ to import."""

from __future__ import annotations

import pytest

from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.settings import EMULATE_ENV, OPS_ENV, emulated_target, emulated_targets, is_gfx11, ops_backend


@pytest.mark.parametrize("value", ["", "  "])
def test_emulation_is_off_when_unset_or_empty(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.delenv(EMULATE_ENV, raising=False)
    assert emulated_target() is None
    monkeypatch.setenv(EMULATE_ENV, value)
    assert emulated_target() is None


@pytest.mark.parametrize("target", sorted(GFX11_TARGETS))
def test_every_gfx11_target_can_be_emulated(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    monkeypatch.setenv(EMULATE_ENV, target)
    assert emulated_target() == target


@pytest.mark.parametrize("value", ["gfx90a", "gfx1200", "gfx1100:xnack-", "1", "GFX1100"])
def test_other_values_are_refused_with_the_allowed_list(monkeypatch: pytest.MonkeyPatch,
                                                        value: str) -> None:
    monkeypatch.setenv(EMULATE_ENV, value)
    with pytest.raises(ValueError, match=f"{EMULATE_ENV}=.*gfx1100, gfx1101, gfx1102, gfx1103, "
                                         "gfx1150, gfx1151"):
        emulated_target()


@pytest.mark.parametrize(("value", "targets"), [
    ("gfx1100,gfx1151", ("gfx1100", "gfx1151")),
    (" gfx1100 , gfx1030 ", ("gfx1100", "gfx1030")),  # a mixed box: gfx1030 stays upstream
    ("gfx90a,gfx1102", ("gfx90a", "gfx1102")),
])
def test_a_device_list_names_each_devices_target(monkeypatch: pytest.MonkeyPatch, value: str,
                                                 targets: tuple[str, ...]) -> None:
    monkeypatch.setenv(EMULATE_ENV, value)
    assert emulated_targets() == targets
    assert emulated_target() == targets[0]


@pytest.mark.parametrize("value", ["gfx90a,gfx1030", "gfx1100,", "gfx1100,GFX1151", "gfx1100;gfx1151"])
def test_device_lists_need_target_names_and_a_gfx11_device(monkeypatch: pytest.MonkeyPatch,
                                                           value: str) -> None:
    monkeypatch.setenv(EMULATE_ENV, value)
    with pytest.raises(ValueError, match="at least one of those"):
        emulated_targets()


@pytest.mark.parametrize(("value", "backend"), [(None, "auto"), ("", "auto"), (" Reference ", "reference"),
                                                ("auto", "auto")])
def test_ops_backend(monkeypatch: pytest.MonkeyPatch, value: str | None, backend: str) -> None:
    if value is None:
        monkeypatch.delenv(OPS_ENV, raising=False)
    else:
        monkeypatch.setenv(OPS_ENV, value)
    assert ops_backend() == backend


def test_bad_ops_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPS_ENV, "fast")
    with pytest.raises(ValueError, match="VLLM_RDNA_W8A8_OPS='fast' is not one of auto, reference"):
        ops_backend()


@pytest.mark.parametrize(("target", "expected"), [
    ("gfx1100", True), ("gfx1151", True), ("gfx1103:xnack-", True),
    ("gfx1030", False), ("gfx1200", False), ("gfx90a", False), (None, False),
])
def test_is_gfx11(target: str | None, expected: bool) -> None:
    assert is_gfx11(target) is expected
