"""The kernel data files of kernels/ read by the host: where they are, how their X-macro rows
parse, and the kernel ABI constants of kernels/kernel_abi.def.

The kernels `#include` the same files, so host and device read one set of rows. The build
copies them beside the code objects (compile.copy_kernel_data): an installed package reads
that copy, the values its kernels were compiled with; a source checkout falls back to
kernels/. Standard library only, like the rest of the build module.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .compile import DEFAULT_KERNELS_DIR, DEFAULT_OBJECTS_DIR, KERNEL_ABI_NAME

# Looked in, in order, for a kernel data file.
KERNEL_DATA_DIRS = (DEFAULT_OBJECTS_DIR, DEFAULT_KERNELS_DIR)

ABI_MACRO = "W8A8_ABI_CONSTANT"
ABI_FIELDS = ("cpp_name", "python_name", "value", '"why"')

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ARGUMENT = re.compile(r'\s*("[^"]*"|[^,"]*?)\s*(,|$)')


def kernel_data_paths(name: str) -> tuple[Path, ...]:
    """Where the kernel data file `name` may be, in the order it is looked for."""
    return tuple(directory / name for directory in KERNEL_DATA_DIRS)


def find_kernel_data_file(name: str, paths: Sequence[Path] | None = None) -> Path:
    paths = kernel_data_paths(name) if paths is None else paths
    for path in paths:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"kernel data file {name} not found; looked in " + ", ".join(str(path) for path in paths)
        + " (build the package with `python -m vllm_rdna_w8a8.build` or run from a source checkout)")


def strip_comments(text: str) -> str:
    """C comments removed, newlines kept (line numbers stay right). Not string-aware: the
    data files keep comment markers out of their quoted fields."""
    text = re.sub(r"/\*.*?\*/", lambda match: "\n" * match.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _split_arguments(inner: str) -> list[str] | None:
    """The comma-separated arguments (a quoted one kept whole), or None when an argument
    mixes quoted and unquoted text."""
    arguments = []
    position = 0
    while True:
        match = _ARGUMENT.match(inner, position)
        if match is None:
            return None
        arguments.append(match.group(1))
        if not match.group(2):
            return arguments
        position = match.end()


def read_xmacro_rows(text: str, macro: str, fields: Sequence[str], source: str,
                     error: type[ValueError]) -> list[tuple[int, list[str]]]:
    """(line number, arguments) of every `macro(...)` row of an X-macro data file, each
    with len(fields) arguments (a quoted argument keeps its quotes). Blank lines, comments
    and preprocessor lines are skipped; anything else raises `error` naming the line."""
    call = re.compile(macro + r'\s*\(((?:"[^"\n]*"|[^()"\n])*)\)')
    signature = f"{macro}({', '.join(fields)})"
    rows = []
    for line_number, line in enumerate(strip_comments(text).splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):  # blank or preprocessor guard
            continue
        calls = list(call.finditer(stripped))
        if not calls or call.sub("", stripped).strip():
            raise error(f"{source}:{line_number}: expected {signature}, got {stripped!r}")
        for match in calls:
            arguments = _split_arguments(match.group(1))
            if arguments is None:
                raise error(f"{source}:{line_number}: malformed arguments in {match.group(0)!r}")
            if len(arguments) != len(fields):
                raise error(f"{source}:{line_number}: {macro} takes {len(fields)} values "
                            f"({', '.join(fields)}), got {len(arguments)}")
            rows.append((line_number, arguments))
    if not rows:
        raise error(f"{source}: no {macro} rows found")
    return rows


class KernelAbiError(ValueError):
    """A row of kernels/kernel_abi.def is malformed, or a constant is missing."""


@dataclass(frozen=True)
class AbiConstant:
    """One row of kernel_abi.def: the C++ constexpr `cpp_name` and the Python `python_name`
    of one value."""

    cpp_name: str
    python_name: str
    value: int
    why: str


def parse_abi_constants(text: str, source: str = KERNEL_ABI_NAME) -> tuple[AbiConstant, ...]:
    constants: list[AbiConstant] = []
    seen: dict[str, int] = {}
    for line_number, (cpp_name, python_name, value, why) in read_xmacro_rows(
            text, ABI_MACRO, ABI_FIELDS, source, KernelAbiError):
        where = f"{source}:{line_number}"
        for name in (cpp_name, python_name):
            if not _IDENTIFIER.fullmatch(name):
                raise KernelAbiError(f"{where}: {name!r} is not an identifier")
            if name in seen:
                raise KernelAbiError(f"{where}: {name} already defined on line {seen[name]}")
            seen[name] = line_number
        if not re.fullmatch(r"\d+", value):
            raise KernelAbiError(f"{where}: {cpp_name} needs a plain decimal integer, got {value!r}")
        if not (len(why) >= 2 and why[0] == why[-1] == '"'):
            raise KernelAbiError(f"{where}: {cpp_name} needs a quoted reason, got {why!r}")
        constants.append(AbiConstant(cpp_name, python_name, int(value), why[1:-1]))
    return tuple(constants)


@functools.lru_cache(maxsize=8)
def load_abi_constants(path: Path | None = None) -> dict[str, AbiConstant]:
    """The constants of the shipped kernel_abi.def (or of `path`) by Python name."""
    path = find_kernel_data_file(KERNEL_ABI_NAME) if path is None else Path(path)
    return {constant.python_name: constant
            for constant in parse_abi_constants(path.read_text(), source=str(path))}


def abi_constant(python_name: str) -> int:
    """The value of one kernel ABI constant, by its Python name."""
    constants = load_abi_constants()
    if python_name not in constants:
        raise KernelAbiError(f"{python_name} is not a constant of {KERNEL_ABI_NAME}; "
                             f"it has {', '.join(constants)}")
    return constants[python_name].value
