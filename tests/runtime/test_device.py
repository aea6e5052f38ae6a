from __future__ import annotations

from types import SimpleNamespace

import pytest

from vllm_rdna_w8a8.runtime import device
from vllm_rdna_w8a8.settings import EMULATE_ENV, is_gfx11


@pytest.fixture(autouse=True)
def fresh_device_caches():
    """Each test fakes its own devices: start and end without cached facts."""
    device.clear_caches()
    yield
    device.clear_caches()


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch):
    """A ROCm torch with configurable devices, installed in place of the real module."""
    import torch

    state = SimpleNamespace(hip="6.4.0", archs=["gfx1100:sramecc-:xnack-", "gfx90a:xnack+"])
    monkeypatch.setattr(torch.version, "hip", state.hip, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(state.archs))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(state.archs))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(gcnArchName=state.archs[i]))
    return state


def _emulate(monkeypatch: pytest.MonkeyPatch, targets: str | None) -> None:
    """Emulate the comma-separated `targets` (None: emulation off)."""
    if targets:
        monkeypatch.setenv(EMULATE_ENV, targets)
    else:
        monkeypatch.delenv(EMULATE_ENV, raising=False)


def test_rocm_device_targets_without_feature_suffixes(monkeypatch, fake_torch) -> None:
    _emulate(monkeypatch, None)
    assert device.gfx_target(0) == "gfx1100"
    assert device.gfx_target(1) == "gfx90a"
    with pytest.raises(ValueError, match="device_index 2 out of range: 2 ROCm device"):
        device.gfx_target(2)


def test_not_rocm_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    _emulate(monkeypatch, None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    assert device.gfx_target(0) is None


def test_emulated_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    _emulate(monkeypatch, "gfx1151")
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    assert device.gfx_target(0) == "gfx1151"
    with pytest.raises(ValueError, match=r"1 device\(s\) \(VLLM_RDNA_W8A8_EMULATE=gfx1151\), asked for device 1"):
        device.gfx_target(1)


def test_several_emulated_devices_each_with_its_target(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    _emulate(monkeypatch, "gfx1100,gfx1030,gfx1151")
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    assert [device.gfx_target(i) for i in range(3)] == ["gfx1100", "gfx1030", "gfx1151"]
    assert [is_gfx11(device.gfx_target(i)) for i in range(3)] == [True, False, True]
    with pytest.raises(ValueError, match="3 device"):
        device.gfx_target(3)


def test_emulated_device_placement_is_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import torch

    _emulate(monkeypatch, "gfx1100,gfx1151")
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    seen_by_other_thread = []
    assert device.emulated_device_index() == 0
    with device.emulated_device(1):
        assert device.emulated_device_index() == 1
        other = threading.Thread(target=lambda: seen_by_other_thread.append(device.emulated_device_index()))
        other.start()
        other.join()
    assert device.emulated_device_index() == 0
    assert seen_by_other_thread == [0]
    with pytest.raises(ValueError, match="asked for device 2"), device.emulated_device(2):
        pass


def test_emulation_refused_with_a_real_rocm_gpu(monkeypatch, fake_torch) -> None:
    _emulate(monkeypatch, "gfx1100")
    with pytest.raises(RuntimeError, match="VLLM_RDNA_W8A8_EMULATE=gfx1100 is set on a machine "
                                           "with 2 real ROCm GPU"):
        device.gfx_target(0)
    fake_torch.archs = []  # ROCm torch but no visible GPU: emulation is allowed
    device.clear_caches()
    assert device.gfx_target(0) == "gfx1100"


def test_bad_device_index() -> None:
    with pytest.raises(TypeError, match="must be an int"):
        device.gfx_target("0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        device.gfx_target(-1)


def test_device_facts_are_cached(monkeypatch, fake_torch) -> None:
    _emulate(monkeypatch, None)
    assert device.gfx_target(0) == "gfx1100"
    fake_torch.archs[0] = "gfx1151"  # not asked again within the process
    assert device.gfx_target(0) == "gfx1100"
    device.clear_caches()
    assert device.gfx_target(0) == "gfx1151"
