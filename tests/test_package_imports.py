"""How the package's parts depend on each other: the ops and the runtime import without vLLM."""

from __future__ import annotations

import json
import subprocess
import sys

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
