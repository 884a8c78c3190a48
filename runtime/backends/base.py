"""The backend interface, the backend registry and `load_backend`, which imports each backend module lazily.

A backend runs the four exported parts of a model folder (`lpgb-export` output):
`rpn`, `branch1`, `branch2`, `smm`, in the formats of `lpgb.runtime.formats.FORMATS` (`<part>.onnx`,
`<part>_fp16.onnx`, `<part>_int8.onnx`, `<part>.engine`, or the run's `weights/<part>.pt`); each registry row
names the formats it serves. Export-reading backends open the files their folder's model.json lists for each
role (`part_files`), nothing else.

Rows outside the runtime (the torch backend, which lives with the trainer) register themselves through the
`lpgb.backends` entry point group: each entry point names a `BackendEntry`; `backends()` loads them once, on
first use, so the runtime never names a trainer module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol, runtime_checkable

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.formats import format_row, served_format
from lpgb.runtime.parts import PARTS, part_spec

BackendKind = Literal["ort", "trt", "torch", "openvino"]
Precision = Literal["fp32", "fp16", "int8"]
Device = Literal["cpu", "cuda", "tensorrt"]


@runtime_checkable
class Backend(Protocol):
    """Runs one exported part on named numpy inputs and returns its named numpy outputs."""

    name: str

    @property
    def providers(self) -> list[str]:
        """What really executes the parts (e.g. ORT providers in priority order, or ["TensorRT"])."""
        ...

    def run(self, part: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def check_part(part: str) -> None:
    part_spec(part)


def part_files(model_dir: Path, kind: str, precision: str = "fp32",
               parts: tuple[str, ...] | None = None) -> dict[str, Path]:
    """{part: file} a backend opens in the export folder `model_dir`: read from its verified model.json
    (`lpgb.runtime.sidecar.served_file`: each listed path resolved inside the folder, its sha256 checked,
    no served file unlisted), never from fixed names. `kind` is "onnx" or "engine". Parts the model lacks
    are left out; one named in `parts` is refused."""
    from lpgb.runtime.sidecar import load_sidecar, served_file

    for part in parts or ():
        check_part(part)
    sidecar = load_sidecar(Path(model_dir))
    found: dict[str, Path] = {}
    for part in parts or PARTS:
        path = served_file(model_dir, part, kind, precision, sidecar)
        if path is not None:
            found[part] = path
        elif parts:
            name = served_format(kind, precision, part).file_of(part)
            raise LpgbError(f"model folder {model_dir} has no {name} (not in its model.json)")
    return found


def served_files(folder: Path, format_name: str, precision: str = "fp32") -> list[Path]:
    """Every file a backend serving the format row `format_name` at `precision` loads from `folder` (sorted):
    the run's weights for a `weights` row; else the files model.json lists (`part_files`, FP32 for the parts
    the format lacks) and their ONNX external data (`<file>.data`)."""
    row = format_row(format_name)
    folder = Path(folder)
    if row.kind == "weights":
        return sorted(p for p in (folder / row.file_of(part) for part in PARTS) if p.is_file())
    files = list(part_files(folder, row.kind, row.precision or precision).values())
    return sorted(files + [d for d in (f.with_name(f.name + ".data") for f in files) if d.is_file()])


@dataclass(frozen=True)
class BackendEntry:
    """One row of the backend registry: what `--backend NAME` means everywhere (run, bench, reports).

    `factory(model_dir, precision, device, **options) -> Backend` imports its library lazily; `reads` is
    "export" (the export folder with model.json) or "run" (the training run's weights/); `formats` names
    the rows of `lpgb.runtime.formats.FORMATS` it serves, its main one first (its bench row is its name, the
    others `<name>-<precision>`)."""

    name: str
    factory: Callable[..., Backend]
    reads: str
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    formats: tuple[str, ...]  # FORMATS rows it serves (what it loads, for bench rows and file listings)
    help: str


def _ort(model_dir: Path, precision: str, device: str, **options: object) -> Backend:
    from lpgb.runtime.backends.ort_backend import OrtBackend

    return OrtBackend(model_dir, precision=precision, device=device, **options)  # type: ignore[arg-type]


def _trt(model_dir: Path, precision: str, device: str, **options: object) -> Backend:
    # the engines fix the precision
    from lpgb.runtime.backends.trt_backend import TrtBackend

    return TrtBackend(model_dir, **options)  # type: ignore[arg-type]


def _openvino_factory(model_dir: Path, precision: str, device: str, **options: object) -> Backend:
    from lpgb.runtime.backends.openvino_backend import OpenVinoBackend

    return OpenVinoBackend(model_dir, precision=precision, device=device, **options)  # type: ignore[arg-type]


_BACKENDS: dict[str, BackendEntry] = {}


def register_backend(entry: BackendEntry) -> BackendEntry:
    """Add (or replace) a registry row; CLI choices, bench specs and reports read the registry."""
    for name in entry.formats:
        format_row(name)  # an unknown format is refused here, not when a bench lists its files
    _BACKENDS[entry.name] = entry
    return entry


for _entry in (
    BackendEntry("ort", _ort, "export", ("cpu", "cuda", "tensorrt"), ("fp32", "fp16", "int8"),
                 ("onnx", "fp16", "int8"), "ONNX Runtime"),
    BackendEntry("trt", _trt, "export", ("cuda",), ("fp32", "fp16"), ("engine",), "TensorRT 10 engines"),
    BackendEntry("openvino", _openvino_factory, "export", ("cpu",), ("fp32", "fp16"), ("onnx", "fp16"),
                 "OpenVINO (Intel CPUs)"),
):
    register_backend(_entry)


ENTRY_POINT_GROUP = "lpgb.backends"
_PLUGINS: dict[str, str] | None = None  # entry point name -> why it failed to load ("" when it loaded)


def _load_plugins() -> dict[str, str]:
    """Register the rows published under `ENTRY_POINT_GROUP` (once). A row that fails to load is kept out of
    the registry and its reason is remembered, so asking for it says why in one line."""
    global _PLUGINS
    if _PLUGINS is None:
        from importlib.metadata import entry_points

        _PLUGINS = {}
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                entry = point.load()
                if not isinstance(entry, BackendEntry):
                    raise TypeError(f"{point.value} is a {type(entry).__name__}, not a BackendEntry")
            except Exception as exc:  # a broken plugin must not take the other backends down
                _PLUGINS[point.name] = f"{type(exc).__name__}: {exc}"
                continue
            _BACKENDS.setdefault(entry.name, entry)  # a built-in or test row of that name wins
            _PLUGINS[point.name] = ""
    return _PLUGINS


def backends() -> dict[str, BackendEntry]:
    """The registry: the built-in rows, then those published as `lpgb.backends` entry points."""
    _load_plugins()
    return _BACKENDS


def backend_entry(kind: str) -> BackendEntry:
    failed = _load_plugins().get(kind)
    if kind not in _BACKENDS:
        if failed:
            raise LpgbError(f"backend {kind!r} did not load ({failed})")
        raise LpgbError(f"unknown backend {kind!r}; choose {', '.join(_BACKENDS)}")
    return _BACKENDS[kind]


def load_backend(kind: str, model_dir: Path, precision: str = "fp32", device: str = "cpu",
                 **options: object) -> Backend:
    """Open the registered backend `kind` on `model_dir` (the export folder, or the run folder for
    backends that read the run). `options` go to the backend's factory (e.g. `intra_op_threads` for ORT)."""
    entry = backend_entry(kind)
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise LpgbError(f"model folder {model_dir} does not exist")
    if precision not in entry.precisions:
        raise LpgbError(f"backend {kind} runs {', '.join(entry.precisions)}, not {precision!r}")
    if device not in entry.devices:
        raise LpgbError(f"backend {kind} runs on {', '.join(entry.devices)} only (got device {device!r})")
    return entry.factory(model_dir, precision, device, **options)


__all__ = ["PARTS", "Backend", "BackendKind", "Precision", "Device", "check_part", "part_files", "load_backend",
           "BackendEntry", "backends", "register_backend", "backend_entry", "ENTRY_POINT_GROUP", "served_files"]
