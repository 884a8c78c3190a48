"""`lpgb-export --check`: the parity ladder for an export folder, printed as one table.

Every comparison runs on REAL inputs of the run, never random tensors:

- branch1 / branch2: the crops of `CHECK_TUBES` tubes of the training tube cache (RUN/tubes, the
  crops the spatial stage trained on) through `lpgb.runtime.preprocess.crops_to_input`;
- smm: the PyTorch branch features of those same tubes;
- rpn: a frame of the first training video (RUN/data.json), letterboxed as the runtime does;
  its top-K rows are compared as a set (ORT's TopK orders near-ties differently).

Gates (each the `gate` function of a row of `lpgb.runtime.formats.FORMATS`; `run_checks` runs those of the
exported rows; TensorRT engines have none):

- FP32 (`fp32_gate`): PyTorch vs ONNX Runtime FP32, max relative error (max |a - b| / max |reference|, worst
  output) <= `FP32_RTOL` (1e-4) per part.
- FP16 (`fp16_gate`, `lpgb-export --fp16`): the whole runtime pipeline `open_detector(out, "ort", "fp32" | "fp16")` +
  `score_frames` on the labelled test videos of the run's dataset (first `FP16_VIDEOS` videos, at
  most `FP16_FRAMES` frames each): Spearman rank correlation of the frame scores >= 0.999 and,
  when the labels hold both classes, |micro AUC fp16 - micro AUC fp32| <= 0.001 (0.1 point).
  Without labelled test videos the rank gate runs on the tube errors of the cached training tubes
  (ORT fp32 vs ORT fp16 branch1 -> branch2 -> smm) and the table says so.
  Per-part ORT FP16 vs FP32 max rel on the real inputs is printed as information (not gated).
- INT8 (`int8_gate`, `lpgb-export --int8`): ORT int8 vs ORT fp32, on the network's own outputs only
  (the default score terms, velocity and shape, read no network, so the model's own frame score
  cannot see the INT8 parts):
  branch1 / branch2 features on the `CHECK_TUBES` check tubes (never in the INT8 calibration set):
  the lowest cosine similarity of a crop's flattened features `(N_q * E_d,)` >= `INT8_MIN_COSINE`
  (gated), relative L2 error ||int8 - fp32|| / ||fp32|| over all crops (information);
  the paper-only frame score (the `smm` term: max raw SMM prediction error over the frame's boxes,
  0 without boxes; `paper_only_detector`) on the same labelled test videos as FP16: Spearman rank
  correlation >= `INT8_MIN_RANK_CORR` (0.99) and |micro AUC int8 - micro AUC fp32| <=
  `INT8_MAX_AUC_DIFF` (0.005); the same two gates on the model's served frame score when its terms read
  the branches. Without labelled test videos the rank gate runs on training tube errors.

Fallbacks (stated in the table's notes): without RUN/tubes the tubes are cut from the first training
video by the serving code (motion proposals); without any readable training data the FP32 rows
use random inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from lpgb.runtime.metrics import rank_correlation

from lpgb.export.onnx_export import compare_outputs, verify_onnx
from lpgb.runtime.backends.ort_backend import cpu_session
from lpgb.runtime.config import LpgbConfig

if TYPE_CHECKING:
    from lpgb.runtime.formats import ModelFormat
    from lpgb.runtime.pipeline import Detector

FP32_RTOL = 1e-4
# An output whose ONNX Runtime and PyTorch values differ by at most this much passes whatever its relative
# error: micro runs (tests/conftest.py) of seeds 1, 2, 5 and 7 of 0-7 export RPNs whose objectness peaks at
# 1e-12 to 3e-4, where the float32 kernels differ by 1e-13 to 9.4e-8, 0.03% to 11.5% of that peak: rtol
# alone failed lpgb-export on half the seeds. 1e-6 is ~10 float32 ulps of a score of 1.
FP32_ATOL = 1e-6
FP16_MIN_RANK_CORR = 0.999
FP16_RTOL = 1e-2  # fp16_rows only (stand-in models in the export tests)
FP16_MAX_AUC_DIFF = 1e-3  # 0.1 AUC point
CHECK_TUBES = 16  # tubes for the per-part FP32 / FP16 comparisons
FALLBACK_TUBES = 256  # tubes for the FP16 tube-error gate when the data has no labelled test videos
FP16_VIDEOS = 2  # labelled test videos for the FP16 (and INT8) pipeline gate
FP16_FRAMES = 300  # at most this many frames per video
INT8_MIN_RANK_CORR = 0.99
INT8_MAX_AUC_DIFF = 5e-3  # 0.5 AUC point
INT8_MIN_COSINE = 0.99  # lowest per-crop cosine of the branch features, int8 vs fp32


@dataclass(frozen=True)
class ParityRow:
    part: str
    check: str  # e.g. "torch vs ort fp32 rel"
    value: float  # the gated quantity (max rel, rank correlation, AUC difference)
    limit: float  # NaN for an information row
    ok: bool
    note: str = ""
    gated: bool = True


def parity_table(rows: Sequence[ParityRow]) -> str:
    """Plain-text table, one line per check; the last line is the verdict PASS / FAIL."""
    head = f"{'part':<9} {'check':<28} {'value':>10} {'limit':>10}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        limit = "-" if not r.gated else f"{r.limit:.3g}"
        result = "info" if not r.gated else ("ok" if r.ok else "FAIL")
        lines.append(f"{r.part:<9} {r.check:<28} {r.value:>10.4g} {limit:>10}  {result}"
                     f"{('  ' + r.note) if r.note else ''}")
    lines.append("PASS" if all(r.ok for r in rows) else "FAIL")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# real inputs


@dataclass
class RealInputs:
    crops: np.ndarray  # (n, L+1, S, S, 3) uint8 BGR
    crops_note: str
    frame: Optional[np.ndarray]  # (H, W, 3) uint8 BGR, a training frame for the RPN
    frame_note: str


def _training_videos(run_dir: Path) -> list:
    from lpgb.runtime.datasets import open_dataset, recorded_dataset

    try:
        data = recorded_dataset(run_dir)
        return open_dataset(data).train_videos() if data is not None else []
    except Exception:  # noqa: BLE001 - any unreadable record means "no data": the notes say so
        return []


def _pick(n_total: int, n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_total - 1, min(n, n_total)).round().astype(int))


def _read_frame(source: Path, index: int) -> Optional[np.ndarray]:
    from lpgb.runtime.video import open_source

    last = None
    with open_source(source) as src:
        for i, frame in enumerate(src):
            last = frame
            if i >= index:
                break
    return last


def load_tube_crops(run_dir: Path, cfg: LpgbConfig, n: int) -> tuple[np.ndarray, str]:
    """Crops `(n, L+1, S, S, 3)` of `n` tubes spread over RUN/tubes, or cut from the first training
    video when the cache is gone, as the branches see them (`encode_tubes` with `cfg.spatial.input_form`);
    raises LpgbError when neither is available."""
    from lpgb.runtime.errors import LpgbError
    from lpgb.runtime.preprocess import encode_tubes
    from lpgb.trainer.tube_cache import TubeCache, build_tube_cache, make_proposal_fn

    folder = Path(run_dir) / "tubes"
    if (folder / "videos.json").is_file():
        cache = TubeCache.load(folder)
        if len(cache):
            pick = _pick(len(cache), n)
            crops = encode_tubes(np.asarray(cache.crops[pick]), cfg.spatial.input_form)
            return np.ascontiguousarray(crops), f"{len(pick)} cached training tubes"
    videos = _training_videos(run_dir)
    if not videos:
        raise LpgbError(f"no tube cache in {folder} and no training data recorded in {run_dir}/data.json")
    motion_cfg = replace(cfg, proposals=replace(cfg.proposals, source="motion"))
    cache = build_tube_cache(videos[:1], motion_cfg, n, make_proposal_fn(motion_cfg, None))
    crops = encode_tubes(np.asarray(cache.crops[:n]), cfg.spatial.input_form)
    return np.ascontiguousarray(crops), f"{min(n, len(cache))} tubes cut from {videos[0].name} (no RUN/tubes)"


def real_inputs(run_dir: Path, cfg: LpgbConfig, n: int = CHECK_TUBES) -> RealInputs:
    from lpgb.runtime.errors import LpgbError

    try:
        crops, crops_note = load_tube_crops(run_dir, cfg, n)
    except LpgbError as exc:
        s, t = cfg.spatial, cfg.smm.window + 1
        rng = np.random.default_rng(0)
        crops = rng.integers(0, 256, (n, t, s.image_size, s.image_size, 3), dtype=np.uint8)
        crops_note = f"RANDOM crops ({exc})"
    frame, frame_note = None, "no training video: RANDOM image"
    videos = _training_videos(run_dir)
    if videos:
        index = max(cfg.proposals.motion_warmup, 30)
        frame = _read_frame(videos[0].source, index)
        frame_note = f"frame {index} of training video {videos[0].name}" if frame is not None else frame_note
    return RealInputs(crops, crops_note, frame, frame_note)


# ------------------------------------------------------------------------------------------------
# comparisons


def _torch_vs_ort(part: str, module, path: Path, inputs: tuple, note: str) -> ParityRow:
    from lpgb.runtime.errors import LpgbError

    check = "torch vs ort fp32 max rel"
    try:
        r = verify_onnx(module, path, inputs, rtol=float("inf"), order_insensitive=part == "rpn")
    except (LpgbError, Exception) as exc:  # noqa: BLE001 - a graph ORT cannot run is a failed gate
        return ParityRow(part, check, float("nan"), FP32_RTOL, False, f"{str(exc).splitlines()[0]}")
    if r.max_rel <= FP32_RTOL:
        return ParityRow(part, check, r.max_rel, FP32_RTOL, True, note)
    try:  # past rtol: passes only where each output beyond it is all but zero (abs <= FP32_ATOL)
        verify_onnx(module, path, inputs, rtol=FP32_RTOL, order_insensitive=part == "rpn", atol=FP32_ATOL)
    except Exception:  # noqa: BLE001 - ParityError: beyond both tolerances
        return ParityRow(part, check, r.max_rel, FP32_RTOL, False, note)
    return ParityRow(part, check, r.max_rel, FP32_RTOL, True, f"{note}; near-zero output within abs {FP32_ATOL:g}")


def _ort_run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = cpu_session(path, threads=2)
    names = [o.name for o in sess.get_outputs()]
    cast = {i.name: (np.float16 if "float16" in i.type else np.float32) for i in sess.get_inputs()}
    out = sess.run(names, {k: np.ascontiguousarray(v, cast[k]) for k, v in feeds.items()})
    return {n: np.asarray(o, np.float32) for n, o in zip(names, out)}


def _fp16_info(part: str, out: Path, feeds: dict[str, np.ndarray]) -> Optional[ParityRow]:
    """Informational: ORT FP16 vs ORT FP32 max rel of `part` on the real feeds."""
    fp16_path = Path(out) / f"{part}_fp16.onnx"
    if not fp16_path.is_file():
        return None
    try:
        ref, got = _ort_run(Path(out) / f"{part}.onnx", feeds), _ort_run(fp16_path, feeds)
        worst, _ = compare_outputs(list(ref.values()), list(got.values()), list(ref))
    except Exception as exc:  # noqa: BLE001 - FP16 file that does not run: the pipeline gate fails too
        return ParityRow(part, "ort fp16 vs fp32 max rel", float("nan"), float("nan"), True,
                         f"could not compare: {str(exc).splitlines()[0]}", gated=False)
    return ParityRow(part, "ort fp16 vs fp32 max rel", worst.max_rel, float("nan"), True, "", gated=False)


def fp16_rows(part: str, fp32_path: Path, fp16_path: Path, feeds: dict[str, np.ndarray],
              gate_rank: bool = True) -> list[ParityRow]:
    """ONNX Runtime FP16 vs FP32 of one file pair on `feeds`: max rel (gated at `FP16_RTOL`), plus the
    rank correlation of `error` for smm (gated only with `gate_rank`: on random features the errors of
    an untrained model are nearly tied and FP16 noise reorders them). Used by the export tests on
    stand-in models; `run_checks` gates FP16 on the whole pipeline instead."""
    ref, got = _ort_run(fp32_path, feeds), _ort_run(fp16_path, feeds)
    names = list(ref)
    a, b = list(ref.values()), list(got.values())
    if part == "rpn":  # TopK order among tied scores is implementation-defined
        a, b = [np.sort(x, axis=0) for x in a], [np.sort(x, axis=0) for x in b]
    worst, _ = compare_outputs(a, b, names)
    rows = [ParityRow(part, "ort fp16 vs fp32 rel", worst.max_rel, FP16_RTOL, bool(worst.max_rel <= FP16_RTOL))]
    if "error" in names:
        rho = rank_correlation(ref["error"], got["error"])
        rows.append(ParityRow(part, "fp16 error rank corr", rho, FP16_MIN_RANK_CORR,
                              bool(rho >= FP16_MIN_RANK_CORR) or not gate_rank,
                              "" if gate_rank else "random inputs: not gated", gated=gate_rank))
    return rows


def fp32_rows(run_dir: Path, out: Path, cfg: LpgbConfig, fp16: bool) -> list[ParityRow]:
    """The per-part FP32 gates (and FP16 information rows) on the run's real inputs."""
    import torch

    from lpgb.runtime.preprocess import crops_to_input
    from lpgb.runtime.proposals import rpn_letterbox
    from lpgb.trainer.torch_backend import load_parts

    parts = load_parts(run_dir, cfg)
    real = real_inputs(run_dir, cfg)
    k, t = real.crops.shape[:2]
    x = torch.from_numpy(crops_to_input(real.crops))
    rows: list[ParityRow] = []
    feats = {}
    for part in ("branch1", "branch2"):
        module = parts[part].eval()
        rows.append(_torch_vs_ort(part, module, Path(out) / f"{part}.onnx", (x,), f"{len(x)} crops of {real.crops_note}"))
        with torch.no_grad():
            f = module(x)
        feats[part] = f.reshape(k, t, *f.shape[1:]).contiguous()
        if fp16:
            info = _fp16_info(part, out, {"crops": x.numpy()})
            rows += [info] if info else []
    smm_in = (feats["branch1"], feats["branch2"])
    rows.append(_torch_vs_ort("smm", parts["smm"].eval(), Path(out) / "smm.onnx", smm_in,
                              f"torch branch features of the {k} tubes"))
    if fp16:
        info = _fp16_info("smm", out, {"f1": smm_in[0].numpy(), "f2": smm_in[1].numpy()})
        rows += [info] if info else []
    if "rpn" in parts:
        if real.frame is not None:
            image, _ = rpn_letterbox(real.frame, cfg.proposals)
        else:
            image = np.random.default_rng(0).random((1, 3, *cfg.proposals.rpn_input_size), np.float32)
        rows.append(_torch_vs_ort("rpn", parts["rpn"].eval(), Path(out) / "rpn.onnx", (torch.from_numpy(image),),
                                  f"{real.frame_note}, rows as a set"))
    return rows


# ------------------------------------------------------------------------------------------------
# FP16 gate on the whole pipeline


def _labelled_test_videos(run_dir: Path, n: int) -> tuple[list, str]:
    from lpgb.runtime.datasets import open_dataset, recorded_dataset

    try:
        data = recorded_dataset(run_dir)
        if data is None:
            return [], "no RUN/data.json"
        videos = [v for v in open_dataset(data).test_videos() if v.labels is not None]
    except Exception as exc:  # noqa: BLE001
        return [], f"dataset unreadable: {str(exc).splitlines()[0]}"
    return (videos[:n], str(data)) if videos else ([], f"{data} has no labelled test videos")


def paper_only_detector(out: Path, precision: str) -> "Detector":
    """An ORT `Detector` of the export `out` that scores with the `smm` term alone, unstandardised: a
    box's score is its raw SMM prediction error, a frame's the max over its boxes, 0 without boxes
    (errors are >= 0). The network's own score, whatever terms the model serves with."""
    from lpgb.runtime.backends.base import load_backend
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.pipeline import Detector
    from lpgb.runtime.scoring import Calibration, TermCalibration

    bundle = ModelBundle.open(out, "ort")
    cfg = replace(bundle.cfg, scoring=replace(bundle.cfg.scoring, terms=("smm",)))
    raw = Calibration({"smm": TermCalibration(0.0, 1.0)}, normal_level=0.0, threshold=float("inf"), n_frames=0)
    return Detector(replace(bundle, cfg=cfg, calibration=raw), load_backend("ort", bundle.folder, precision))


def _score_video(out: Path, precision: str, source: Path, max_frames: int, paper_only: bool = False) -> np.ndarray:
    """Frame scores of `source` by a fresh ORT detector of `out` (the shared whole-video scoring)."""
    from lpgb.runtime.pipeline import open_detector
    from lpgb.runtime.video_scores import score_video

    detector = paper_only_detector(out, precision) if paper_only else open_detector(out, "ort", precision)
    return score_video(detector, source, max_frames=max_frames)


def fp16_pipeline_rows(run_dir: Path, out: Path, videos: int = FP16_VIDEOS,
                       max_frames: int = FP16_FRAMES) -> list[ParityRow]:
    """FP16 gates: frame-score rank correlation and micro AUC difference, ORT fp32 vs fp16 pipelines."""
    return pipeline_rows(run_dir, out, "fp16", videos, max_frames)


def pipeline_rows(run_dir: Path, out: Path, precision: str, videos: int = FP16_VIDEOS, max_frames: int = FP16_FRAMES,
                  paper_only: bool = False) -> list[ParityRow]:
    """Frame-score rank correlation and micro AUC difference, ORT fp32 vs `precision` ("fp16": the model's
    own score, gated at `FP16_*`; "int8": with `paper_only`, the `smm` score, gated at `INT8_*`) on the
    labelled test videos; the training tube errors when there are none."""
    from lpgb.runtime.metrics import micro_auc

    min_rank, max_diff = ((INT8_MIN_RANK_CORR, INT8_MAX_AUC_DIFF) if precision == "int8"
                          else (FP16_MIN_RANK_CORR, FP16_MAX_AUC_DIFF))
    what = f"{precision}{' smm' if paper_only else ''}"
    score = "score" if paper_only else "frame-score"  # keeps the check column aligned
    items, where = _labelled_test_videos(run_dir, videos)
    if not items:
        return fp16_tube_rows(run_dir, out, f"{where}: gate on training tube errors", precision=precision)
    s32, s16, labels = [], [], []
    for item in items:
        a = _score_video(out, "fp32", item.source, max_frames, paper_only)
        b = _score_video(out, precision, item.source, max_frames, paper_only)
        n = min(len(a), len(b), len(item.labels))
        s32.append(a[:n]), s16.append(b[:n]), labels.append(item.labels[:n])
    note = f"{len(items)} test videos, {sum(len(s) for s in s32)} frames"
    rho = rank_correlation(np.concatenate(s32), np.concatenate(s16))
    rows = [ParityRow("pipeline", f"{what} {score} rank corr", rho, min_rank, bool(rho >= min_rank), note)]
    y = np.concatenate(labels)
    if 0 < int(y.sum()) < len(y):
        auc32, auc16 = micro_auc(s32, labels), micro_auc(s16, labels)
        diff = abs(auc16 - auc32)
        rows.append(ParityRow("pipeline", f"{what} |micro AUC diff|", diff, max_diff,
                              bool(diff <= max_diff), f"AUC fp32 {auc32:.4f}, {precision} {auc16:.4f}"))
    else:
        rows.append(ParityRow("pipeline", f"{what} |micro AUC diff|", float("nan"), max_diff, True,
                              "labels hold one class only: AUC undefined, not gated", gated=False))
    return rows


def fp16_tube_rows(run_dir: Path, out: Path, why: str, n: int = FALLBACK_TUBES,
                   precision: str = "fp16") -> list[ParityRow]:
    """FP16 (or INT8) rank gate on the tube errors of cached training tubes (no labelled test videos)."""
    from lpgb.runtime.backends.ort_backend import OrtBackend
    from lpgb.runtime.errors import LpgbError
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.preprocess import crops_to_input

    min_rank = INT8_MIN_RANK_CORR if precision == "int8" else FP16_MIN_RANK_CORR
    info = ModelBundle.open(out, "ort")
    try:
        crops, note = load_tube_crops(run_dir, info.cfg, n)
    except LpgbError as exc:
        return [ParityRow("pipeline", f"{precision} tube-error rank corr", float("nan"), min_rank, False,
                          f"{why}; {exc}")]
    k, t = crops.shape[:2]
    errors = {}
    for variant in ("fp32", precision):
        backend = OrtBackend(info.folder, variant, parts=("branch1", "branch2", "smm"))
        f = {}
        for start in range(0, k, 32):  # chunks keep the branch batch small
            x = crops_to_input(crops[start : start + 32])
            for part in ("branch1", "branch2"):
                feat = backend.run(part, {"crops": x})["features"]
                f.setdefault(part, []).append(feat.reshape(-1, t, *feat.shape[1:]))
        errors[variant] = backend.run("smm", {"f1": np.concatenate(f["branch1"]),
                                              "f2": np.concatenate(f["branch2"])})["error"].reshape(-1)
        backend.close()
    rho = rank_correlation(errors["fp32"], errors[precision])
    return [ParityRow("pipeline", f"{precision} tube-error rank corr", rho, min_rank,
                      bool(rho >= min_rank), f"{why} ({note})")]


def int8_feature_rows(run_dir: Path, out: Path, n: int = CHECK_TUBES) -> list[ParityRow]:
    """Branch features, ORT int8 vs ORT fp32, on the crops of the `n` check tubes: lowest per-crop cosine
    (gated at `INT8_MIN_COSINE`) and relative L2 error over all crops (information)."""
    from lpgb.runtime.backends.ort_backend import OrtBackend
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.formats import INT8_PARTS
    from lpgb.runtime.preprocess import crops_to_input

    info = ModelBundle.open(out, "ort")
    crops, note = load_tube_crops(run_dir, info.cfg, n)
    x = crops_to_input(crops)
    feats = {}
    for precision in ("fp32", "int8"):
        backend = OrtBackend(info.folder, precision, parts=INT8_PARTS)
        feats[precision] = {p: backend.run(p, {"crops": x})["features"].reshape(len(x), -1) for p in INT8_PARTS}
        backend.close()
    rows = []
    for part in INT8_PARTS:
        a, b = feats["fp32"][part].astype(np.float64), feats["int8"][part].astype(np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        rel = float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-12))
        rows.append(ParityRow(part, "int8 vs fp32 min cosine", float(cos.min()), INT8_MIN_COSINE,
                              bool(cos.min() >= INT8_MIN_COSINE), f"{len(x)} crops of {note}"))
        rows.append(ParityRow(part, "int8 vs fp32 rel L2", rel, float("nan"), True, gated=False))
    return rows


@dataclass(frozen=True)
class CheckVerdict:
    """What `run_checks` returns: true when every gate passed; `reason`, one line naming the failed gates."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def failure_reason(rows: Sequence[ParityRow]) -> str:
    """One line naming each failed gate with its value and limit ("" when all passed)."""
    return "; ".join(f"{r.part} {r.check} {r.value:.4g} (limit {r.limit:.3g})" + (f": {r.note}" if r.note and not
                     np.isfinite(r.value) else "") for r in rows if not r.ok)


def run_checks(run_dir: Path, out: Path, formats: Sequence[ModelFormat | str] = ("onnx",),
               videos: int = FP16_VIDEOS, max_frames: int = FP16_FRAMES) -> CheckVerdict:
    """Run the gate of every format row in `formats` (rows of `lpgb.runtime.formats.FORMATS` or their names;
    rows without a gate are skipped): the trained torch parts of `run_dir` against the ONNX files in `out` on
    real inputs (`fp32_gate`), the FP16 pipeline against the FP32 one (`fp16_gate`), the INT8 branch parts
    against the FP32 ones (`int8_gate`); print the table; a verdict, true when every gate passes."""
    from lpgb.runtime.cli_common import console
    from lpgb.runtime.formats import format_row, resolve

    run_dir, out = Path(run_dir), Path(out)
    cfg = LpgbConfig.load(run_dir / "config.json")
    rows_ = [format_row(f) if isinstance(f, str) else f for f in formats]
    names = tuple(r.name for r in rows_)
    rows: list[ParityRow] = []
    for row in rows_:
        if row.gate is not None:
            rows += resolve(row.gate)(run_dir, out, cfg, names, videos, max_frames)
    console.print(parity_table(rows), markup=False, highlight=False, soft_wrap=True)
    return CheckVerdict(all(r.ok for r in rows), failure_reason(rows))


def fp32_gate(run_dir: Path, out: Path, cfg: LpgbConfig, formats: Sequence[str], videos: int,
              max_frames: int) -> list[ParityRow]:
    """The `onnx` row's gate: `fp32_rows` (with the FP16 information rows when `fp16` is checked too)."""
    return fp32_rows(run_dir, out, cfg, fp16="fp16" in formats)


def fp16_gate(run_dir: Path, out: Path, cfg: LpgbConfig, formats: Sequence[str], videos: int,
              max_frames: int) -> list[ParityRow]:
    """The `fp16` row's gate: the FP16 pipeline against the FP32 one (`fp16_pipeline_rows`); a missing FP16
    file or a pipeline that cannot run fails it."""
    from lpgb.runtime.formats import FORMATS

    row = FORMATS["fp16"]
    if not any((out / row.file_of(p)).is_file() for p in row.parts):
        return [ParityRow("pipeline", "fp16 files", float("nan"), float("nan"), False,
                          f"--fp16 but no {row.file_of('*')} in {out}")]
    try:
        return fp16_pipeline_rows(run_dir, out, videos, max_frames)
    except Exception as exc:  # noqa: BLE001 - a pipeline that cannot run fails the gate
        return [ParityRow("pipeline", "fp16 frame-score rank corr", float("nan"), FP16_MIN_RANK_CORR,
                          False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")]


def int8_gate(run_dir: Path, out: Path, cfg: LpgbConfig, formats: Sequence[str], videos: int,
              max_frames: int) -> list[ParityRow]:
    """The `int8` row's gate: `int8_rows`."""
    return int8_rows(run_dir, out, videos, max_frames)


def int8_rows(run_dir: Path, out: Path, videos: int = FP16_VIDEOS, max_frames: int = FP16_FRAMES) -> list[ParityRow]:
    """The INT8 gates (module docstring): branch features on the check tubes, then the paper-only (`smm`)
    frame scores of the labelled test videos and, when the model's own terms read the branches (e.g. the
    `irregularity` read-out), its served frame scores too; a part or pipeline that cannot run fails its gate."""
    from lpgb.runtime.formats import FORMATS, INT8_PARTS

    row = FORMATS["int8"]
    missing = [row.file_of(p) for p in INT8_PARTS if not (Path(out) / row.file_of(p)).is_file()]
    if missing:
        return [ParityRow("pipeline", "int8 files", float("nan"), float("nan"), False,
                          f"--int8 but no {', '.join(missing)} in {out}")]
    from lpgb.runtime.config import LpgbConfig
    from lpgb.runtime.terms import terms_network_path

    gates = [("branch", "int8 vs fp32 min cosine", INT8_MIN_COSINE, lambda: int8_feature_rows(run_dir, out)),
             ("pipeline", "int8 smm score rank corr", INT8_MIN_RANK_CORR,
              lambda: pipeline_rows(run_dir, out, "int8", videos, max_frames, paper_only=True))]
    if terms_network_path(LpgbConfig.load(Path(run_dir) / "config.json").scoring.terms) != "none":
        # the served score reads the branches too: it is gated as well, as the user gets it
        gates.append(("pipeline", "int8 frame-score rank corr", INT8_MIN_RANK_CORR,
                      lambda: pipeline_rows(run_dir, out, "int8", videos, max_frames)))
    rows: list[ParityRow] = []
    for name, check, limit, rows_of in gates:
        try:
            rows += rows_of()
        except Exception as exc:  # noqa: BLE001 - a part or pipeline that cannot run fails the gate
            rows.append(ParityRow(name, check, float("nan"), limit, False,
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
    return rows


__all__ = ["ParityRow", "parity_table", "rank_correlation", "run_checks", "fp32_rows", "fp16_pipeline_rows",
           "fp16_tube_rows", "fp16_rows", "load_tube_crops", "real_inputs", "FP32_RTOL", "FP16_MIN_RANK_CORR",
           "FP16_MAX_AUC_DIFF", "CheckVerdict", "failure_reason", "pipeline_rows", "paper_only_detector",
           "int8_rows", "int8_feature_rows", "INT8_MIN_RANK_CORR", "INT8_MAX_AUC_DIFF", "INT8_MIN_COSINE",
           "fp32_gate", "fp16_gate", "int8_gate"]
