"""The plugin as vLLM finds it: entry point, one log line, idempotence, import cost."""

from __future__ import annotations

import logging
import re

import pytest

PLUGIN_LINE = "rdna_w8a8: platform cpu, quantization method registered, staying on upstream kernels"


def _plugin_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "rdna_w8a8:" in line]


def test_entry_point_is_discovered_in_a_fresh_process(run_python) -> None:
    result = run_python(
        """
        from importlib.metadata import entry_points
        for ep in entry_points(group="vllm.general_plugins"):
            print(ep.name, ep.value)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "rdna_w8a8 vllm_rdna_w8a8:register" in result.stdout.splitlines()


@pytest.mark.slow
def test_vllm_loads_the_plugin_once_and_it_logs_one_line(run_python) -> None:
    """Nothing has configured vLLM's logging yet, as in the front end of `LLM(...)`
    (EngineArgs loads plugins before LLM configures logging): the line still shows,
    once, in vLLM's format."""
    result = run_python(
        """
        import logging
        from vllm.plugins import load_general_plugins
        load_general_plugins()
        import vllm_rdna_w8a8
        vllm_rdna_w8a8.register()  # a second call (e.g. another plugin loader) changes nothing
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS, get_quantization_config
        print("METHOD", "rdna_w8a8" in QUANTIZATION_METHODS, get_quantization_config("rdna_w8a8").__name__)
        # What LLM(...) does next with default arguments: vLLM's own configuration,
        # which must not add a second handler (each later vLLM line would show twice).
        from vllm.config.logging import LoggingConfig
        from vllm.logger import configure_logging_if_needed, init_logger
        configure_logging_if_needed(LoggingConfig())
        init_logger("vllm.after_configuration").info("vLLM line after configuration")
        print("HANDLERS", len(logging.getLogger("vllm").handlers))
        """
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    lines = _plugin_lines(output)
    assert len(lines) == 1, output
    assert re.search(r"INFO \d\d-\d\d [\d:]+ \[plugin\.py:\d+\] " + re.escape(PLUGIN_LINE), lines[0]), lines[0]
    assert output.count("vLLM line after configuration") == 1, output
    assert "METHOD True LazyRdnaW8A8Config" in result.stdout
    assert "HANDLERS 1" in result.stdout


@pytest.mark.slow
def test_plugin_respects_vllm_configure_logging_off(run_python) -> None:
    """VLLM_CONFIGURE_LOGGING=0: vLLM leaves logging to the application, so do we."""
    result = run_python(
        """
        import logging
        from vllm.plugins import load_general_plugins
        load_general_plugins()
        print("HANDLERS", len(logging.getLogger("vllm").handlers))
        """,
        env={"VLLM_CONFIGURE_LOGGING": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert "HANDLERS 0" in result.stdout
    assert _plugin_lines(result.stdout + result.stderr) == []


@pytest.mark.slow
def test_an_application_logging_setup_is_left_alone(run_python) -> None:
    """A root handler set by the application gets the line; vLLM's is not added."""
    result = run_python(
        """
        import logging
        logging.basicConfig(level=logging.INFO, format="APP %(name)s %(message)s")
        from vllm.plugins import load_general_plugins
        load_general_plugins()
        print("HANDLERS", len(logging.getLogger("vllm").handlers))
        """
    )
    assert result.returncode == 0, result.stderr
    assert "HANDLERS 0" in result.stdout
    assert _plugin_lines(result.stdout + result.stderr) == [f"APP vllm.rdna_w8a8 {PLUGIN_LINE}"]


@pytest.mark.slow
def test_import_and_register_cost_on_this_cpu_machine(run_python) -> None:
    # Baseline: vllm.config, which every vLLM process has imported before it loads plugins.
    result = run_python(
        """
        import time
        import vllm.config
        start = time.perf_counter()
        import vllm_rdna_w8a8
        vllm_rdna_w8a8.register()
        print(f"REGISTER_SECONDS {time.perf_counter() - start:.4f}")
        import sys
        print("HEAVY", sorted(m for m in ("compressed_tensors", "vllm_rdna_w8a8.quantization.rdna_w8a8",
              "vllm_rdna_w8a8.runtime.hip") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    seconds = float(re.search(r"REGISTER_SECONDS ([\d.]+)", result.stdout)[1])
    print(f"import vllm_rdna_w8a8 + register() on this CPU machine: {seconds * 1000:.1f} ms")
    assert seconds < 0.5
    assert "HEAVY []" in result.stdout


def test_register_is_idempotent(fresh_plugin_state) -> None:
    from vllm.model_executor.layers import quantization

    import vllm_rdna_w8a8
    import vllm_rdna_w8a8.plugin as plugin

    vllm_rdna_w8a8.register()
    first_line = plugin._outcome
    methods = list(quantization.QUANTIZATION_METHODS)
    vllm_rdna_w8a8.register()
    assert plugin._outcome == first_line
    assert quantization.QUANTIZATION_METHODS == methods
    assert quantization.QUANTIZATION_METHODS.count("rdna_w8a8") == 1


def test_unsupported_vllm_stays_out_of_the_way(fresh_plugin_state, monkeypatch, plugin_messages) -> None:
    from vllm.model_executor.layers import quantization

    import vllm_rdna_w8a8.plugin as plugin

    quantization._CUSTOMIZED_METHOD_TO_QUANT_CONFIG.pop("rdna_w8a8", None)
    monkeypatch.setattr(plugin, "vllm_version", lambda: "0.31.2")
    line = plugin.register_plugin()
    assert line == "rdna_w8a8: vLLM 0.31.2 unsupported (need 0.32/0.33), staying out of the way"
    assert plugin_messages() == [line]
    assert "rdna_w8a8" not in quantization._CUSTOMIZED_METHOD_TO_QUANT_CONFIG


@pytest.mark.parametrize(
    ("version", "supported"),
    [("0.32.0", True), ("0.33.1.dev12+g1234", True), ("0.31.9", False), ("0.34.0", False), ("dev", False)],
)
def test_supported_vllm_versions(version: str, supported: bool) -> None:
    from vllm_rdna_w8a8.plugin import is_supported_vllm

    assert is_supported_vllm(version) is supported


def test_register_never_raises_into_vllm(fresh_plugin_state, monkeypatch, plugin_messages) -> None:
    import vllm_rdna_w8a8
    import vllm_rdna_w8a8.plugin as plugin

    def broken() -> str:
        raise OSError("disk on fire")

    monkeypatch.setattr(plugin, "_register", broken)
    vllm_rdna_w8a8.register()
    vllm_rdna_w8a8.register()
    messages = plugin_messages()
    assert messages == ["rdna_w8a8: registration failed (OSError: disk on fire), staying out of the way"]


def test_emulated_gfx11_puts_our_class_first_in_the_cpu_list(fresh_plugin_state, monkeypatch) -> None:
    from vllm.model_executor.kernels import linear
    from vllm.platforms import PlatformEnum

    import vllm_rdna_w8a8.plugin as plugin
    from vllm_rdna_w8a8 import settings

    monkeypatch.setenv(settings.EMULATE_ENV, "gfx1151")
    line = plugin.register_plugin()
    assert line.startswith("rdna_w8a8: emulated gfx1151 on CPU, ")
    assert line.endswith("int8+fp8 W8A8 routed to RdnaHipInt8ScaledMMLinearKernel, RdnaHipFp8ScaledMMLinearKernel")
    names = [k.__name__ for k in linear._POSSIBLE_INT8_KERNELS[PlatformEnum.CPU]]
    assert names == ["RdnaHipInt8ScaledMMLinearKernel", "ZentorchInt8ScaledMMLinearKernel", "CPUInt8ScaledMMLinearKernel"]
    assert linear._POSSIBLE_FP8_KERNELS[PlatformEnum.CPU][0].__name__ == "RdnaHipFp8ScaledMMLinearKernel"


@pytest.mark.parametrize(("emulated", "requested", "applied"), [
    (None, False, False), (None, True, True), ("gfx1100", False, True)])
def test_vllm_cpu_workarounds_apply_only_where_asked(fresh_plugin_state, monkeypatch, emulated, requested,
                                                      applied) -> None:
    """Plain vLLM-CPU stays exactly upstream; our tests' processes (the switch) and the
    emulated backend get cpu_stack's workarounds, and the plain line says so."""
    import vllm_rdna_w8a8.plugin as plugin
    from vllm_rdna_w8a8 import cpu_stack
    from vllm_rdna_w8a8 import settings

    calls: list[bool] = []
    monkeypatch.setattr(cpu_stack, "apply_workarounds", lambda: calls.append(True))
    if emulated:
        monkeypatch.setenv(settings.EMULATE_ENV, emulated)
    else:
        monkeypatch.delenv(settings.EMULATE_ENV, raising=False)
    if requested:
        monkeypatch.setenv(cpu_stack.WORKAROUNDS_ENV, "1")
    else:
        monkeypatch.delenv(cpu_stack.WORKAROUNDS_ENV, raising=False)
    line = plugin.register_plugin()
    assert calls == ([True] if applied else [])
    if emulated is None:
        suffix = ", vLLM-CPU defect workarounds on (VLLM_RDNA_W8A8_CPU_WORKAROUNDS)" if applied else ""
        assert line == PLUGIN_LINE + suffix


def test_a_mixed_emulated_box_is_named_whole_and_served_on_its_gfx11_device(fresh_plugin_state,
                                                                           monkeypatch) -> None:
    import vllm_rdna_w8a8.plugin as plugin
    from vllm_rdna_w8a8 import settings

    monkeypatch.setenv(settings.EMULATE_ENV, "gfx1030,gfx1100")
    line = plugin.register_plugin()
    assert line.startswith("rdna_w8a8: emulated gfx1030,gfx1100 on CPU, HIP code objects present, int8+fp8 W8A8 "
                           "routed to "), line


def test_plain_cpu_leaves_vllm_kernel_lists_alone(fresh_plugin_state) -> None:
    from vllm.model_executor.kernels import linear

    import vllm_rdna_w8a8.plugin as plugin

    tables = (linear._POSSIBLE_INT8_KERNELS, linear._POSSIBLE_FP8_KERNELS)
    before = [{k: list(v) for k, v in table.items()} for table in tables]
    plugin.register_plugin()
    assert [{k: list(v) for k, v in table.items()} for table in tables] == before


def test_a_broken_install_is_logged_once_and_never_raised(monkeypatch, plugin_messages) -> None:
    import sys

    import vllm_rdna_w8a8

    monkeypatch.setattr(vllm_rdna_w8a8, "_import_failure_logged", False)
    monkeypatch.setitem(sys.modules, "vllm_rdna_w8a8.plugin", None)  # import now fails
    vllm_rdna_w8a8.register()
    vllm_rdna_w8a8.register()
    (message,) = plugin_messages()
    assert message.startswith("rdna_w8a8: registration failed (ModuleNotFoundError")


@pytest.mark.parametrize(("arch", "expected"), [
    ("gfx1100", "rdna_w8a8: gfx1100, HIP code objects present, int8+fp8 W8A8 routed to "
                "RdnaHipInt8ScaledMMLinearKernel, RdnaHipFp8ScaledMMLinearKernel"),
    ("gfx942", "rdna_w8a8: gfx942 is not gfx11, RdnaHipInt8ScaledMMLinearKernel, RdnaHipFp8ScaledMMLinearKernel "
               "registered but will decline; staying on upstream kernels"),
])
def test_rocm_puts_our_classes_first_and_says_so(fresh_plugin_state, monkeypatch, arch, expected) -> None:
    from types import SimpleNamespace

    import vllm.platforms
    from vllm.model_executor.kernels import linear
    from vllm.platforms import PlatformEnum

    import vllm_rdna_w8a8.plugin as plugin
    import vllm_rdna_w8a8.runtime.launcher as launcher

    rocm = SimpleNamespace(is_rocm=lambda: True, is_cpu=lambda: False, device_name="rocm")
    monkeypatch.setattr(vllm.platforms, "current_platform", rocm)
    monkeypatch.setattr(plugin, "_rocm_arch", lambda: arch)
    monkeypatch.setattr(launcher, "missing_reason", lambda target, names=(): None)
    assert plugin.register_plugin() == expected
    assert linear._POSSIBLE_INT8_KERNELS[PlatformEnum.ROCM][0].__name__ == "RdnaHipInt8ScaledMMLinearKernel"
    assert linear._POSSIBLE_FP8_KERNELS[PlatformEnum.ROCM][0].__name__ == "RdnaHipFp8ScaledMMLinearKernel"


def test_rocm_gfx11_without_a_usable_code_object_says_it_stays_upstream(fresh_plugin_state, monkeypatch) -> None:
    # Issue 11: the line said "no usable code object (...), ... routed to <our classes>".
    from types import SimpleNamespace

    import vllm.platforms

    import vllm_rdna_w8a8.plugin as plugin
    import vllm_rdna_w8a8.runtime.launcher as launcher

    rocm = SimpleNamespace(is_rocm=lambda: True, is_cpu=lambda: False, device_name="rocm")
    monkeypatch.setattr(vllm.platforms, "current_platform", rocm)
    monkeypatch.setattr(plugin, "_rocm_arch", lambda: "gfx1100")
    monkeypatch.setattr(launcher, "missing_reason", lambda target, names=(): "no code object for gfx1100")
    assert plugin.register_plugin() == (
        "rdna_w8a8: gfx1100, no usable code object (no code object for gfx1100), RdnaHipInt8ScaledMMLinearKernel, "
        "RdnaHipFp8ScaledMMLinearKernel registered but will decline; staying on upstream kernels")


@pytest.mark.parametrize(("damaged", "expected"), [
    ("fp8_gemm.hsaco", "rdna_w8a8: gfx1100, int8 W8A8 routed to RdnaHipInt8ScaledMMLinearKernel; fp8 W8A8 staying "
                       "on upstream kernels (code object unusable: {path}: ELF type 1 is not a linked code object "
                       "(ET_DYN, 3))"),
    ("quant_int8.hsaco", "rdna_w8a8: gfx1100, fp8 W8A8 routed to RdnaHipFp8ScaledMMLinearKernel; int8 W8A8 staying "
                         "on upstream kernels (code object unusable: {path}: ELF type 1 is not a linked code object "
                         "(ET_DYN, 3))"),
])
def test_a_damaged_object_disables_only_the_precision_it_serves(fresh_plugin_state, monkeypatch, tmp_path, damaged,
                                                                 expected) -> None:
    # One damaged code object used to turn the whole target to upstream kernels.
    from types import SimpleNamespace

    import vllm.platforms

    import vllm_rdna_w8a8.plugin as plugin
    import vllm_rdna_w8a8.runtime.launcher as launcher
    from vllm_rdna_w8a8.testing.damaged_code_object import copy_with_damage, with_header_field

    objects = tmp_path / "objects"
    path = copy_with_damage(launcher.OBJECTS_DIR / "gfx1100", objects, damaged,
                            lambda image: with_header_field(image, "e_type", 1))
    rocm = SimpleNamespace(is_rocm=lambda: True, is_cpu=lambda: False, device_name="rocm")
    monkeypatch.setattr(vllm.platforms, "current_platform", rocm)
    monkeypatch.setattr(plugin, "_rocm_arch", lambda: "gfx1100")
    monkeypatch.setattr(launcher, "_default", launcher.Launcher(objects))
    assert plugin.register_plugin() == expected.format(path=path)
