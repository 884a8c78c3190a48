"""FP32 ONNX -> INT8 ONNX (static quantisation, QDQ) of the branch parts, calibrated on training tubes.

`lpgb-export RUN --int8` writes `branch1_int8.onnx` and `branch2_int8.onnx` with ONNX Runtime's
`quantize_static` in QDQ format: weights int8 per output channel (symmetric), activations uint8 (the
U8S8 path ORT's CPU kernels run fastest), activation ranges from the 0.001 / 99.999 percentiles of a
histogram over a small calibration set (`CALIBRATION_METHOD`; plain min/max moved the Ped2 paper-only
AUC by 0.0064, over the 0.005 gate; percentile by 0.0018: docs/results/int8_cpu.md). Only the matrix
ops (`QUANTISED_OPS`: MatMul, Gemm, Conv; for motion-input models `MOTION_QUANTISED_OPS`, the convolutions
float32) are quantised; LayerNormalization, Softmax, GELU and the
residual adds stay float32 (the same ops FP16 keeps in float32, see `lpgb.export.fp16`).

Calibration data: `CALIBRATION_CROPS` crops of the run's TRAINING tubes (RUN/tubes, cut by the serving
Proposer + TubeBuilder at training time), spread over the cache and skipping the tubes that
`lpgb-export --check` compares on; frame i mod (L+1) of the i-th picked tube, so every tube position is
seen. Without a tube cache the tubes are cut from the first training video by the serving code
(`lpgb.export.check.load_tube_crops`). Test videos are never read here.

`rpn` and `smm` have no INT8 variant (`lpgb.runtime.formats.INT8_PARTS`): an int8 model serves them in
FP32, as the sidecar records per part.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from lpgb.runtime.atomic import atomic_path
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.preprocess import crops_to_input, encode_tubes

if TYPE_CHECKING:
    from lpgb.export.pipeline import ExportContext

__all__ = ["CALIBRATION_CROPS", "CALIBRATION_BATCH", "QUANTISED_OPS", "MOTION_QUANTISED_OPS", "quantised_ops",
           "CropCalibrationReader", "calibration_crops",
           "quantise_int8", "quantisation_note", "build_part"]

CALIBRATION_CROPS = 384  # crops of training tubes; bounds export time on a 2-core CPU
CALIBRATION_BATCH = 32  # crops per calibration call
QUANTISED_OPS: tuple[str, ...] = ("MatMul", "Gemm", "Conv")
# Motion crops (`spatial.input_form` "motion": frame differences beside the frame) keep the backbone's
# convolutions in float32: quantised, the difference channels lost enough that branch 1's min cosine to
# FP32 fell below the 0.99 gate on the Ped2 edge-motion run (0.985 in lpgb-export --int8 --check);
# see docs/decisions.md "INT8 of motion-input branches".
MOTION_QUANTISED_OPS: tuple[str, ...] = ("MatMul", "Gemm")


def quantised_ops(cfg: LpgbConfig) -> tuple[str, ...]:
    """The op types `quantize_static` turns to INT8 for a model of config `cfg`."""
    return MOTION_QUANTISED_OPS if cfg.spatial.input_form == "motion" else QUANTISED_OPS
PER_CHANNEL = True
CALIBRATION_METHOD = "Percentile"  # onnxruntime.quantization.CalibrationMethod name; MinMax failed the Ped2 gate


try:  # the base class lives in onnxruntime.quantization (importing it pulls in onnx)
    from onnxruntime.quantization import CalibrationDataReader as _ReaderBase
except ImportError:  # pragma: no cover - onnxruntime is a runtime dependency
    _ReaderBase = object  # type: ignore[assignment,misc]


class CropCalibrationReader(_ReaderBase):  # type: ignore[misc,valid-type]
    """Feeds uint8 BGR crops `(n, S, S, 3)` to a branch graph as `{"crops": (B, 3, S, S) float32}` batches
    of `batch` crops, preprocessed by the serving `crops_to_input`. ORT's histogram calibrators stack the
    batches, so all have the same size: the crops are cut to a multiple of `batch` (`batch` = n when
    n < batch). `rewind()` starts over."""

    def __init__(self, crops: np.ndarray, batch: int = CALIBRATION_BATCH, input_name: str = "crops") -> None:
        crops = np.asarray(crops)
        if crops.ndim != 4 or len(crops) == 0:
            raise LpgbError(f"calibration needs crops of shape (n, S, S, 3) with n >= 1; got {crops.shape}")
        self.batch = min(max(1, int(batch)), len(crops))
        self.crops, self.input_name = crops[: len(crops) - len(crops) % self.batch], input_name
        self._next = 0

    def __len__(self) -> int:
        return -(-len(self.crops) // self.batch)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self._next >= len(self.crops):
            return None
        chunk = self.crops[self._next : self._next + self.batch]
        self._next += self.batch
        return {self.input_name: crops_to_input(np.ascontiguousarray(chunk))}

    def rewind(self) -> None:
        self._next = 0


def calibration_crops(run_dir: Path, cfg: LpgbConfig, n: int = CALIBRATION_CROPS) -> tuple[np.ndarray, str]:
    """`(n', S, S, 3)` uint8 BGR crops of the run's training tubes and a note saying where they came from;
    n' <= n is a multiple of `CALIBRATION_BATCH` when n' >= it (what `CropCalibrationReader` feeds). The
    tubes `lpgb-export --check` compares on are skipped when the cache has others."""
    from lpgb.export.check import CHECK_TUBES, _pick, load_tube_crops
    from lpgb.trainer.tube_cache import TubeCache

    if n < 1:
        raise LpgbError(f"calibration needs at least one crop, got {n}")
    folder = Path(run_dir) / "tubes"
    t = cfg.smm.window + 1
    if (folder / "videos.json").is_file():
        cache = TubeCache.load(folder)
        checked = set(_pick(len(cache), CHECK_TUBES).tolist()) if len(cache) else set()
        free = np.array([i for i in range(len(cache)) if i not in checked] or list(range(len(cache))), int)
        if len(free):
            tubes = free[_pick(len(free), n)]
            frames = np.arange(len(tubes)) % t
            form = cfg.spatial.input_form
            crops = _whole_batches(np.stack([encode_tubes(cache.crops[i, max(0, f - 2):f + 1], form)[-1]
                                             for i, f in zip(tubes, frames)]))
            return crops, f"{len(crops)} crops of {len(crops)} cached training tubes (not the --check tubes)"
    tubes, note = load_tube_crops(run_dir, cfg, -(-n // t))
    crops = _whole_batches(tubes.reshape(-1, *tubes.shape[2:])[:n])
    return np.ascontiguousarray(crops), f"{len(crops)} crops of {note}"


def _whole_batches(crops: np.ndarray, batch: int = CALIBRATION_BATCH) -> np.ndarray:
    return crops if len(crops) < batch else crops[: len(crops) - len(crops) % batch]


def quantisation_note(n_crops: int, ops: tuple[str, ...] = QUANTISED_OPS) -> str:
    """What the sidecar's `build` field says about an INT8 part."""
    return (f"ort quantize_static QDQ, {'per-channel' if PER_CHANNEL else 'per-tensor'} int8 weights, uint8 "
            f"activations, {CALIBRATION_METHOD} over {n_crops} training crops, ops {'/'.join(ops)}")


def quantise_int8(fp32_path: Path, out_path: Path, crops: np.ndarray,
                  ops: tuple[str, ...] = QUANTISED_OPS) -> Path:
    """Write a static INT8 (QDQ) copy of the branch graph `fp32_path` (crops `(B, 3, S, S)` ->
    features `(B, N_q, E_d)`, float32 in and out) to `out_path` atomically, calibrated on `crops`
    `(n, S, S, 3)` uint8 BGR. Check the result on the pipeline (`lpgb.export.check.int8_rows`)."""
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise LpgbError(f"no ONNX model at {fp32_path}")
    reader = CropCalibrationReader(crops)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs "consider pre-processing" warnings on the root logger
    try:
        # the histogram calibrator prints its progress to stdout
        with atomic_path(out_path) as tmp, contextlib.redirect_stdout(io.StringIO()):
            _quantise(fp32_path, tmp, reader, ops)
    finally:
        root.setLevel(level)
    return out_path


def _quantise(fp32_path: Path, tmp: Path, reader: CropCalibrationReader, ops: tuple[str, ...]) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    try:
        quantize_static(str(fp32_path), str(tmp), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(ops), per_channel=PER_CHANNEL,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod[CALIBRATION_METHOD],
                        extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True})
    except Exception as exc:  # noqa: BLE001 - ORT raises assorted errors with long messages
        text = str(exc).strip()
        raise LpgbError(f"INT8 quantisation of {fp32_path.name} failed: "
                        f"{text.splitlines()[0] if text else type(exc).__name__}") from exc
    try:
        onnx.checker.check_model(str(tmp))
    except onnx.checker.ValidationError as exc:
        raise LpgbError(f"{fp32_path.stem}_int8.onnx failed the ONNX checker: {str(exc).splitlines()[0]}") from exc


def build_part(ctx: "ExportContext", part: str) -> None:
    """`lpgb-export --int8`: the INT8 ONNX of branch `part` (the `int8` format row) from its FP32 ONNX; the
    calibration crops are cut once per export."""
    from lpgb.runtime.cli_common import console
    from lpgb.runtime.formats import FORMATS

    row = FORMATS["int8"]
    if "int8_calibration" not in ctx.shared:
        ctx.shared["int8_calibration"] = calibration_crops(ctx.run_dir, ctx.cfg)
        console.print(f"INT8 calibration: {ctx.shared['int8_calibration'][1]}", highlight=False)
    crops = ctx.shared["int8_calibration"][0]
    ops = quantised_ops(ctx.cfg)
    path = quantise_int8(ctx.out / ctx.files[part]["fp32"], ctx.out / row.file_of(part), crops, ops)
    ctx.add_onnx(part, row, path, note=quantisation_note(len(crops), ops))
