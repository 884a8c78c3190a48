"""`RUN/run.json`: the list of files a training run serves (through the torch backend) with their sha256,
written by `lpgb-train` after every stage and checked before a run folder is served, as `model.json` is for
an export folder: a served file that changed, is missing, is not listed or is listed outside the folder is
refused in one line (`BundleError`). Torch-free."""

from __future__ import annotations

import json
from pathlib import Path

from lpgb.runtime.atomic import write_text_atomic
from lpgb.runtime.sidecar import BundleError, lpgb_version, resolve_in_folder, sha256_file

__all__ = ["RUN_MANIFEST", "served_run_files", "record_run_files", "verify_run_files"]

RUN_MANIFEST = "run.json"
RUN_MANIFEST_FORMAT = 1
_TOP_FILES = ("config.json", "calibration.json", "terms.npz")  # beside weights/*.pt and weights/*.npz


def served_run_files(run_dir: Path) -> list[str]:
    """The names (relative to `run_dir`) of the files serving a run reads that are present now."""
    run_dir = Path(run_dir)
    names = [n for n in _TOP_FILES if (run_dir / n).is_file()]
    weights = run_dir / "weights"
    if weights.is_dir():
        names += sorted(f"weights/{p.name}" for p in weights.iterdir() if p.suffix in (".pt", ".npz") and p.is_file())
    return names


def record_run_files(run_dir: Path) -> None:
    """Write `run_dir/run.json` (atomically) listing every served file present with its sha256."""
    run_dir = Path(run_dir)
    files = {name: sha256_file(run_dir / name) for name in served_run_files(run_dir)}
    write_text_atomic(run_dir / RUN_MANIFEST, json.dumps({"format": RUN_MANIFEST_FORMAT, "lpgb": lpgb_version(),
                                                          "files": files}, indent=2))


def verify_run_files(run_dir: Path) -> None:
    """Refuse (one line) a run folder whose served files do not match its run.json."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_MANIFEST
    if not path.is_file():
        raise BundleError(f"{run_dir} has no {RUN_MANIFEST} (trained by an older lpgb, or changed by hand): record "
                          f"its files with lpgb-train DATA --out {run_dir} --stage calibrate")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if manifest.get("format") != RUN_MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path} is not a run manifest of this lpgb ({exc}); re-record it with lpgb-train DATA "
                          f"--out {run_dir} --stage calibrate") from None
    for name, digest in files.items():
        file = resolve_in_folder(run_dir, name, f"the run's {name}", RUN_MANIFEST)
        if not file.is_file():
            raise BundleError(f"{file} is listed in {path} but missing: the run is incomplete; retrain or restore it")
        if sha256_file(file) != digest:
            raise BundleError(f"{file} changed since lpgb-train wrote it (sha256 differs from {path}); retrain, or "
                              f"recalibrate with lpgb-train DATA --out {run_dir} --stage calibrate")
    unlisted = [n for n in served_run_files(run_dir) if n not in files]
    if unlisted:
        raise BundleError(f"{run_dir / unlisted[0]} is not listed in {path}: lpgb-train did not write it; remove it "
                          "or retrain")
