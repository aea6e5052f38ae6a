"""kernels/kernel_abi.def is the one place the kernel ABI constants (flag bits, the
quantization block, the tile limits) are written: the kernels and Python both read it, and no
kernel source or Python module states one of them itself."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from kernel_harness import KERNELS_DIR
import vllm_rdna_w8a8
from vllm_rdna_w8a8.build import find_clang
from vllm_rdna_w8a8.build.compile import KERNEL_ABI_NAME, TILE_TABLE_NAME
from vllm_rdna_w8a8.build.kernel_data import AbiConstant, parse_abi_constants

PACKAGE_DIR = Path(vllm_rdna_w8a8.__file__).resolve().parent
ABI_FILE = KERNELS_DIR / KERNEL_ABI_NAME
CONSTANTS = parse_abi_constants(ABI_FILE.read_text(), source=str(ABI_FILE))
KERNEL_SOURCES = sorted(path for path in KERNELS_DIR.rglob("*") if path.suffix in (".h", ".hip"))


def _module_name(path: Path) -> str:
    return ".".join(("vllm_rdna_w8a8", *path.relative_to(PACKAGE_DIR).with_suffix("").parts))


def _abi_readers() -> dict[str, list[str]]:
    """Module -> the names it binds with `NAME = abi_constant("NAME")`."""
    readers: dict[str, list[str]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Name) and node.value.func.id == "abi_constant"):
                readers.setdefault(_module_name(path), []).extend(
                    target.id for target in node.targets if isinstance(target, ast.Name))
    return readers


def test_python_takes_every_value_from_the_data_file(tmp_path: Path) -> None:
    """Python modules given a kernel_abi.def (outside kernels/, as an installed package's copy)
    with every value changed hold the changed values, and together they read every constant."""
    changed = {constant.python_name: constant.value + 1000 + index for index, constant in enumerate(CONSTANTS)}
    text = ABI_FILE.read_text()
    for constant in CONSTANTS:
        text, count = re.subn(rf"({constant.cpp_name}, {constant.python_name}, ){constant.value},",
                              rf"\g<1>{changed[constant.python_name]},", text)
        assert count == 1, constant
    (tmp_path / KERNEL_ABI_NAME).write_text(text)
    (tmp_path / TILE_TABLE_NAME).write_text((KERNELS_DIR / TILE_TABLE_NAME).read_text())
    readers = _abi_readers()
    script = (
        "import importlib, json, sys\n"
        "from pathlib import Path\n"
        "from vllm_rdna_w8a8.build import kernel_data\n"
        "kernel_data.KERNEL_DATA_DIRS = (Path(sys.argv[1]),)\n"
        "readers = json.loads(sys.argv[2])\n"
        "print(json.dumps({module: {name: getattr(importlib.import_module(module), name) for name in names}"
        " for module, names in readers.items()}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path), json.dumps(readers)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    held = json.loads(result.stdout)
    read = {name for names in held.values() for name in names}
    assert read == set(changed), f"read by no module: {set(changed) - read}; not in the file: {read - set(changed)}"
    for module, values in held.items():
        for name, value in values.items():
            assert value == changed[name], f"{module}.{name} = {value}, not the file's {changed[name]}"


def _literal_int(node: ast.expr) -> bool:
    """An int written out: 4, 64 * 1024, 1 << 3."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int) and not isinstance(node.value, bool)
    if isinstance(node, ast.BinOp):
        return _literal_int(node.left) and _literal_int(node.right)
    return isinstance(node, ast.UnaryOp) and _literal_int(node.operand)


def test_no_python_module_states_an_abi_value() -> None:
    names = {constant.python_name for constant in CONSTANTS}
    stated = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            value = getattr(node, "value", None)
            for target in targets:
                if isinstance(target, ast.Name) and target.id.lstrip("_") in names and value is not None and _literal_int(value):
                    stated.append(f"{path.relative_to(PACKAGE_DIR)}:{node.lineno}: {target.id}")
    assert not stated, f"read these from {KERNEL_ABI_NAME} (abi_constant) instead: {stated}"


def _definition(constant: AbiConstant) -> re.Pattern[str]:
    name = constant.cpp_name
    return re.compile(rf"\bconstexpr\b[^;={{}}]*\b{name}\s*=|#\s*define\s+{name}\b|\benum\b[^;]*\b{name}\s*=")


def test_no_kernel_source_defines_an_abi_constant_and_each_is_used() -> None:
    defined, unused = [], []
    sources = {path: path.read_text() for path in KERNEL_SOURCES}
    for constant in CONSTANTS:
        defined += [f"{path.relative_to(KERNELS_DIR)}: {constant.cpp_name}"
                    for path, text in sources.items() if _definition(constant).search(text)]
        if not any(re.search(rf"\b{constant.cpp_name}\b", text) for text in sources.values()):
            unused.append(constant.cpp_name)
    assert not defined, f"defined outside {KERNEL_ABI_NAME}: {defined}"
    assert not unused, f"constants of {KERNEL_ABI_NAME} no kernel uses: {unused}"


def test_the_kernels_compile_with_the_values_python_reads(tmp_path: Path) -> None:
    """Every value as Python parsed it equals the constexpr the kernels see."""
    probe = tmp_path / "abi_probe.hip"
    probe.write_text('#include "common/hip_compat.h"\n' + "".join(
        f'static_assert(::rdna_w8a8::{c.cpp_name} == {c.value}, "{c.cpp_name}");\n' for c in CONSTANTS))
    command = [str(find_clang().path), "-x", "hip", "--offload-arch=gfx1100", "--cuda-device-only",
               "-nogpulib", "-std=c++20", "-fsyntax-only", f"-I{KERNELS_DIR}", str(probe)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
