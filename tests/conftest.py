"""Shared fixtures: paths to shared data, a small synthetic dataset built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
PED2 = Path(os.environ.get("LPGB_PED2", REPO.parent / "shared" / "data" / "ped2"))


@pytest.fixture(scope="session")
def ped2_root() -> Path:
    if not (PED2 / "training").is_dir():
        pytest.skip(f"UCSD Ped2 not found at {PED2} (set LPGB_PED2)")
    return PED2


# --- end-to-end: one tiny trained + exported model per session --------------------------------

MICRO_SYNTH = dict(seed=0, train_videos=2, test_videos=2, frames_per_video=40)


def _full_temporal_epochs(run: Path, data: Path) -> None:
    """Retrain the (seconds-cheap) temporal stage with the preset's full epochs and recalibrate.

    At 0.1x epochs the SMM has barely moved: tube errors tie within 5e-4 and FP16 noise reorders
    the frame scores (rank corr 0.997), so the FP16 export gate would fail for a reason that is
    not the export. 20 epochs: rank corr 1.0, AUC diff 0 (measured)."""
    from lpgb.trainer.pipeline import TrainRequest, train_all

    train_all(TrainRequest(data=data, out=run, preset="tiny", stage="temporal", seed=0, epochs_scale=1.0))
    train_all(TrainRequest(data=data, out=run, preset="tiny", stage="calibrate", seed=0))


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory) -> dict:
    """A tiny synthetic set, trained with the tiny preset at a fraction of its epochs and exported
    (FP32 + FP16 ONNX). Returns {"data": Path, "run": Path, "export": Path, "timings": dict}.

    Set LPGB_MICRO_RUN to a folder holding `data/` and `run/` (with `run/export/`) from an earlier
    build to reuse it while developing tests (it is never modified: tests work on copies)."""
    import time

    reuse = os.environ.get("LPGB_MICRO_RUN")
    if reuse:
        root = Path(reuse)
        if not (root / "run" / "export" / "model.json").is_file():
            pytest.fail(f"LPGB_MICRO_RUN={reuse} has no run/export/model.json")
        return {"data": root / "data", "run": root / "run", "export": root / "run" / "export", "timings": {}}

    from lpgb.export.pipeline import ExportRequest, export_run
    from lpgb.benchmarks.synth import SynthConfig, generate
    from lpgb.trainer.pipeline import TrainRequest, train_all

    root = tmp_path_factory.mktemp("micro")
    timings = {}
    start = time.perf_counter()
    generate(root / "data", SynthConfig(**MICRO_SYNTH))
    timings["synth"] = time.perf_counter() - start
    start = time.perf_counter()
    # union proposals and network terms beside the defaults, so the RPN, branch and temporal paths are all exercised
    run = train_all(TrainRequest(data=root / "data", out=root / "run", preset="tiny", epochs_scale=0.1, seed=0,
                                 proposals="union", terms=("smm", "appearance", "velocity", "shape")))
    _full_temporal_epochs(run, root / "data")
    timings["train"] = time.perf_counter() - start
    start = time.perf_counter()
    export = export_run(ExportRequest(run=run, fp16=True))
    timings["export"] = time.perf_counter() - start
    return {"data": root / "data", "run": run, "export": export, "timings": timings}
