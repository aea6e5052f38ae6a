"""setup.py's build hook, through a real `pip wheel` of a trimmed copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build import Clang

pytestmark = pytest.mark.slow  # each case runs pip and a setuptools build
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path, kernels_dir: Path) -> Path:
    """The packaging files, the build module and the probe kernels (not the real ones)."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "vllm_rdna_w8a8" / "build", copy / "vllm_rdna_w8a8" / "build",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "vllm_rdna_w8a8" / "__init__.py").write_text('"""Trimmed copy for the setup test."""\n')
    shutil.copytree(kernels_dir, copy / "kernels")
    return copy


def _wheel(project: Path, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
         "-w", str(out), str(project)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env}, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return result, zipfile.ZipFile(wheel).namelist()


def test_wheel_carries_the_code_objects(project: Path, tmp_path: Path, clang: Clang) -> None:
    result, names = _wheel(project, tmp_path, PYTORCH_ROCM_ARCH="gfx1100;gfx1103")
    assert "vllm-rdna-w8a8: 2 gfx11 code objects (2 compiled) for gfx1100, gfx1103" in (
        result.stdout + result.stderr)
    objects = sorted(n for n in names if n.endswith((".hsaco", ".def")))
    assert objects == ["vllm_rdna_w8a8/_objects/gemm_configs.def",
                       "vllm_rdna_w8a8/_objects/gfx1100/probe_saxpy.hsaco",
                       "vllm_rdna_w8a8/_objects/gfx1103/probe_saxpy.hsaco",
                       "vllm_rdna_w8a8/_objects/kernel_abi.def"]


def test_wheel_without_a_compiler_has_no_kernels(project: Path, tmp_path: Path) -> None:
    result, names = _wheel(project, tmp_path, HIP_CLANG="/nonexistent/clang++")
    assert ("vllm-rdna-w8a8: building without gfx11 kernels ($HIP_CLANG='/nonexistent/clang++' "
            "is unusable") in result.stdout + result.stderr
    assert not [n for n in names if n.endswith(".hsaco")]
    # the host reads the kernel ABI and the tile table even without kernels
    assert sorted(n for n in names if n.endswith(".def")) == ["vllm_rdna_w8a8/_objects/gemm_configs.def",
                                                             "vllm_rdna_w8a8/_objects/kernel_abi.def"]
    assert "vllm_rdna_w8a8/build/compile.py" in names
