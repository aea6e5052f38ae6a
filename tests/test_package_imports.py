"""How the package's parts depend on each other: the ops and the runtime import without vLLM,
and no two parts import each other."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import vllm_rdna_w8a8

PACKAGE_DIR = Path(vllm_rdna_w8a8.__file__).parent

# Imports every module of ops/ and runtime/ with `import vllm` failing (None in sys.modules
# makes any import of it raise ImportError), then lists what got imported.
IMPORT_WITHOUT_VLLM = """
import importlib, json, pkgutil, sys
sys.modules["vllm"] = None
imported = []
for package in ("vllm_rdna_w8a8.ops", "vllm_rdna_w8a8.runtime"):
    path = importlib.import_module(package).__path__
    for module in pkgutil.iter_modules(path):
        imported.append(importlib.import_module(f"{package}.{module.name}").__name__)
print(json.dumps({"imported": imported, "loaded": sorted(sys.modules)}))
"""


def test_ops_and_runtime_import_without_vllm() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORT_WITHOUT_VLLM], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"vllm_rdna_w8a8.ops.custom_ops", "vllm_rdna_w8a8.ops.hip_backend",
            "vllm_rdna_w8a8.runtime.launcher", "vllm_rdna_w8a8.runtime.device"} <= set(report["imported"])
    # Settings and device policy come from vllm_rdna_w8a8.settings, not from scaled_mm (vLLM's side).
    assert not [name for name in report["loaded"] if name.startswith(("vllm.", "vllm_rdna_w8a8.scaled_mm"))]


def _part(module: str) -> str:
    """The part of the package a dotted module name belongs to: its subpackage or top-level
    module ("ops", "settings", ...), or "" for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every vllm_rdna_w8a8 module `path` imports, at top level or inside functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module == "vllm_rdna_w8a8":  # from vllm_rdna_w8a8 import dispatch
                found.update(f"vllm_rdna_w8a8.{alias.name}" for alias in node.names)
            elif node.module:
                found.add(node.module)
    return {name for name in found if name.startswith("vllm_rdna_w8a8.")}


def package_dependencies() -> dict[str, set[str]]:
    """{part: the other parts it imports}, the package itself (the entry point) left out."""
    dependencies: dict[str, set[str]] = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        module = ".".join(("vllm_rdna_w8a8", *path.relative_to(PACKAGE_DIR).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        source = _part(module)
        if not source:
            continue
        targets = {_part(name) for name in _imported_modules(path, module)} - {source, ""}
        dependencies.setdefault(source, set()).update(targets)
    return dependencies


def find_cycle(dependencies: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between parts (["a", "b", "a"]), or None."""
    finished: set[str] = set()

    def visit(part: str, path: list[str]) -> list[str] | None:
        if part in path:
            return path[path.index(part):] + [part]
        if part in finished:
            return None
        for target in sorted(dependencies.get(part, ())):
            if (cycle := visit(target, path + [part])) is not None:
                return cycle
        finished.add(part)
        return None

    for part in sorted(dependencies):
        if (cycle := visit(part, [])) is not None:
            return cycle
    return None


def test_find_cycle_sees_one() -> None:
    assert find_cycle({"ops": {"runtime"}, "runtime": {"settings"}}) is None
    assert find_cycle({"ops": {"runtime"}, "runtime": {"settings", "ops"}}) == ["ops", "runtime", "ops"]


def test_no_import_cycle_between_the_packages_parts() -> None:
    dependencies = package_dependencies()
    assert {"ops", "runtime", "dispatch", "scaled_mm", "settings", "tune"} <= set(dependencies)
    assert dependencies["settings"] <= {"build"}  # settings depend on nothing that could depend on them
    assert find_cycle(dependencies) is None, f"import cycle: {' -> '.join(find_cycle(dependencies))}"
