"""`lpgb-export` orchestration: the four parts -> ONNX (+ FP16 ONNX, + INT8 branch ONNX, + TensorRT), sidecar,
parity gates."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from lpgb.runtime.atomic import NewFolder, move_in
from lpgb.runtime.frame_rate import recorded_fps
from lpgb.runtime.cli_common import console
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.datasets import detect_layout
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.formats import FORMATS, ModelFormat, resolve, selected_formats
from lpgb.runtime.parts import part_spec
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

    @property
    def formats(self) -> tuple[ModelFormat, ...]:
        """The format rows this export writes (`lpgb.runtime.formats`): ONNX, and those whose flag is set."""
        return selected_formats(self)


@dataclass
class ExportContext:
    """What the build functions of one export share (each format row's `build(ctx, part)` writes that
    part's file into `out` and records it here)."""

    run_dir: Path
    cfg: LpgbConfig
    out: Path  # the staging folder the files are written into
    request: ExportRequest
    modules: dict[str, Any]  # {part: torch module} of the run (`load_parts`)
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # {part: {precision: ONNX file}}
    engines: dict[str, Any] = field(default_factory=dict)  # {part: lpgb.export.trt_build.EngineInfo}
    builds: dict[str, str] = field(default_factory=dict)  # {model.json role: how its file was made}
    shared: dict[str, Any] = field(default_factory=dict)  # computed once per export (INT8 calibration crops)

    def add_onnx(self, part: str, row: ModelFormat, path: Path, note: Optional[str] = None) -> None:
        self.files.setdefault(part, {})[row.precision] = Path(path).name
        if note is not None:
            self.builds[row.role_of(part)] = note


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
    from lpgb.runtime.run_manifest import verify_run_files

    verify_run_files(run_dir)  # export what lpgb-train wrote, nothing changed since
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

        ok = run_checks(run_dir, out, request.formats)
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
    names = [row.file_of(part) for row in FORMATS.values() if row.build is not None for part in row.parts]
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
    """Each requested format's files (`request.formats`, in table order: ONNX, FP16, INT8, engines),
    terms.npz and the sidecar, written into `out`."""
    from lpgb.runtime.sidecar import build_sidecar, write_sidecar

    ctx = ExportContext(run_dir, cfg, out, request, load_parts(run_dir, cfg))
    for row in request.formats:
        build = resolve(row.build)
        for part in row.parts:
            if part in ctx.modules:
                build(ctx, part)
    calibration = json.loads((run_dir / "calibration.json").read_text())
    Calibration.from_dict(calibration, source=str(run_dir / "calibration.json"))  # refused before it is copied
    extra = []
    if (run_dir / TERM_STATES).is_file():  # fitted score terms (memory banks) serve from the export too
        shutil.copyfile(run_dir / TERM_STATES, out / TERM_STATES)
        extra.append(TERM_STATES)
    write_sidecar(out, build_sidecar(out, cfg.to_dict(), calibration, ctx.files, ctx.engines, request.opset, extra,
                                     ctx.builds, training_fps=recorded_fps(run_dir)))


def build_onnx(ctx: ExportContext, part: str) -> None:
    """The FP32 ONNX of `part` (the `onnx` row), compared with PyTorch in ONNX Runtime before it is kept."""
    from lpgb.export.onnx_export import export_onnx, verify_onnx

    module = ctx.modules[part]
    ins, outs = PART_IO[part]
    example = example_inputs(part, ctx.cfg)
    if part == "smm":
        module = module.for_export()  # the SMM as one folded constant operator (no kron in the graph)
    path = export_onnx(module, example, ctx.out / FORMATS["onnx"].file_of(part), list(ins), list(outs),
                       dynamic_axes(part), ctx.request.opset)
    # RPN: tied objectness scores may be ordered differently by ORT's TopK; compare as sets.
    parity = verify_onnx(module, path, example, rtol=FP32_RTOL, order_insensitive=(part == "rpn"), atol=FP32_ATOL)
    console.print(f"{part}.onnx: max abs {parity.max_abs:.2e}, max rel {parity.max_rel:.2e}")
    ctx.add_onnx(part, FORMATS["onnx"], path)
