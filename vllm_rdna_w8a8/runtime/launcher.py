"""Loading our code objects per device and launching kernels with metadata-checked arguments.

`get_kernel(device_index, name)` finds the object file that defines `name` for the device's
exact target in vllm_rdna_w8a8/_objects/<target>/, loads it once per (device, object) and
returns a `Kernel`. `Kernel.launch` packs typed arguments at the offsets the kernel's
metadata gives; the checks run against per-kernel tables built once, because decode calls
this hundreds of times per token.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from vllm_rdna_w8a8.build.compile import DEFAULT_OBJECTS_DIR as OBJECTS_DIR
from vllm_rdna_w8a8.build.compile import OBJECT_SUFFIX

from .code_object import CodeObject, CodeObjectError, KernelMetadata, read_code_object
from .hip import MAX_LAUNCH_DIM, HipRuntime, KernargBuffer, get_runtime
from .kernel_args import expected_kernel_args


# Argument kind -> (struct code, byte size, metadata value_kind it may fill).
_KINDS: dict[str, tuple[str, int, str]] = {
    "pointer": ("Q", 8, "global_buffer"),
    "int32": ("i", 4, "by_value"),
    "uint32": ("I", 4, "by_value"),
    "float32": ("f", 4, "by_value"),
}


class LaunchError(ValueError):
    """Arguments or launch geometry do not match the kernel; names the kernel and argument."""


class KernelNotAvailable(RuntimeError):
    """No loadable code object defines the kernel for this device."""


ExpectedArgs = Callable[[str], Sequence[tuple[str, str]] | None]


def argument_layout_problem(metadata: KernelMetadata, expected: Sequence[tuple[str, str]]) -> str | None:
    """Why the kernel's explicit arguments in `metadata` are not `expected` ((name, kind) in
    order, each at the next offset aligned to its size, as C lays out the parameters), or None.
    Names are compared where the metadata has them."""
    explicit = metadata.explicit_args
    if len(explicit) != len(expected):
        return f"has {len(explicit)} arguments in its metadata, the ops pass {len(expected)}"
    offset = 0
    for index, (arg, (name, kind)) in enumerate(zip(explicit, expected)):
        _code, size, value_kind = _KINDS[kind]
        offset = -(-offset // size) * size
        if arg.name not in (None, name) or (arg.value_kind, arg.size, arg.offset) != (value_kind, size, offset):
            return (f"argument {index} is {arg.name or 'unnamed'}, {arg.value_kind} of {arg.size} bytes at "
                    f"offset {arg.offset} in the metadata; the ops pass {name}, {value_kind} of {size} bytes "
                    f"at offset {offset}")
        offset += size
    return None


class KernelArg(NamedTuple):
    """One typed kernel argument: KernelArg.pointer(p), .int32(v), .uint32(v), .float32(v).
    A pointer is an integer device address (0 / None for null). Kinds, types and ranges are
    checked when the arguments are packed for a kernel, where the message can name both."""

    kind: str
    value: int | float

    @classmethod
    def pointer(cls, address: int | None) -> KernelArg:
        return cls("pointer", 0 if address is None else address)

    @classmethod
    def int32(cls, value: int) -> KernelArg:
        return cls("int32", value)

    @classmethod
    def uint32(cls, value: int) -> KernelArg:
        return cls("uint32", value)

    @classmethod
    def float32(cls, value: float) -> KernelArg:
        return cls("float32", value)


def _dims(name: str, what: str, dims: Sequence[int]) -> tuple[int, int, int]:
    if len(dims) == 3:
        x, y, z = dims
    elif 1 <= len(dims) <= 2:
        x, y, z = (*dims, 1, 1)[:3]
    else:
        raise LaunchError(f"{name}: {what} needs 1 to 3 dimensions, got {tuple(dims)}")
    if not (type(x) is int and type(y) is int and type(z) is int
            and 0 < x <= MAX_LAUNCH_DIM and 0 < y <= MAX_LAUNCH_DIM and 0 < z <= MAX_LAUNCH_DIM):
        raise LaunchError(f"{name}: {what} {tuple(dims)} must be ints in [1, {MAX_LAUNCH_DIM}]")
    return x, y, z


class Kernel:
    """A loaded kernel on one device. `launch` is the hot path: a cached layout lookup, one
    struct.pack_into a per-thread buffer and one foreign call."""

    def __init__(self, metadata: KernelMetadata, function: ctypes.c_void_p, runtime: HipRuntime,
                 device_index: int, target: str, object_path: Path) -> None:
        self.name = metadata.name
        self.metadata = metadata
        self.device_index = device_index
        self.target = target
        self.object_path = object_path
        self._function = function
        self._runtime = runtime
        self._explicit = metadata.explicit_args
        # The runtime reads each explicit argument at its offset; hidden ones it writes itself.
        self.kernarg_size = max((arg.offset + arg.size for arg in self._explicit), default=0)
        self._layouts: dict[tuple[str, ...], struct.Struct] = {}
        self._per_thread = threading.local()  # a KernargBuffer per launching thread

    def _describe_arg(self, index: int) -> str:
        arg = self._explicit[index]
        label = f" ({arg.name})" if arg.name else ""
        return f"argument {index}{label}"

    def _split(self, args: Sequence[KernelArg]) -> tuple[tuple[str, ...], tuple]:
        """(kinds, values) of `args`, each a KernelArg."""
        if len(args) != len(self._explicit):
            raise LaunchError(f"{self.name}: takes {len(self._explicit)} arguments, got {len(args)}")
        try:
            kinds, values = zip(*args) if args else ((), ())  # one C-level pass over the pairs
        except (TypeError, ValueError):
            bad = next(i for i, arg in enumerate(args) if not isinstance(arg, tuple) or len(arg) != 2)
            raise LaunchError(f"{self.name}: {self._describe_arg(bad)} must be a KernelArg, "
                              f"got {type(args[bad]).__name__}") from None
        return kinds, values

    def _layout(self, kinds: tuple[str, ...], count: int) -> struct.Struct:
        """The packing layout for these argument kinds, checked against the metadata once per
        distinct combination."""
        layout = self._layouts.get(kinds)
        if layout is None:
            if len(kinds) != len(self._explicit) or count != len(kinds):
                raise LaunchError(f"{self.name}: takes {len(self._explicit)} arguments, "
                                  f"got {len(kinds)} kinds and {count} values")
            layout = self._build_layout(kinds)
            self._layouts[kinds] = layout
        elif count != len(kinds):
            raise LaunchError(f"{self.name}: {len(kinds)} argument kinds but {count} values")
        return layout

    def _build_layout(self, kinds: tuple[str, ...]) -> struct.Struct:
        fmt = "<"
        position = 0
        for index, (kind, arg) in enumerate(zip(kinds, self._explicit)):
            if kind not in _KINDS:
                raise LaunchError(f"{self.name}: {self._describe_arg(index)} has unknown kind "
                                  f"{kind!r} (one of {', '.join(_KINDS)})")
            code, size, value_kind = _KINDS[kind]
            if arg.value_kind != value_kind or arg.size != size:
                raise LaunchError(
                    f"{self.name}: {self._describe_arg(index)} is {arg.value_kind} of "
                    f"{arg.size} bytes in the code object, got a {kind} ({value_kind}, {size} bytes)"
                )
            if arg.offset < position:
                raise LaunchError(f"{self.name}: overlapping arguments in the metadata at {index}")
            fmt += f"{arg.offset - position}x" if arg.offset > position else ""
            fmt += code
            position = arg.offset + size
        return struct.Struct(fmt)

    def _value_error(self, kinds: Sequence[str], values: Sequence[int | float],
                     indices: Sequence[int] | None = None) -> LaunchError:
        """Which value struct refused, and why (only on the error path); `indices` are the
        arguments' positions when `kinds` and `values` are not the whole list."""
        for index, kind, value in zip(range(len(kinds)) if indices is None else indices, kinds, values):
            try:
                struct.pack("<" + _KINDS[kind][0], value)
            except struct.error as exc:
                return LaunchError(f"{self.name}: {self._describe_arg(index)} ({kind}) "
                                   f"value {value!r} does not fit: {exc}")
        return LaunchError(f"{self.name}: arguments could not be packed")

    def _checked_block(self, block: Sequence[int]) -> tuple[int, int, int]:
        block3 = _dims(self.name, "block", block)
        threads = block3[0] * block3[1] * block3[2]
        if threads > self.metadata.max_flat_workgroup_size:
            raise LaunchError(f"{self.name}: block {tuple(block)} has {threads} threads, more than "
                              f"its max_flat_workgroup_size {self.metadata.max_flat_workgroup_size}")
        return block3

    def pack(self, args: Sequence[KernelArg]) -> bytes:
        """The kernarg bytes for `args`, checked against the kernel's metadata."""
        kinds, values = self._split(args)
        try:
            return self._layout(kinds, len(values)).pack(*values)
        except struct.error:
            raise self._value_error(kinds, values) from None

    def launch(self, grid: Sequence[int], block: Sequence[int], args: Sequence[KernelArg],
               stream: int = 0) -> None:
        """Launch on `stream` (a hipStream_t as int; 0 = null stream). Grid is in blocks."""
        kinds, values = self._split(args)
        self.launch_values(grid, block, kinds, values, stream)

    def launch_values(self, grid: Sequence[int], block: Sequence[int], kinds: tuple[str, ...],
                      values: Sequence[int | float], stream: int = 0) -> None:
        """`launch` with the arguments given as their kinds ("pointer", "int32", "uint32",
        "float32"; null pointers as 0) and values apart: a caller that launches one kernel
        many times keeps one `kinds` tuple and builds no KernelArg per call (the ops' hot
        path). Checked as `launch` checks."""
        layout = self._layout(kinds, len(values))
        grid3 = _dims(self.name, "grid", grid)
        block3 = self._checked_block(block)
        buffer = getattr(self._per_thread, "buffer", None)
        if buffer is None:
            buffer = self._per_thread.buffer = KernargBuffer(self.kernarg_size)
        try:
            layout.pack_into(buffer.data, 0, *values)
        except struct.error:
            raise self._value_error(kinds, values) from None
        self._runtime.launch(self._function, grid3, block3, buffer, stream, self.name, self.device_index)

    def prepare(self, block: Sequence[int], kinds: tuple[str, ...], values: Sequence[int | float],
                variable: Sequence[int]) -> PreparedLaunch:
        """A `PreparedLaunch` of this kernel: `block` and every argument checked as
        `launch_values` checks them, the arguments packed once; each launch rewrites only the
        arguments at the indices `variable` (their values here are placeholders, checked too)."""
        return PreparedLaunch(self, block, kinds, values, variable)

    def __repr__(self) -> str:
        return f"Kernel({self.name!r}, device={self.device_index}, target={self.target})"


class PreparedLaunch:
    """One kernel's launch with its checks done and its kernarg bytes packed in advance (the
    ops' per-layer plans): `launch(grid, stream, *values)` writes the variable arguments
    (pointers, M, ...) in place, each at its metadata offset, and makes the foreign call.
    It owns its kernarg buffer, so one thread at a time may launch it (the ops keep their
    plans per thread)."""

    def __init__(self, kernel: Kernel, block: Sequence[int], kinds: tuple[str, ...],
                 values: Sequence[int | float], variable: Sequence[int]) -> None:
        layout = kernel._layout(kinds, len(values))
        self._block = kernel._checked_block(block)
        if any(not 0 <= index < len(kinds) for index in variable) or len(set(variable)) != len(variable):
            raise LaunchError(f"{kernel.name}: variable argument indices {tuple(variable)} must be distinct "
                              f"and in [0, {len(kinds)})")
        self._buffer = KernargBuffer(kernel.kernarg_size)
        try:
            layout.pack_into(self._buffer.data, 0, *values)
        except struct.error:
            raise kernel._value_error(kinds, values) from None
        data = memoryview(self._buffer.data).cast("B")
        # A one-element view per variable argument: `view[0] = value` writes it in its C type.
        self._slots = tuple(
            data[kernel._explicit[index].offset:][:_KINDS[kinds[index]][1]].cast(_KINDS[kinds[index]][0])
            for index in variable)
        self._variable = tuple(variable)
        self._kinds = tuple(kinds[index] for index in variable)
        self._kernel = kernel

    def launch(self, grid: tuple[int, int, int], stream: int, *values: int | float) -> None:
        """Launch on `grid` (blocks) and `stream` with `values` for the variable arguments."""
        try:
            for slot, value in zip(self._slots, values, strict=True):
                slot[0] = value
        except (ValueError, TypeError):
            raise self._refused(values) from None
        gx, gy, gz = grid
        if not (0 < gx <= MAX_LAUNCH_DIM and 0 < gy <= MAX_LAUNCH_DIM and 0 < gz <= MAX_LAUNCH_DIM):
            raise LaunchError(f"{self._kernel.name}: grid {tuple(grid)} must be ints in [1, {MAX_LAUNCH_DIM}]")
        kernel = self._kernel
        kernel._runtime.launch(kernel._function, grid, self._block, self._buffer, stream, kernel.name,
                               kernel.device_index)

    def _refused(self, values: Sequence[int | float]) -> LaunchError:
        """Which variable value did not fit its C type (only on the error path)."""
        name = self._kernel.name
        if len(values) != len(self._slots):
            return LaunchError(f"{name}: takes {len(self._slots)} variable arguments, got {len(values)}")
        return self._kernel._value_error(self._kinds, values, self._variable)


@dataclass(frozen=True)
class IndexEntry:
    """Where a kernel lives for one target, and its metadata."""

    object_path: Path
    metadata: KernelMetadata


@dataclass(frozen=True)
class UnusableObject:
    """A code object left out of its target's index: why, and the kernels it defines (None when
    it could not be read, so any kernel of its target may be among them)."""

    reason: str
    kernels: frozenset[str] | None


class Launcher:
    """Code-object index per target, modules per (device, object), kernels per (device, name).
    Thread-safe; one default instance serves the module-level functions."""

    def __init__(self, objects_dir: Path = OBJECTS_DIR,
                 runtime: Callable[[], HipRuntime] = get_runtime,
                 target_of: Callable[[int], str | None] | None = None,
                 expected_args: ExpectedArgs = expected_kernel_args) -> None:
        self.objects_dir = objects_dir
        self._runtime = runtime
        self._target_of = target_of
        self._expected_args = expected_args  # the argument list a kernel name must have, or None
        self._lock = threading.RLock()
        self._indexes: dict[str, dict[str, IndexEntry]] = {}
        self._unusable: dict[str, list[UnusableObject]] = {}
        self._modules: dict[tuple[int, Path], int] = {}
        self._kernels: dict[tuple[int, str], Kernel] = {}

    def available_targets(self) -> list[str]:
        """Targets that have at least one code object."""
        if not self.objects_dir.is_dir():
            return []
        return sorted(d.name for d in self.objects_dir.iterdir()
                      if d.is_dir() and any(d.glob(f"*{OBJECT_SUFFIX}")))

    def index(self, target: str) -> dict[str, IndexEntry]:
        """Kernel name -> defining object for `target`, read from the objects' metadata. An
        object that cannot be read, is built for another target, has a kernel whose arguments
        differ from what its callers pass, or defines a kernel another object defines too is
        left out whole (`unusable_objects`): it takes away its own kernels only (the objects
        are one file per kernel source, so a bad fp8 GEMM object leaves the int8 layers served)."""
        with self._lock:
            cached = self._indexes.get(target)
            if cached is not None:
                return cached
            readable: dict[Path, dict[str, KernelMetadata]] = {}
            unusable: dict[Path, UnusableObject] = {}
            for path in sorted((self.objects_dir / target).glob(f"*{OBJECT_SUFFIX}")):
                try:
                    code_object = read_code_object(path)
                except CodeObjectError as exc:
                    unusable[path] = UnusableObject(str(exc), None)
                    continue
                problem = self._object_problem(path, target, code_object)
                if problem:
                    unusable[path] = UnusableObject(problem, frozenset(code_object.kernels))
                else:
                    readable[path] = code_object.kernels
            # A kernel in two objects: which one is the current build cannot be told.
            owners: dict[str, list[Path]] = {}
            for path, kernels in readable.items():
                for name in kernels:
                    owners.setdefault(name, []).append(path)
            for name, paths in owners.items():
                if len(paths) > 1:
                    for path in paths:
                        unusable.setdefault(path, UnusableObject(
                            f"kernel {name} is defined by both {paths[0]} and {paths[1]}", frozenset(readable[path])))
            index = {name: IndexEntry(path, metadata) for path, kernels in readable.items() if path not in unusable
                     for name, metadata in kernels.items()}
            self._indexes[target] = index
            self._unusable[target] = list(unusable.values())
            return index

    def _object_problem(self, path: Path, target: str, code_object: CodeObject) -> str | None:
        """Why the object read from `path` in `target`'s directory cannot serve its kernels, or None."""
        if code_object.target != target:
            return f"{path}: built for {code_object.target}, found in the {target} directory"
        for name, metadata in code_object.kernels.items():
            expected = self._expected_args(name)
            problem = None if expected is None else argument_layout_problem(metadata, expected)
            if problem:
                return f"{path}: kernel {name} {problem}"
        return None

    def unusable_objects(self, target: str) -> list[UnusableObject]:
        """The code objects of `target` left out of its index, and why."""
        with self._lock:
            self.index(target)
            return self._unusable[target]

    def missing_reason(self, target: str, kernel_names: Sequence[str] = ()) -> str | None:
        """None if `target` has code objects defining `kernel_names` (without names: if every
        code object of `target` is usable), else why not: for a kernel class's is_supported
        reason. An unusable object is the reason only where it may define a missing kernel."""
        if target not in self.available_targets():
            built = ", ".join(self.available_targets()) or "none"
            return f"no code object for {target} (built for: {built})"
        index = self.index(target)
        unusable = self.unusable_objects(target)
        missing = [name for name in kernel_names if name not in index]
        if kernel_names and not missing:
            return None
        culprits = dict.fromkeys(entry.reason for entry in unusable
                                 if not kernel_names or entry.kernels is None or entry.kernels & set(missing))
        if culprits:
            return f"code object unusable: {'; '.join(culprits)}"
        if missing:
            return f"code objects for {target} lack kernel(s) {', '.join(missing)}"
        return None

    def _device_target(self, device_index: int) -> str:
        if self._target_of is not None:
            target = self._target_of(device_index)
        else:
            from .device import gfx_target

            target = gfx_target(device_index)
        if target is None:
            raise KernelNotAvailable(f"device {device_index} is not a ROCm device")
        return target

    def get_kernel(self, device_index: int, name: str) -> Kernel:
        """The kernel `name` loaded on device `device_index` (cached after the first call)."""
        kernel = self._kernels.get((device_index, name))
        if kernel is not None:
            return kernel
        with self._lock:
            kernel = self._kernels.get((device_index, name))
            if kernel is not None:
                return kernel
            target = self._device_target(device_index)
            reason = self.missing_reason(target, [name])
            if reason is not None:
                raise KernelNotAvailable(f"{name} on device {device_index}: {reason}")
            entry = self.index(target)[name]
            runtime = self._runtime()
            # One device window for the load and the lookup: a module may be used only with
            # its loading device current (ROCm <= 6.3 aborts otherwise: clr hip_code_object
            # DynCO::getDynFunc -> CheckDeviceIdMatch).
            with runtime.on_device(device_index):
                module = self._modules.get((device_index, entry.object_path))
                if module is None:
                    module = runtime.load_module(entry.object_path.read_bytes())
                    self._modules[(device_index, entry.object_path)] = module
                function = runtime.get_function(module, name)
            kernel = Kernel(entry.metadata, function, runtime, device_index, target,
                            entry.object_path)
            self._kernels[(device_index, name)] = kernel
            return kernel

    def loaded_kernels(self) -> list[str]:
        """Names of the kernels loaded so far on any device, sorted, each once."""
        with self._lock:
            return sorted({name for _device, name in self._kernels})


_default = Launcher()


def get_kernel(device_index: int, name: str) -> Kernel:
    return _default.get_kernel(device_index, name)


def available_targets() -> list[str]:
    return _default.available_targets()


def missing_reason(target: str, kernel_names: Sequence[str] = ()) -> str | None:
    return _default.missing_reason(target, kernel_names)


def loaded_kernels() -> list[str]:
    """Names of the kernels this process has loaded through the default launcher."""
    return _default.loaded_kernels()


def kernel_names(target: str) -> list[str]:
    """Every kernel the usable code objects for `target` define, sorted (selftest tests each;
    `missing_reason(target)` names the objects left out)."""
    return sorted(_default.index(target))
