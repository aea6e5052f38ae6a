"""The kernel data files: the installed copies equal kernels/, the build copies them, and
kernel_abi.def rows parse or fail naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_rdna_w8a8.build import copy_kernel_data
from vllm_rdna_w8a8.build.compile import (
    DEFAULT_KERNELS_DIR,
    DEFAULT_OBJECTS_DIR,
    KERNEL_ABI_NAME,
    KERNEL_DATA_NAMES,
)
from vllm_rdna_w8a8.build.kernel_data import (
    KernelAbiError,
    abi_constant,
    find_kernel_data_file,
    parse_abi_constants,
)


@pytest.mark.parametrize("name", KERNEL_DATA_NAMES)
def test_the_shipped_copy_equals_the_source(name: str) -> None:
    """What an installed package reads (vllm_rdna_w8a8/_objects/) is what the kernels compiled."""
    shipped = DEFAULT_OBJECTS_DIR / name
    assert shipped.is_file(), f"{shipped} missing: run python -m vllm_rdna_w8a8.build"
    assert shipped.read_bytes() == (DEFAULT_KERNELS_DIR / name).read_bytes(), (
        f"{shipped} differs from kernels/{name}: rebuild (python -m vllm_rdna_w8a8.build)")


def test_copy_kernel_data_copies_each_file_and_drops_a_removed_one(tmp_path: Path) -> None:
    kernels, objects = tmp_path / "kernels", tmp_path / "objects"
    kernels.mkdir()
    for name in KERNEL_DATA_NAMES:
        (kernels / name).write_text(f"// {name}\n")
    copy_kernel_data(kernels, objects, log=lambda line: None)
    assert sorted(path.name for path in objects.iterdir()) == sorted(KERNEL_DATA_NAMES)
    (kernels / KERNEL_ABI_NAME).unlink()
    lines: list[str] = []
    copy_kernel_data(kernels, objects, log=lines.append)
    assert not (objects / KERNEL_ABI_NAME).exists()
    assert lines == [f"rdna_w8a8 build: no {KERNEL_ABI_NAME} in {kernels}"]


def test_abi_rows_parse_with_quoted_reasons() -> None:
    text = ('// header\n#pragma once\n'
            'W8A8_ABI_CONSTANT(kOne, ONE, 1, "a reason, with a comma (and parentheses)")\n'
            'W8A8_ABI_CONSTANT(kTwo, TWO, 256, "")\n')
    one, two = parse_abi_constants(text)
    assert (one.cpp_name, one.python_name, one.value, one.why) == (
        "kOne", "ONE", 1, "a reason, with a comma (and parentheses)")
    assert (two.python_name, two.value, two.why) == ("TWO", 256, "")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('W8A8_ABI_CONSTANT(kX, X, 1)', "takes 4 values"),
        ('W8A8_ABI_CONSTANT(kX, X, 0x10, "hex")', "plain decimal integer"),
        ('W8A8_ABI_CONSTANT(kX, X, 64 * 1024, "product")', "plain decimal integer"),
        ('W8A8_ABI_CONSTANT(kX, X, 1, unquoted)', "needs a quoted reason"),
        ('W8A8_ABI_CONSTANT(kX, X, 1, x"half quoted")', "malformed arguments"),
        ('W8A8_ABI_CONSTANT(kX, 9X, 1, "")', "'9X' is not an identifier"),
        ('W8A8_ABI_CONSTANT(kOne, X, 1, "")', "kOne already defined on line 1"),
        ('W8A8_ABI_CONSTANT(kX, ONE, 1, "")', "ONE already defined on line 1"),
        ('constexpr int kX = 1;', "expected W8A8_ABI_CONSTANT"),
    ],
)
def test_bad_abi_rows_are_rejected_with_the_line(row: str, message: str) -> None:
    text = 'W8A8_ABI_CONSTANT(kOne, ONE, 1, "")\n' + row + "\n"
    with pytest.raises(KernelAbiError, match=message) as error:
        parse_abi_constants(text, source="x.def")
    assert "x.def:2" in str(error.value)


def test_missing_file_and_unknown_constant_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="kernel data file x.def not found; looked in .*nope"):
        find_kernel_data_file("x.def", (tmp_path / "nope" / "x.def",))
    with pytest.raises(KernelAbiError, match="NOT_A_CONSTANT is not a constant of kernel_abi.def"):
        abi_constant("NOT_A_CONSTANT")
    with pytest.raises(KernelAbiError, match="no W8A8_ABI_CONSTANT rows"):
        parse_abi_constants("// empty\n")
