"""The model bundle: the one resolver from a run or export folder to everything needed to serve it.

`ModelBundle.open(path, backend)` accepts a run folder (RUN; exported backends use RUN/export) or an
export folder, and before anything loads it checks what can be checked: the sidecar (`model.json`:
lpgb version, format, config, sha256 of every part and of `terms.npz`), the parts' tensor shapes
against the config, and for TensorRT engines the installed TensorRT version and this GPU's compute
capability. Everything that serves (`lpgb-run`, `lpgb-bench`, `lpgb-export --check`, the diagnostics)
goes through it. Torch-free.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.scoring import Calibration

__all__ = ["ModelBundle", "local_gpu_compute_capability", "installed_tensorrt_version", "check_part_shapes"]


def installed_tensorrt_version() -> Optional[str]:
    """TensorRT's package version from its metadata (nothing is imported), None when not installed."""
    for name in ("tensorrt", "tensorrt-cu12", "tensorrt_cu12", "tensorrt-cu13"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def local_gpu_compute_capability() -> Optional[tuple[int, int]]:
    """Compute capability of GPU 0 from `nvidia-smi` (no CUDA library is loaded), None without a GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout.split()
        major, minor = out[0].split(".")
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


def check_part_shapes(cfg: LpgbConfig, parts: dict) -> None:
    """Refuse an export whose graphs do not take the shapes its config describes (an edited model.json)."""
    s, t = cfg.spatial, cfg.smm.window + 1
    want = {"crops": [None, 3, s.image_size, s.image_size],
            "f1": [None, t, s.num_queries, s.embed_dim], "f2": [None, t, s.num_queries, s.embed_dim],
            "image": [1, 3, *cfg.proposals.rpn_input_size]}
    for name, part in parts.items():
        for spec in part.inputs:
            expected = want.get(spec.name)
            if expected is None:
                continue
            got = [d if isinstance(d, int) else None for d in spec.shape]
            if len(got) != len(expected) or any(e is not None and g is not None and e != g
                                                for e, g in zip(expected, got)):
                raise LpgbError(f"{part.file} takes {spec.name} of shape {spec.shape} but the config in model.json "
                                f"describes {['N' if e is None else e for e in expected]}: the config was edited "
                                "or belongs to another model; re-export the run")


@dataclass(frozen=True)
class ModelBundle:
    """cfg, calibration; `folder`: what the backend loads (export folder, or the run folder for backends
    that read weights), also home of the fitted score terms (`terms.npz`); `has_rpn`; `sidecar` (None
    for a run folder)."""

    cfg: LpgbConfig
    calibration: Calibration
    folder: Path
    has_rpn: bool
    sidecar: object = None

    @classmethod
    def open(cls, path: Path, backend: str = "ort") -> "ModelBundle":
        from lpgb.runtime.backends.base import backend_entry

        entry = backend_entry(backend)
        path = Path(path)
        if not path.exists():
            raise LpgbError(f"model folder {path} does not exist (train one with lpgb-train, export with lpgb-export)")
        if entry.reads == "run":
            return cls._open_run(path)
        from lpgb.runtime.formats import FORMATS

        return cls._open_export(path, engines=any(FORMATS[f].kind == "engine" for f in entry.formats))

    @staticmethod
    def served_folder(path: Path, backend: str) -> Path:
        """The folder `backend` loads for a run or export folder `path` (nothing is checked)."""
        from lpgb.runtime.backends.base import backend_entry

        path = Path(path)
        if backend_entry(backend).reads == "run":
            return path.parent if (path / "model.json").is_file() and not (path / "weights").is_dir() else path
        return path if (path / "model.json").is_file() else path / "export"

    @classmethod
    def _open_run(cls, path: Path) -> "ModelBundle":
        run_dir = cls.served_folder(path, "torch")
        if not (run_dir / "weights").is_dir() or not (run_dir / "calibration.json").is_file():
            raise LpgbError(f"{run_dir} is not a finished lpgb run (needs weights/ and calibration.json)")
        from lpgb.runtime.run_manifest import verify_run_files

        verify_run_files(run_dir)  # every served file as lpgb-train wrote it, none unlisted
        bundle = cls.network_free(run_dir)
        return cls(bundle.cfg, bundle.calibration, run_dir, (run_dir / "weights" / "rpn.pt").is_file())

    @classmethod
    def network_free(cls, folder: Path) -> "ModelBundle":
        """A folder with only config.json, calibration.json and terms.npz: terms that need no network
        (served by a Detector without a backend; `python -m lpgb.benchmarks.terms` writes these)."""
        folder = Path(folder)
        cfg = LpgbConfig.load(folder / "config.json")
        path = folder / "calibration.json"
        if not path.is_file():
            raise LpgbError(f"{folder} has no calibration.json")
        try:
            cal = Calibration.from_dict(json.loads(path.read_text()), source=str(path))
        except json.JSONDecodeError as exc:
            raise LpgbError(f"{path} is not valid JSON ({exc.msg})") from None
        return cls(cfg, cal, folder, has_rpn=False)

    @classmethod
    def _open_export(cls, path: Path, engines: bool) -> "ModelBundle":
        from lpgb.runtime.sidecar import check_engines, load_sidecar

        export_dir = cls.served_folder(path, "ort")
        if not (export_dir / "model.json").is_file():
            raise LpgbError(f"{path} has no exported model (model.json): run lpgb-export {path}")
        sidecar = load_sidecar(export_dir)  # versions, config, every listed file (inside, sha256), none unlisted
        if engines:
            if not any(p.is_engine for p in sidecar.parts.values()):
                raise LpgbError(f"{export_dir} has no TensorRT engines: export them with lpgb-export RUN --trt")
            trt = installed_tensorrt_version()
            if trt is None:
                raise LpgbError(f"{export_dir} holds TensorRT engines but TensorRT is not installed "
                                "(pip install 'lpgb[trt]')")
            cc = local_gpu_compute_capability()
            if cc is None:
                raise LpgbError("TensorRT engines need an NVIDIA GPU, and nvidia-smi finds none")
            check_engines(sidecar, export_dir / "model.json", cc, trt)
        cfg = LpgbConfig.from_dict(sidecar.config)
        check_part_shapes(cfg, sidecar.parts)
        calibration = Calibration.from_dict(sidecar.calibration, source=f"{export_dir / 'model.json'} calibration")
        return cls(cfg, calibration, export_dir, "rpn" in sidecar.parts, sidecar)
