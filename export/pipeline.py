"""`lpgb-export` orchestration: the four parts -> ONNX (+ FP16 ONNX, + INT8 branch ONNX, + TensorRT), sidecar,
parity gates."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from lpgb.runtime.atomic import NewFolder, move_in
from lpgb.runtime.frame_rate import recorded_fps
from lpgb.runtime.cli_common import console
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.datasets import detect_layout
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.parts import INT8_PARTS, ONNX_SUFFIXES, PARTS, part_spec
from lpgb.runtime.scoring import TERM_STATES, Calibration
from lpgb.runtime.sidecar import SIDECAR_NAME
from lpgb.export.check import FP32_ATOL, FP32_RTOL
from lpgb.trainer.torch_backend import PART_IO, load_parts

STAGING_PREFIX = ".lpgb-export-staging-"
ORT_TRT_CACHE = "ort_trt_cache"  # lpgb.runtime.backends.ort_backend caches TensorRT engines here
# the data folders of the named dataset layouts (lpgb.runtime.datasets): a folder holding one is a dataset root
DATASET_MARKERS = ("training/videos", "training/frames", "testing/videos", "testing/frames", "training_videos",
                   "testing_videos", "Train", "Test")


@dataclass(frozen=True)
class ExportRequest:
    run: Path
    out: Optional[Path] = None
    fp16: bool = False
    int8: bool = False  # static INT8 (QDQ) branch1/branch2, calibrated on training tubes (lpgb.export.int8)
    trt: bool = False
    check: bool = False
    opset: int = 17
    workspace_gb: float = 2.0
    overwrite: bool = False


def example_inputs(part: str, cfg: LpgbConfig, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Random example inputs with the part's real shapes (batch = crops or tubes)."""
    g = torch.Generator().manual_seed(0)
    s, t = cfg.spatial, cfg.smm.window + 1
    if part == "rpn":
        return (torch.rand(1, 3, *cfg.proposals.rpn_input_size, generator=g),)
    if part.startswith("branch"):
        return (torch.randn(batch, 3, s.image_size, s.image_size, generator=g),)
    shape = (batch, t, s.num_queries, s.embed_dim)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def dynamic_axes(part: str) -> dict[str, dict[int, str]]:
    return part_spec(part).dynamic_axes()


def crop_batch_profile(cfg: LpgbConfig) -> tuple[int, int, int]:
    """(min, opt, max) crops per branch call: tubes per frame x (L+1) frames."""
    t = cfg.smm.window + 1
    return 1, 4 * t, cfg.proposals.top_k * t


def export_run(request: ExportRequest) -> Path:
    """Export RUN into --out (default RUN/export). The files are written in a hidden staging folder inside
    --out and moved in only once all exist, so a failed export leaves an old one as it was; --overwrite
    replaces only lpgb-export's own files (`export_names`), never other files, and a folder made here is
    removed again if the export fails."""
    run_dir = Path(request.run)
    if not (run_dir / "config.json").is_file():
        raise LpgbError(f"{run_dir} is not an lpgb run folder (no config.json)")
    if not (run_dir / "calibration.json").is_file():
        raise LpgbError(f"{run_dir} is not fully trained (no calibration.json): finish lpgb-train first")
    if request.opset < 17:
        raise LpgbError("opset must be >= 17 (LayerNormalization)")
    cfg = LpgbConfig.load(run_dir / "config.json")
    out = Path(request.out) if request.out else run_dir / "export"
    check_export_target(out, run_dir)
    if out.exists() and not out.is_dir():
        raise LpgbError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not request.overwrite:
        raise LpgbError(f"export folder {out} exists; pass --overwrite to replace its export files")
    claim = NewFolder.before(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f"{STAGING_PREFIX}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _write_export(run_dir, cfg, staging, request)
        _swap_export(staging, out)
    except BaseException:
        claim.undo()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if request.check:
        from lpgb.export.check import run_checks

        ok = run_checks(run_dir, out, fp16=request.fp16, int8=request.int8)
        if not ok:
            raise LpgbError(f"parity check failed: {ok.reason} (see the table above)")
    return out


def _is_run_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "weights").is_dir()


def _is_dataset(folder: Path, any_layout: bool) -> bool:
    """A dataset root: any layout `detect_layout` accepts (`any_layout`), else one holding a named layout's
    data folders (training/videos, testing/frames, Train, ...): a folder of videos above --out is no dataset."""
    if not any_layout:
        return any((folder / name).is_dir() for name in DATASET_MARKERS)
    try:
        detect_layout(folder)
    except LpgbError:
        return False
    return True


def check_export_target(out: Path, run_dir: Path) -> None:
    """LpgbError when --out is, or is inside, a run folder or a dataset folder, unless it is the run's
    own export folder (RUN/export): an export never writes among a run's or a dataset's files."""
    target = out.absolute().resolve()
    if target == (run_dir / "export").absolute().resolve():
        return
    for folder in (target, *target.parents):
        where = "is" if folder == target else "is inside"
        if _is_run_folder(folder):
            raise LpgbError(f"--out {out} {where} the run folder {folder}; "
                            "export into RUN/export or a folder of its own")
        if folder.is_dir() and _is_dataset(folder, any_layout=folder == target):
            raise LpgbError(f"--out {out} {where} the dataset folder {folder}; export into a folder of its own")


def export_names() -> list[str]:
    """Every name lpgb-export writes in an export folder (and so may replace), plus the ONNX Runtime
    TensorRT cache, which is built from the exported files and is stale once they change."""
    names = [f"{part}{suffix}" for part in PARTS for suffix in (*ONNX_SUFFIXES.values(), ".engine")]
    return [*names, TERM_STATES, "timing.cache", SIDECAR_NAME, ORT_TRT_CACHE]


def _swap_export(staging: Path, out: Path) -> None:
    """Move the new export files from `staging` into `out` (the sidecar last), then remove the old export
    files the new export did not write; other files in `out` stay. Says what was replaced."""
    new = sorted(p.name for p in staging.iterdir())
    ours = [n for n in export_names() if (out / n).exists() or (out / n).is_symlink()]
    move_in(staging, out, [n for n in new if n != SIDECAR_NAME] + [n for n in new if n == SIDECAR_NAME])
    replaced = [n for n in ours if n in new]
    stale = [n for n in ours if n not in new]
    for name in stale:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if replaced or stale:
        console.print(f"replaced in {out}: {', '.join(replaced) or 'nothing'}"
                      + (f"; removed old {', '.join(stale)}" if stale else ""), highlight=False, soft_wrap=True)


def _write_export(run_dir: Path, cfg: LpgbConfig, out: Path, request: ExportRequest) -> None:
    """The ONNX files (+ FP16, + INT8, + engines), terms.npz and the sidecar, written into `out`."""
    from lpgb.export.fp16 import to_fp16
    from lpgb.export.onnx_export import export_onnx, verify_onnx
    from lpgb.runtime.sidecar import build_sidecar, write_sidecar

    parts = load_parts(run_dir, cfg)
    files: dict[str, dict[str, str]] = {}
    builds: dict[str, str] = {}
    calibration_set = None
    for name, module in parts.items():
        ins, outs = PART_IO[name]
        example = example_inputs(name, cfg)
        if name == "smm":
            module = module.for_export()  # the SMM as one folded constant operator (no kron in the graph)
        path = export_onnx(module, example, out / f"{name}.onnx", list(ins), list(outs), dynamic_axes(name),
                           request.opset)
        # RPN: tied objectness scores may be ordered differently by ORT's TopK; compare as sets.
        parity = verify_onnx(module, path, example, rtol=FP32_RTOL, order_insensitive=(name == "rpn"), atol=FP32_ATOL)
        console.print(f"{name}.onnx: max abs {parity.max_abs:.2e}, max rel {parity.max_rel:.2e}")
        files[name] = {"fp32": path.name}
        # The RPN stays FP32: near-tied scores make FP16 pick different top-K boxes (measured 3.6% rel).
        if request.fp16 and name != "rpn":
            fp16_path = to_fp16(path, out / f"{name}_fp16.onnx", keep_fp32_nodes_matching=_fp32_nodes(name))
            files[name]["fp16"] = fp16_path.name
        if request.int8 and name in INT8_PARTS:
            from lpgb.export.int8 import calibration_crops, quantisation_note, quantise_int8

            if calibration_set is None:
                calibration_set = calibration_crops(run_dir, cfg)
                console.print(f"INT8 calibration: {calibration_set[1]}", highlight=False)
            int8_path = quantise_int8(path, out / f"{name}_int8.onnx", calibration_set[0])
            files[name]["int8"] = int8_path.name
            builds[f"{name}_int8"] = quantisation_note(len(calibration_set[0]))
    calibration = json.loads((run_dir / "calibration.json").read_text())
    Calibration.from_dict(calibration, source=str(run_dir / "calibration.json"))  # refused before it is copied
    extra = []
    if (run_dir / TERM_STATES).is_file():  # fitted score terms (memory banks) serve from the export too
        shutil.copyfile(run_dir / TERM_STATES, out / TERM_STATES)
        extra.append(TERM_STATES)
    engines = _build_engines(out, files, cfg, request) if request.trt else {}
    write_sidecar(out, build_sidecar(out, cfg.to_dict(), calibration, files, engines, request.opset, extra, builds,
                                     training_fps=recorded_fps(run_dir)))


def _fp32_nodes(part: str) -> tuple[str, ...]:
    """Keep the SMM core (the folded Legendre operator) in float32 inside FP16 graphs."""
    return ("smm",) if part == "smm" else ()


def _build_engines(out: Path, files: dict[str, dict[str, str]], cfg: LpgbConfig, request: ExportRequest) -> dict:
    from lpgb.export.trt_build import build_engine

    lo, opt, hi = crop_batch_profile(cfg)
    t, s = cfg.smm.window + 1, cfg.spatial
    engines = {}
    for name, variants in files.items():
        onnx_file = out / variants.get("fp16" if request.fp16 else "fp32", variants["fp32"])
        if name.startswith("branch"):
            shape = lambda b: (b, 3, s.image_size, s.image_size)  # noqa: E731
            profiles = {"crops": (shape(lo), shape(opt), shape(hi))}
        elif name == "smm":
            shape = lambda b: (b, t, s.num_queries, s.embed_dim)  # noqa: E731
            r = (shape(1), shape(opt // t), shape(hi // t))
            profiles = {"f1": r, "f2": r}
        else:
            profiles = {}
        info = build_engine(onnx_file, out / f"{name}.engine", profiles, fp16=request.fp16,
                            workspace_gb=request.workspace_gb, timing_cache=out / "timing.cache")
        engines[name] = info
    return engines

