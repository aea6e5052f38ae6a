from __future__ import annotations

import dataclasses

import pytest

from vllm_rdna_w8a8.build.targets import (
    GFX11_TARGETS,
    get_target,
    parse_arch_list,
    selected_targets,
)


def test_six_targets_with_their_facts() -> None:
    assert list(GFX11_TARGETS) == ["gfx1100", "gfx1101", "gfx1102", "gfx1103", "gfx1150", "gfx1151"]
    assert GFX11_TARGETS["gfx1100"].cu_count == 96
    assert GFX11_TARGETS["gfx1102"].vgprs_per_simd == 1024
    assert GFX11_TARGETS["gfx1102"].vgpr_alloc_granule == 16
    assert GFX11_TARGETS["gfx1151"].vgprs_per_simd == 1536
    assert GFX11_TARGETS["gfx1151"].isa_version == 11501
    assert all(t.lds_bytes_per_workgroup == 65536 for t in GFX11_TARGETS.values())


def test_targets_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        GFX11_TARGETS["gfx1100"].cu_count = 1  # type: ignore[misc]


def test_default_selects_all_six() -> None:
    assert [t.name for t in selected_targets({})] == list(GFX11_TARGETS)
    assert [t.name for t in selected_targets({"PYTORCH_ROCM_ARCH": "  "})] == list(GFX11_TARGETS)


@pytest.mark.parametrize(
    ("arch_list", "expected"),
    [
        ("gfx1100", ["gfx1100"]),
        ("gfx1100;gfx1151", ["gfx1100", "gfx1151"]),
        ("gfx1102,gfx1103", ["gfx1102", "gfx1103"]),
        ("gfx1100:xnack-;gfx1101:sramecc-:xnack-", ["gfx1100", "gfx1101"]),
        ("gfx90a;gfx942;gfx1100;gfx1201", ["gfx1100"]),  # non-gfx11 entries ignored
        ("gfx1150; gfx1150 ;", ["gfx1150"]),  # duplicates and blanks
    ],
)
def test_arch_list_parsing(arch_list: str, expected: list[str]) -> None:
    assert [t.name for t in selected_targets({"PYTORCH_ROCM_ARCH": arch_list})] == expected


def test_arch_list_without_gfx11_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"PYTORCH_ROCM_ARCH='gfx90a;gfx942' names no gfx11"):
        parse_arch_list("gfx90a;gfx942")


def test_get_target() -> None:
    assert get_target("gfx1101:xnack-").cu_count == 60
    with pytest.raises(ValueError, match="unknown gfx11 target 'gfx1030'"):
        get_target("gfx1030")
    with pytest.raises(TypeError, match="must be a str"):
        get_target(1100)  # type: ignore[arg-type]
