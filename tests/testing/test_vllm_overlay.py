"""The vLLM-release overlay builder, on small stand-in wheels and builds (the real check
runs the tests themselves: `python -m vllm_rdna_w8a8.testing.vllm_overlay`, in .ci/run)."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from vllm_rdna_w8a8.testing import vllm_overlay

RELEASE_INIT = '__version__ = "0.33.0"\n'
PLATFORMS = "class CpuPlatform:\n    pass\n\n\ncurrent_platform = CpuPlatform()\n"


def _wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def _release_files(init: str = RELEASE_INIT) -> dict[str, str]:
    return {
        "vllm/__init__.py": init,
        "vllm/model_executor/__init__.py": "",
        "vllm/model_executor/utils.py": "",
        "vllm/platforms/__init__.py": PLATFORMS,
        "vllm/_C.abi3.so": "the release's CUDA build",
        "vllm/csrc/kernel.cuh": "",
        "vllm-0.33.0.dist-info/METADATA": "Name: vllm\nVersion: 0.33.0\n",
    }


@pytest.fixture
def cpu_build(tmp_path: Path) -> Path:
    """An installed vLLM package with compiled extensions at two depths."""
    package = tmp_path / "site-packages" / "vllm"
    for name in ("_C.abi3.so", "attention/_ops.abi3.so", "__init__.py"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(f"cpu build {name}")
    return package


def test_overlay_holds_the_releases_python_and_the_cpu_builds_extensions(tmp_path, cpu_build) -> None:
    wheel = _wheel(tmp_path / "vllm-0.33.0-cp38-abi3-any.whl", _release_files())
    overlay = vllm_overlay.build_overlay(wheel, cpu_build, tmp_path / "overlay")
    assert (overlay / "vllm/__init__.py").read_text() == RELEASE_INIT
    assert (overlay / "vllm-0.33.0.dist-info/METADATA").is_file()
    assert not (overlay / "vllm/csrc/kernel.cuh").exists()
    for extension in ("_C.abi3.so", "attention/_ops.abi3.so"):
        link = overlay / "vllm" / extension
        assert link.is_symlink() and link.resolve() == (cpu_build / extension).resolve()


@pytest.mark.parametrize(("files", "message"), [
    ({"other/__init__.py": ""}, "holds no vllm package"),
    (None, "is not a readable wheel"),
])
def test_overlay_refuses_a_wheel_without_vllm(tmp_path, cpu_build, files, message) -> None:
    wheel = tmp_path / "vllm-0.33.0-cp38-abi3-any.whl"
    if files is None:
        wheel.write_text("an interrupted download")
    else:
        _wheel(wheel, files)
    with pytest.raises(RuntimeError, match=message):
        vllm_overlay.build_overlay(wheel, cpu_build, tmp_path / "overlay")


def test_overlay_refuses_a_build_without_compiled_extensions(tmp_path) -> None:
    wheel = _wheel(tmp_path / "vllm-0.33.0-cp38-abi3-any.whl", _release_files())
    source_only = tmp_path / "vllm"
    source_only.mkdir()
    with pytest.raises(RuntimeError, match="no compiled extension"):
        vllm_overlay.build_overlay(wheel, source_only, tmp_path / "overlay")


@pytest.mark.parametrize(("init", "problem"), [
    (RELEASE_INIT, None),
    ('__version__ = "0.32.0"\n', "the overlay is not what loads: vLLM 0.32.0"),
    ("raise ImportError('broken release')\n", "does not import"),
])
def test_check_overlay_accepts_only_the_release_loading_from_the_overlay(tmp_path, cpu_build, init,
                                                                         problem) -> None:
    overlay = vllm_overlay.build_overlay(_wheel(tmp_path / "vllm.whl", _release_files(init)), cpu_build,
                                         tmp_path / "overlay")
    if problem is None:
        assert vllm_overlay.check_overlay(overlay, "0.33.0").startswith("vLLM 0.33.0 Python from")
    else:
        with pytest.raises(RuntimeError, match=problem):
            vllm_overlay.check_overlay(overlay, "0.33.0")


def test_cached_wheel_is_used_without_pip(tmp_path, monkeypatch) -> None:
    cached = tmp_path / "vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    cached.write_bytes(b"")

    def no_download(*args, **kwargs):
        raise AssertionError("pip ran although the wheel is cached")

    monkeypatch.setattr(subprocess, "run", no_download)
    assert vllm_overlay.release_wheel("0.33.0", tmp_path) == cached


def test_failed_download_names_the_release_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for vllm==9.9.9")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match=r"could not download vllm==9\.9\.9:\n.*No matching distribution"):
        vllm_overlay.release_wheel("9.9.9", tmp_path)
    assert not list(tmp_path.iterdir())


def test_command_line_reports_errors_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(vllm_overlay, "REPOSITORY", tmp_path)
    assert vllm_overlay.main(["--cache-dir", str(tmp_path)]) == 2
    assert "tests/scaled_mm, tests/quantization, tests/plugin, tests/tools/test_doctor.py not found under" in capsys.readouterr().err
