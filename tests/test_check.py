"""`lpgb-export --check` (lpgb.export.check): parity gates on a real (tiny) trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lpgb.export.check import ParityRow, parity_table, rank_correlation, run_checks


def test_rank_correlation_handles_ties_and_order():
    a = np.array([0.0, 0.0, 0.0, 1.0, 2.0, 3.0])  # frames without boxes share one score
    assert rank_correlation(a, a.copy()) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(np.array([1.0]), np.array([5.0])) == 1.0


def test_parity_table_ends_with_verdict():
    ok = ParityRow("smm", "torch vs ort fp32 max rel", 1e-7, 1e-4, True)
    info = ParityRow("smm", "ort fp16 vs fp32 max rel", 3e-3, float("nan"), True, gated=False)
    bad = ParityRow("rpn", "torch vs ort fp32 max rel", 1e-2, 1e-4, False, "frame 30")
    assert parity_table([ok, info]).splitlines()[-1] == "PASS"
    table = parity_table([ok, info, bad])
    assert table.splitlines()[-1] == "FAIL" and "info" in table and "frame 30" in table


def _build_run(root: Path) -> Path:
    """2 training + 1 test synthetic videos (30 frames), tiny preset, shortest training, exported with FP16."""
    from lpgb.export.pipeline import ExportRequest, export_run
    from lpgb.benchmarks.synth import SynthConfig, generate
    from lpgb.trainer.pipeline import TrainRequest, train_all

    generate(root / "data", SynthConfig(seed=3, train_videos=2, test_videos=1, frames_per_video=30))
    run = train_all(TrainRequest(data=root / "data", out=root / "run", preset="tiny", epochs_scale=0.05))
    export_run(ExportRequest(run=run, fp16=True))
    return run


@pytest.fixture(scope="module")
def trained_run(request, tmp_path_factory) -> Path:
    """The session's `micro_run` (tests/conftest.py) when there is one, else a run built here."""
    try:
        micro = request.getfixturevalue("micro_run")
        run = Path(micro["run"] if isinstance(micro, dict) else micro)
    except pytest.FixtureLookupError:
        return _build_run(tmp_path_factory.mktemp("check"))
    if not (run / "export" / "model.json").is_file() or not any((run / "export").glob("*_fp16.onnx")):
        from lpgb.export.pipeline import ExportRequest, export_run

        copy = tmp_path_factory.mktemp("check") / "run"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export"))
        export_run(ExportRequest(run=copy, fp16=True))
        return copy
    return run


def _lines(capsys) -> list[str]:
    return [line for line in "".join(capsys.readouterr()).strip().splitlines() if line.strip()]


def test_check_fp32_gates_pass_on_real_inputs(trained_run, capsys):
    assert run_checks(trained_run, trained_run / "export", ("onnx",))
    lines = _lines(capsys)
    text = "\n".join(lines)
    assert lines[-1] == "PASS"
    assert "cached training tubes" in text  # real crops, not random tensors
    for part in ("branch1", "branch2", "smm"):
        assert any(line.startswith(part) and "torch vs ort fp32" in line and " ok" in line for line in lines)
    if (trained_run / "export" / "rpn.onnx").is_file():
        assert any(line.startswith("rpn") and "training video" in line and " ok" in line for line in lines)
    assert "fp16" not in text


def test_check_fp16_gates_pass_on_the_pipeline(trained_run, capsys):
    """The FP16 rows are computed on the test video's frame scores and pass on the micro run (its
    temporal stage is trained for the preset's full epochs; see tests/conftest.py)."""
    ok = run_checks(trained_run, trained_run / "export", ("onnx", "fp16"), videos=1, max_frames=30)
    lines = _lines(capsys)
    assert ok and lines[-1] == "PASS"
    rank = [line for line in lines if "fp16 frame-score rank corr" in line]
    assert len(rank) == 1 and "1 test videos, 30 frames" in rank[0] and "nan" not in rank[0]
    assert any("fp16 |micro AUC diff|" in line for line in lines)
    assert sum("ort fp16 vs fp32 max rel" in line and line.rstrip().endswith("info") for line in lines) == 3


def test_check_fp16_falls_back_to_tube_errors_without_labels(trained_run):
    from lpgb.export.check import fp16_tube_rows

    rows = fp16_tube_rows(trained_run, trained_run / "export", "no labelled test videos", n=32)
    assert len(rows) == 1 and rows[0].check == "fp16 tube-error rank corr"
    assert np.isfinite(rows[0].value) and "no labelled test videos (32 cached training tubes)" in rows[0].note


def test_check_fails_on_a_perturbed_initializer(trained_run, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "export"
    shutil.copytree(trained_run / "export", out)
    model = onnx.load(str(out / "branch1.onnx"))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    arr.flat[: max(1, arr.size // 10)] += 0.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(out / "branch1.onnx"))
    assert not run_checks(trained_run, out, ("onnx",))
    lines = _lines(capsys)
    assert lines[-1] == "FAIL"
    assert any(line.startswith("branch1") and "FAIL" in line for line in lines)
    assert any(line.startswith("branch2") and " ok" in line for line in lines)
