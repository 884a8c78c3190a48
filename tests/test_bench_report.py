"""lpgb-bench pieces that need no trained model: report writers, percentiles, parity, AUC summary,
matmul peak and the cost arithmetic."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from lpgb.benchmarks import report
from lpgb.benchmarks.accuracy import auc_summary, frame_anomalies, one_line, parity, per_anomaly_auc
from lpgb.benchmarks.cost import PartCost, achieved, frame_cost, matmul_peak
from lpgb.benchmarks.speed import parse_spec, percentiles, speedups
from lpgb.runtime.config import preset
from lpgb.runtime.errors import LpgbError


def _stages(base: float) -> dict:
    return {name: {"p50_ms": base, "p90_ms": base * 1.5, "p99_ms": base * 2, "frames": 10}
            for name in ("decode", "proposals", "tubes", "branch1", "branch2", "smm", "scoring")}


@pytest.fixture()
def result() -> dict:
    """A hand-made run_bench result: torch and ort ran, trt failed."""
    speed = [
        {"backend": "torch", "precision": "fp32", "fps": 10.0, "ms_per_frame": 100.0, "cold_start_s": 1.2,
         "rss_mb": 500.0, "frames": 10, "tubes_mean": 2.0, "stages": _stages(5.0),
         "sweep": [{"tubes": 1, "ms": 8.0, "tubes_per_s": 125.0}, {"tubes": 4, "ms": 20.0, "tubes_per_s": 200.0}]},
        {"backend": "ort", "precision": "fp32", "fps": 25.0, "ms_per_frame": 40.0, "cold_start_s": 0.4,
         "rss_mb": 520.0, "frames": 10, "tubes_mean": 2.0, "stages": _stages(2.0),
         "sweep": [{"tubes": 1, "ms": 3.0, "tubes_per_s": 333.3}]},
    ]
    per_backend = {
        "torch": {"micro_auc": 0.81, "macro_auc": 0.77, "micro_auc_smoothed": 0.84, "macro_auc_smoothed": 0.8,
                  "n_videos": 2, "n_single_class": 1, "parity": {"spearman": 1.0, "max_abs": 0.0},
                  "scores": {"01": [0.1, 0.9]}},
        "ort": {"micro_auc": 0.8099, "macro_auc": 0.77, "micro_auc_smoothed": 0.84, "macro_auc_smoothed": 0.8,
                "n_videos": 2, "n_single_class": 1, "parity": {"spearman": 0.9999, "max_abs": 2e-5},
                "scores": {"01": [0.1, 0.90002]}},
    }
    return {
        "lpgb_bench": 1, "model": "runs/x", "data": "data/x", "device_summary": "test cpu",
        "request": {"backends": ["torch", "ort", "trt"]}, "config": preset("tiny").to_dict(),
        "backends": [
            {"name": "torch", "backend": "torch", "precision": "fp32", "errors": {}, "size_mb": 3.2},
            {"name": "ort", "backend": "ort", "precision": "fp32", "errors": {}, "size_mb": 3.1},
            {"name": "trt", "backend": "trt", "precision": "fp32", "size_mb": None,
             "errors": {"speed": "the TensorRT backend runs on cuda only (got device 'cpu')",
                        "accuracy": "skipped (speed run failed)"}},
        ],
        "speed": speed, "speedup_vs_torch": speedups(speed),
        "accuracy": {"reference": "torch", "sigma": 3.0, "smoothing": "centred Gaussian", "micro_auc": 0.81,
                     "macro_auc": 0.77, "micro_auc_smoothed": 0.84, "macro_auc_smoothed": 0.8, "n_videos": 2,
                     "n_single_class": 1, "per_backend": per_backend},
        "cost": {"peak": {"peak_gflops": 50.0}, "method": "test",
                 "per_frame": {"torch": {"tubes": 2.0, "mb": 1.5}, "ort": {"tubes": 2.0, "mb": 1.5}},
                 "achieved": [{"backend": "torch", "gflops_per_frame": 0.5, "fps": 10.0, "achieved_gflops": 5.0,
                               "fraction_of_peak": 0.1}]},
        "nan_value": float("nan"),
    }


def test_speedups_relative_to_torch(result):
    assert result["speedup_vs_torch"] == {"torch": 1.0, "ort": 2.5}
    assert speedups(result["speed"][1:]) == {}  # no torch run -> no ratios


def test_json_round_trip(tmp_path, result):
    out = tmp_path / "bench.json"
    written = report.write_reports(result, json_out=out)
    assert written == [out]
    back = json.loads(out.read_text())
    assert back["speed"] == result["speed"]
    assert back["backends"][2]["errors"]["speed"].startswith("the TensorRT backend")
    assert back["nan_value"] is None  # strict JSON: NaN -> null
    assert not list(tmp_path.glob(".bench.json.*"))  # atomic write left no temporary file


def test_csv_header_and_rows(tmp_path, result):
    out = tmp_path / "bench.csv"
    report.write_reports(result, csv_out=out)
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0][:7] == ["format", "status", "size_mb", "micro_auc", "macro_auc", "ms_per_frame", "fps"]
    assert [r[0] for r in rows[1:]] == ["torch", "ort", "trt"]
    torch_row = dict(zip(rows[0], rows[1]))
    assert torch_row["status"] == "✓" and float(torch_row["fps"]) == 10.0 and float(torch_row["micro_auc"]) == 0.81
    trt_row = dict(zip(rows[0], rows[3]))
    assert trt_row["status"].startswith("✗ the TensorRT backend runs on cuda only")
    assert trt_row["fps"] == "" and trt_row["micro_auc"] == ""


def test_markdown_contains_tables(tmp_path, result):
    out = tmp_path / "bench.md"
    report.write_reports(result, md=out)
    text = out.read_text()
    assert "| Format | Status | Size (MB) | micro AUC |" in text
    assert "| torch | ✓ | 3.2 | 0.8100 |" in text
    assert "| trt | ✗ the TensorRT backend runs on cuda only (got device 'cpu') |" in text
    assert "## Per-stage latency" in text and "| branch1 |" in text
    assert "## Load sweep" in text and "## Cost model" in text and "10.0%" in text
    assert "sigma 3.0" in text


def test_terminal_report_with_failed_backend(result):
    from rich.console import Console

    console = Console(record=True, width=200)
    report.print_report(result, console)
    text = console.export_text()
    assert "lpgb-bench summary" in text and "✗ the TensorRT backend" in text and "2.50x" in text


def test_percentiles():
    p = percentiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert p["p50_ms"] == pytest.approx(50.5)
    assert p["p90_ms"] == pytest.approx(90.1)
    assert p["p99_ms"] == pytest.approx(99.01)
    assert percentiles([]) == {"p50_ms": None, "p90_ms": None, "p99_ms": None}


def test_parse_spec():
    assert (parse_spec("ort-fp16").backend, parse_spec("ort-fp16").precision) == ("ort", "fp16")
    with pytest.raises(LpgbError, match="unknown backend"):
        parse_spec("onnx")


def test_parity_and_auc_summary():
    ref = [np.array([0.1, 0.2, 0.9, 0.8]), np.array([0.35, 0.15, 0.25])]
    other = [s + 1e-3 * np.arange(s.size) for s in ref]
    p = parity(ref, other)
    assert p["spearman"] == pytest.approx(1.0) and p["max_abs"] == pytest.approx(3e-3)
    labels = [np.array([0, 0, 1, 1], np.uint8), np.array([0, 0, 0], np.uint8)]
    summary = auc_summary(ref, labels, sigma=1.0)
    assert summary["micro_auc"] == pytest.approx(1.0)
    assert summary["macro_auc"] == pytest.approx(1.0)
    assert summary["n_single_class"] == 1 and summary["n_videos"] == 2
    from sklearn.metrics import roc_auc_score

    from lpgb.runtime.metrics import gaussian_smooth

    smoothed = np.concatenate([gaussian_smooth(s, 1.0, causal=False) for s in ref])
    assert summary["micro_auc_smoothed"] == pytest.approx(roc_auc_score(np.concatenate(labels), smoothed))
    assert one_line(ValueError("bad\nsecond line")) == "ValueError: bad"


def test_per_anomaly_auc_separates_kinds():
    # video 1: normal frames score 0.1-0.3; 'running' frames score high, 'loitering' frames low
    scores = [np.array([0.1, 0.2, 0.9, 0.8, 0.05, 0.15]), np.array([0.3, 0.95, 0.25])]
    labels = [np.array([0, 0, 1, 1, 1, 1]), np.array([0, 1, 1])]
    kinds = [[frozenset(), frozenset(), frozenset({"running"}), frozenset({"running"}),
              frozenset({"loitering"}), frozenset({"loitering"})],
             [frozenset(), frozenset({"running", "falling"}), frozenset({"falling"})]]
    out = per_anomaly_auc(scores, labels, kinds, sigma=0.0)
    assert list(out) == ["falling", "loitering", "running"]
    assert out["running"] == {"frames": 3, "auc": 1.0, "auc_smoothed": 1.0}
    assert out["loitering"]["auc"] == pytest.approx(1 / 6)  # 0.05 and 0.15 vs 0.1, 0.2, 0.3
    assert out["falling"]["frames"] == 2 and out["falling"]["auc"] == pytest.approx(5 / 6)
    with pytest.raises(LpgbError, match="per-anomaly AUC"):
        per_anomaly_auc(scores, labels, [kinds[0]], sigma=0.0)


def test_frame_anomalies_reads_box_files(tmp_path):
    from types import SimpleNamespace

    boxes = tmp_path / "01.json"
    boxes.write_text(json.dumps([[], [{"box": [0, 0, 4, 4], "anomaly": "none"}],
                                 [{"box": [0, 0, 4, 4], "anomaly": "running"}, {"box": [1, 1, 5, 5]}]]))
    item = SimpleNamespace(boxes=boxes)
    assert frame_anomalies(item, 3) == [frozenset(), frozenset(), frozenset({"running"})]
    assert frame_anomalies(item, 4) is None  # the box file is shorter than the labels
    assert frame_anomalies(SimpleNamespace(boxes=None), 3) is None


def test_per_anomaly_line_in_markdown(result):
    result["accuracy"]["per_anomaly"] = {"running": {"frames": 60, "auc": 0.635, "auc_smoothed": 0.692}}
    md = report.to_markdown(result)
    assert "AUC per anomaly kind (torch; frames showing that kind vs all normal frames): " \
           "running 0.635 (smoothed 0.692, 60 frames)" in md


def test_matmul_peak_positive():
    peak = matmul_peak(sizes=(128,), repeats=2, ort_size=128)
    assert peak["peak_gflops"] > 0 and math.isfinite(peak["peak_gflops"])
    assert peak["numpy"]["128"] > 0


def test_cost_linear_in_tubes():
    cfg = preset("tiny")
    parts = PartCost(branch_flops=1000, smm_flops=300, rpn_flops=50_000, branch_params=100, smm_params=40,
                     rpn_params=200)
    costs = [frame_cost(parts, cfg, k) for k in (1, 2, 4, 8)]
    length = cfg.smm.window + 1
    for c in costs:
        k = c["tubes"]
        assert c["flops"] == pytest.approx(50_000 + k * length * 2 * 1000 + k * 300)
    steps = np.diff([c["flops"] for c in costs]) / np.diff([1, 2, 4, 8])
    assert np.allclose(steps, steps[0])  # constant FLOPs per extra tube
    bsteps = np.diff([c["bytes"] for c in costs]) / np.diff([1, 2, 4, 8])
    assert np.allclose(bsteps, bsteps[0]) and bsteps[0] > 0
    none = frame_cost(parts, cfg, 0)
    assert none["flops"] == 50_000 and none["flops_by_part"]["branch1"] == 0
    free = frame_cost(parts, cfg, 4, path="none")  # network-free score terms: only the RPN runs
    assert free["flops"] == 50_000 and free["bytes_by_part"]["smm"] == 0 and free["tubes"] == 4
    # patterns-only terms: one crop per box through both branches, no SMM
    patterns = frame_cost(parts, cfg, 4, path="patterns")
    assert patterns["flops"] == 50_000 + 4 * 2 * 1000 and patterns["flops_by_part"]["smm"] == 0
    assert patterns["network"] and patterns["network_path"] == "patterns" and patterns["bytes_by_part"]["smm"] == 0
    rows = achieved({"per_backend_gflops": {"ort": costs[0]["gflops"]}}, [{"backend": "ort", "fps": 100.0}], 10.0)
    assert rows[0]["achieved_gflops"] == pytest.approx(costs[0]["gflops"] * 100)
    assert rows[0]["fraction_of_peak"] == pytest.approx(rows[0]["achieved_gflops"] / 10.0)


def test_paired_fps_fills_the_summary_and_is_explained(result):
    """With a paired run, the summary's FPS / ms / 'vs torch' come from it and a note says so."""
    result = dict(result, paired={"rounds": 3, "frames_per_round": 4, "fps": {"torch": 8.0, "ort": 20.0},
                                  "speedup_vs_torch": {"torch": 1.0, "ort": 2.4}})
    result["speedup_vs_torch"] = result["paired"]["speedup_vs_torch"]
    rows = {r["format"]: r for r in report.summary_rows(result)}
    assert rows["ort"]["fps"] == 20.0 and rows["ort"]["ms_per_frame"] == pytest.approx(50.0)
    assert rows["ort"]["speedup_vs_torch"] == 2.4 and rows["trt"]["fps"] is None
    md = report.to_markdown(result)
    assert "medians over 3 rounds" in md and "one-backend-at-a-time FPS: torch 10.0, ort 25.0" in md
    failed = dict(result, paired={"error": "boom"}, speedup_vs_torch=speedups(result["speed"]))
    assert {r["format"]: r for r in report.summary_rows(failed)}["ort"]["fps"] == 25.0
    assert "paired FPS run failed (boom)" in report.to_markdown(failed)



def test_event_metrics_count_overlaps_with_anomalous_segments():
    from lpgb.benchmarks.accuracy import event_metrics, segments
    from lpgb.runtime.config import ScoringConfig
    from lpgb.runtime.scoring import Calibration, TermCalibration

    assert segments(np.array([0, 1, 1, 0, 1])) == [(1, 2), (4, 4)]
    cal = Calibration(terms={"smm": TermCalibration(0.0, 1.0)}, normal_level=0.0, threshold=1.0, n_frames=10)
    scoring = ScoringConfig(hysteresis=0.5, min_event_frames=2)
    y = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0], np.uint8)
    s = np.array([0, 0, 2, 2, 2, 0, 0, 3, 3, 0, 0, 0, 0, 0], float)  # one true event, one false, one miss
    out = event_metrics([s], [y], cal, scoring)
    assert (out["events"], out["true_events"], out["segments"], out["segments_found"]) == (2, 1, 2, 1)
    assert out["precision"] == 0.5 and out["recall"] == 0.5


def test_gpu_suite_refuses_at_once_without_cuda(tmp_path):
    """On a machine without CUDA, `lpgb-bench --suite gpu` refuses in one line before loading anything."""
    import subprocess
    import sys
    from pathlib import Path

    from lpgb.benchmarks.gpu_suite import gpu_readiness

    problems = gpu_readiness()
    if not problems:
        pytest.skip("this machine has CUDA for torch and ONNX Runtime")
    exe = Path(sys.executable).parent / "lpgb-bench"
    r = subprocess.run([str(exe), "--model", str(tmp_path / "nope"), "--suite", "gpu"], capture_output=True, text=True,
                       timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "--suite gpu refused" in lines[0], r.stderr
    r = subprocess.run([str(exe), "--model", str(tmp_path / "nope"), "--suite", "tpu"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "unknown --suite" in r.stderr
