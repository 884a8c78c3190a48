"""`model.json`: the one sidecar beside exported models, written at export and checked before loading.

It records what is needed to serve the models and to refuse a mismatch with a one-line reason:
the LpgbConfig, preprocessing, each part's file / tensor names, shapes and dtypes / precision /
opset / sha256, library versions, the GPU compute capability engines were built for, and the
training-score statistics used for thresholds. Torch-free (numpy/json/hashlib only).

The sidecar is the contract of the folder: it lists every file serving reads, each under its role
(`parts`: `<part>`, `<part>_fp16`, `<part>_int8`, `<part>_engine`; `files`: `terms.npz`, the fitted
score terms), and backends open exactly those paths (`served_file`). A listed path must stay inside the
folder (no `..`, no absolute path, no link leaving it) and match its sha256; a served file that lies in
the folder but is not listed, or a listed one that is missing, is refused (`BundleError`, one line).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from lpgb.runtime.atomic import write_text_atomic
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.formats import FORMATS, PRECISIONS, served_format
from lpgb.runtime.scoring import TERM_STATES

SIDECAR_NAME = "model.json"
SIDECAR_FORMAT = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, for inputs scaled to 0..1
IMAGENET_STD = (0.229, 0.224, 0.225)
ENGINE_SUFFIXES = (".engine", ".plan")
# the served files outside `parts`: {name: role}
FILE_ROLES: dict[str, str] = {TERM_STATES: "fitted score-term states"}


class BundleError(LpgbError):
    """A model folder that does not match its model.json (a changed, missing, unlisted or escaping file, a
    malformed sidecar): the folder is broken, not merely unsupported here, so every command refuses it."""


def _listed_formats() -> dict[str, object]:
    """{role: its `lpgb.runtime.formats` row} for every key `parts` may hold: `<part>` (FP32 ONNX),
    `<part>_fp16`, `<part>_int8`, `<part>_engine` (TensorRT plan), for the parts that have that format."""
    return {f.role_of(part): f for f in FORMATS.values() if f.role is not None for part in f.parts}


def part_roles() -> tuple[str, ...]:
    """Every key `parts` may hold (the format table's roles of the parts that have each format)."""
    return tuple(_listed_formats())


def served_names() -> dict[str, str]:
    """{file name lpgb-export writes for serving: its role}: the files that must be listed when present."""
    names = {f.file_of(part): f.role_of(part) for f in FORMATS.values() if f.role is not None for part in f.parts}
    names.update({name: name for name in FILE_ROLES})
    return names


def resolve_in_folder(folder: Path, name: str, role: str, listing: str = SIDECAR_NAME) -> Path:
    """`folder/name` for a file listed in `listing` (model.json) under `role`; BundleError when the name is
    absolute, climbs out (`..`) or resolves (through a link) outside the folder."""
    folder = Path(folder)
    pure = Path(str(name))
    if not str(name) or pure.is_absolute() or pure.drive or ".." in pure.parts or str(name).startswith("~"):
        raise BundleError(f"{folder / listing} lists {name!r} for {role}: files must be named relative to "
                          "the model folder, inside it")
    path = folder / pure
    root = folder.resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise BundleError(f"{path} ({role}) is a link leading outside {folder}: copy the file in, or re-export")
    return path


def lpgb_version() -> str:
    try:
        return importlib.metadata.version("lpgb")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def library_versions(names: Sequence[str] = ("torch", "onnx", "onnxruntime", "tensorrt")) -> dict[str, str]:
    """Installed versions of `names` from package metadata (nothing is imported); absent ones skipped."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: `shape` uses strings for dynamic axes, e.g. ["batch", 3, 224, 224]."""

    name: str
    shape: list[int | str]
    dtype: str  # numpy dtype name: "float32", "float16", "int64"


@dataclass(frozen=True)
class PartInfo:
    """One model file of the export (an ONNX graph or a TensorRT plan)."""

    file: str  # relative to the export folder
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    precision: str  # "fp32" | "fp16" | "int8"
    opset: int | None  # ONNX opset (of the ONNX the engine was built from, for engines)
    sha256: str
    # engines: "strongly_typed" | "weakly_typed_fp16" | "fp32"; int8 ONNX: how it was quantised
    build: str | None = None

    @property
    def is_engine(self) -> bool:
        return self.file.endswith(ENGINE_SUFFIXES)


@dataclass(frozen=True)
class Preprocessing:
    """How frames become network inputs (see lpgb.runtime.preprocess)."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    colour_order: str = "RGB"  # network input order; frames arrive BGR
    crop_size: int = 224  # S: crops fed to the branches are S x S
    rpn_input_size: tuple[int, int] = (320, 480)  # (H, W); frames are letterboxed, scaled to 0..1

    @classmethod
    def from_config(cls, cfg: LpgbConfig) -> "Preprocessing":
        return cls(crop_size=cfg.spatial.image_size, rpn_input_size=tuple(cfg.proposals.rpn_input_size))


@dataclass(frozen=True)
class Sidecar:
    config: dict[str, Any]  # LpgbConfig.to_dict()
    preprocessing: Preprocessing
    parts: dict[str, PartInfo]  # "rpn", "branch1", "branch2", "smm", "branch1_fp16", "branch1_engine", ...
    calibration: dict[str, Any] = field(default_factory=dict)  # training frame-score statistics
    files: dict[str, str] = field(default_factory=dict)  # other served files (terms.npz) -> sha256
    compute_capability: tuple[int, int] | None = None  # GPU the engines were built for
    # the training videos' median frame rate (informational: scoring never reads it; lpgb-run warns on a source
    # at another rate, lpgb.runtime.frame_rate); None when not recorded
    training_fps: float | None = None
    versions: dict[str, str] = field(default_factory=library_versions)
    lpgb_version: str = field(default_factory=lpgb_version)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    format: int = SIDECAR_FORMAT

    @property
    def lpgb_config(self) -> LpgbConfig:
        return LpgbConfig.from_dict(self.config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Sidecar":
        """Parse; raises KeyError/TypeError/ValueError on a malformed file (load_sidecar words it)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}")
        data = dict(data)
        pre = data["preprocessing"]
        data["preprocessing"] = Preprocessing(
            mean=tuple(pre["mean"]), std=tuple(pre["std"]), colour_order=pre["colour_order"],
            crop_size=int(pre["crop_size"]), rpn_input_size=tuple(pre["rpn_input_size"]))
        data["parts"] = {name: _part_from_dict(p) for name, p in data["parts"].items()}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.get("files", {}).items()):
            raise TypeError("files must map file names to sha256 strings")
        if data.get("compute_capability") is not None:
            data["compute_capability"] = tuple(data["compute_capability"])
        fps = data.get("training_fps")
        if fps is not None and not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and 0 < fps < 1000):
            raise ValueError(f"training_fps must be a frame rate in (0, 1000) or null, got {fps!r}")
        return cls(**data)


def _part_from_dict(p: dict[str, Any]) -> PartInfo:
    p = dict(p)
    if not isinstance(p.get("file"), str) or not isinstance(p.get("sha256"), str):
        raise TypeError(f"a part's file and sha256 must be strings, got {p.get('file')!r}")
    p["inputs"] = [TensorSpec(**t) for t in p["inputs"]]
    p["outputs"] = [TensorSpec(**t) for t in p["outputs"]]
    return PartInfo(**p)


def write_sidecar(folder: Path, sidecar: Sidecar) -> Path:
    """Write `folder/model.json` atomically."""
    path = Path(folder) / SIDECAR_NAME
    write_text_atomic(path, json.dumps(sidecar.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def _major(version: str) -> str:
    return version.split(".")[0]


def _cc(cc: Iterable[int]) -> str:
    return ".".join(str(int(c)) for c in cc)


def load_sidecar(folder: Path, expect_engine_cc: tuple[int, int] | None = None,
                 expect_trt_version: str | None = None, verify_hashes: bool = True) -> Sidecar:
    """Read `folder/model.json` and refuse, with a one-line LpgbError, anything that cannot be served:
    missing/invalid file, another major lpgb version, a bad config, a missing or changed part file,
    engines built for another GPU compute capability (`expect_engine_cc`) or TensorRT version.
    """
    folder = Path(folder)
    path = folder / SIDECAR_NAME
    if not path.is_file():
        raise LpgbError(f"not an lpgb export folder: no {SIDECAR_NAME} in {folder}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} is not an lpgb sidecar (expected a JSON object)")
    written_by, ours = str(data.get("lpgb_version", "?")), lpgb_version()
    if _major(written_by) != _major(ours):
        raise LpgbError(f"{path} was written by lpgb {written_by}; this lpgb {ours} reads exports from "
                        f"lpgb {_major(ours)}.x only: re-export with this version")
    if data.get("format") != SIDECAR_FORMAT:
        raise LpgbError(f"{path} has sidecar format {data.get('format')}; this lpgb reads format {SIDECAR_FORMAT}")
    try:
        sidecar = Sidecar.from_dict(data)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path} is malformed: {type(exc).__name__} {exc}") from None
    sidecar.lpgb_config  # validates the config (one-line LpgbError on unknown keys / bad version)
    formats = _listed_formats()
    for name, part in sidecar.parts.items():
        if part.precision not in PRECISIONS:
            raise LpgbError(f"{path} gives part {name!r} precision {part.precision!r}; known: {', '.join(PRECISIONS)}")
        row = formats.get(name)
        if row is not None and row.precision is not None and row.precision != part.precision:
            raise BundleError(f"{path} gives part {name!r} ({part.file}) precision {part.precision!r}: edited by hand? "
                            "re-export")

    roles = part_roles()
    listed: dict[Path, str] = {}
    for name, part in sidecar.parts.items():
        if name not in roles:
            raise BundleError(f"{path} lists a part {name!r} that lpgb does not serve (roles: {', '.join(roles)}): "
                              "edited by hand? re-export")
        listed[_verified_file(folder, part.file, f"part {name!r}", part.sha256, verify_hashes)] = name
    for name, digest in sidecar.files.items():
        if name not in FILE_ROLES:
            raise BundleError(f"{path} lists a file {name!r} that lpgb does not serve (known: "
                              f"{', '.join(FILE_ROLES)}): edited by hand? re-export")
        listed[_verified_file(folder, name, FILE_ROLES[name], digest, verify_hashes)] = name
    check_unlisted(folder, listed)
    check_engines(sidecar, path, expect_engine_cc, expect_trt_version)
    return sidecar


def _verified_file(folder: Path, name: str, role: str, digest: str, verify_hash: bool) -> Path:
    """The resolved path of a listed file, refused when it escapes the folder, is missing or changed."""
    file = resolve_in_folder(folder, name, role)
    if not file.is_file():
        raise BundleError(f"{name} ({role}) is missing from {folder}: re-export, or restore it")
    if verify_hash and _digest(file) != digest:
        raise BundleError(f"{name} changed since export (sha256 mismatch) for {role}: re-export or restore it")
    return file.resolve()


def check_unlisted(folder: Path, listed: dict[Path, str]) -> None:
    """Refuse a file serving would read (`served_names`: `<part>.onnx`, `<part>_int8.onnx`, `terms.npz`, ...)
    that lies in the folder but is not in model.json: its checksum was never recorded (a deleted entry, or a
    file dropped in by hand)."""
    for name, role in served_names().items():
        file = Path(folder) / name
        if (file.is_file() or file.is_symlink()) and file.resolve() not in listed:
            raise BundleError(f"{name} in {folder} is not listed in model.json (not written by this export, or its "
                              f"entry was removed): re-export with lpgb-export, or remove it")


# sha256 of files already verified in this process, keyed by what changes whenever a file is written or
# replaced (ctime cannot be set back by a user), so a bundle opened again (bundle, then backend) is hashed once
_DIGESTS: dict[tuple, str] = {}


def _digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def served_file(folder: Path, part: str, kind: str = "onnx", precision: str = "fp32",
                sidecar: "Sidecar | None" = None) -> Path | None:
    """The file a backend opens for `part` (kind "onnx" or "engine", precision fp32/fp16/int8), from the
    verified model.json of `folder` (read here when `sidecar` is None); None when the model has no such part.

    A part its format lacks is served from its FP32 file (`lpgb.runtime.formats.served_format`: the RPN in
    FP16, rpn and smm in INT8); any other missing variant is refused, never replaced by FP32."""
    folder = Path(folder)
    sidecar = sidecar if sidecar is not None else load_sidecar(folder)
    row = served_format(kind, precision, part)
    role = row.role_of(part)
    if role not in sidecar.parts and row.kind == "onnx" and row.precision != "fp32" and part in sidecar.parts:
        raise LpgbError(f"{folder} has no {precision.upper()} parts ({row.file_of(part)}): "
                        f"export them with lpgb-export RUN --{row.flag}, or run --precision fp32")
    info = sidecar.parts.get(role)
    return None if info is None else resolve_in_folder(folder, info.file, f"part {role!r}")




def check_engines(sidecar: Sidecar, path: Path, expect_engine_cc: tuple[int, int] | None = None,
                  expect_trt_version: str | None = None) -> None:
    """Refuse engines built for another GPU compute capability or TensorRT version (None: not compared)."""
    engines = [p.file for p in sidecar.parts.values() if p.is_engine]
    if engines and expect_engine_cc is not None:
        if sidecar.compute_capability is None:
            raise LpgbError(f"{path} lists engines ({engines[0]}) but no compute capability; rebuild them")
        if tuple(sidecar.compute_capability) != tuple(expect_engine_cc):
            raise LpgbError(f"{engines[0]} was built for GPU compute capability {_cc(sidecar.compute_capability)} "
                            f"but this GPU is {_cc(expect_engine_cc)}: rebuild with lpgb-export --trt on this machine")
    if engines and expect_trt_version is not None:
        built_with = sidecar.versions.get("tensorrt")
        if built_with != expect_trt_version:
            raise LpgbError(f"{engines[0]} was built with TensorRT {built_with} but TensorRT {expect_trt_version} "
                            "is installed: rebuild with lpgb-export --trt")


# ---------------------------------------------------------------------------------------------
# Export side: describe the files of an export folder (called by lpgb.export.pipeline).

_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool", 11: "float64"}


def onnx_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec], int]:
    """Inputs, outputs (dynamic axes as their names) and the default-domain opset of an ONNX file.

    Imports `onnx` lazily: only the exporter calls this; serving never does.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def spec(value) -> TensorSpec:
        t = value.type.tensor_type
        shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
        return TensorSpec(value.name, shape, _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)))

    initializers = {i.name for i in model.graph.initializer}
    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return inputs, [spec(v) for v in model.graph.output], int(opset)


def build_sidecar(folder: Path, config: dict[str, Any], calibration: dict[str, Any],
                  files: dict[str, dict[str, str]], engines: dict[str, Any] | None = None,
                  opset: int | None = None, extra_files: Sequence[str] = (),
                  builds: dict[str, str] | None = None, training_fps: float | None = None) -> Sidecar:
    """Sidecar for an export folder. `files` = {part: {"fp32": "branch1.onnx", "fp16": "branch1_fp16.onnx",
    "int8": "branch1_int8.onnx"}}; `engines` = {part: lpgb.export.trt_build.EngineInfo}. Parts are named
    `branch1`, `branch1_fp16`, `branch1_int8`, `branch1_engine`. `builds` = {part name: how it was made}
    (e.g. the INT8 quantisation). `extra_files` (e.g. `terms.npz`) are hashed too. Engine tensor specs are
    those of the ONNX they were built from (same names; FP16 and INT8 graphs keep float32 inputs/outputs).
    `opset` is only a fallback when a file lacks one.
    """
    folder = Path(folder)
    parts: dict[str, PartInfo] = {}
    for part, variants in files.items():
        for precision, file in variants.items():
            inputs, outputs, file_opset = onnx_io(folder / file)
            key = part if precision == "fp32" else f"{part}_{precision}"
            parts[key] = PartInfo(
                file=file, inputs=inputs, outputs=outputs, precision=precision, opset=file_opset or opset,
                sha256=sha256_file(folder / file), build=(builds or {}).get(key))
    versions = library_versions()
    cc = None
    for part, info in (engines or {}).items():
        source = parts.get(f"{part}_fp16" if info.precision == "fp16" and f"{part}_fp16" in parts else part)
        engine_file = Path(info.path).name
        parts[f"{part}_engine"] = PartInfo(
            file=engine_file, inputs=source.inputs if source else [], outputs=source.outputs if source else [],
            precision=info.precision, opset=source.opset if source else opset,
            sha256=sha256_file(folder / engine_file), build=info.path_kind)
        versions["tensorrt"] = info.trt_version
        cc = tuple(info.compute_capability) if info.compute_capability is not None else cc
    cfg = LpgbConfig.from_dict(config)
    return Sidecar(config=config, preprocessing=Preprocessing.from_config(cfg), parts=parts,
                   calibration=dict(calibration), files={n: sha256_file(folder / n) for n in extra_files},
                   compute_capability=cc, training_fps=training_fps, versions=versions)
