"""Proposal recall (lpgb.runtime.recall, lpgb.benchmarks.recall) and its lpgb-bench report table."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lpgb.benchmarks.recall import RawFrame, RawRecall, evaluate, recall_rows, summary
from lpgb.runtime.config import preset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.recall import covered, recall_at_iou


def test_covered_and_recall_at_iou():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    pred = np.array([[1, 1, 10, 10], [50, 50, 60, 60]], np.float32)
    assert covered(pred, gt).tolist() == [True, False]
    assert covered(np.zeros((0, 4)), gt).tolist() == [False, False]
    assert recall_at_iou([pred, pred], [gt, gt[:1]]) == pytest.approx(2 / 3)
    assert np.isnan(recall_at_iou([pred], [np.zeros((0, 4))]))


def test_rpn_stage_reexports_the_runtime_metric():
    rpn_stage = pytest.importorskip("lpgb.trainer.rpn_stage")
    assert rpn_stage.recall_at_iou is recall_at_iou


def _raw(with_rpn: bool = True) -> RawRecall:
    """Two frames: a walker found by the RPN only, a bicycle found by motion only (after warm-up)."""
    walker = np.array([[10, 10, 30, 50]], np.float32)
    bike = np.array([[100, 40, 140, 70]], np.float32)
    frames = []
    for index in (0, 30):
        rpn = (np.concatenate([walker, [[0, 0, 200, 150]]]).astype(np.float32), np.array([0.9, 0.2], np.float32))
        motion = (bike, np.array([0.8], np.float32)) if index >= 20 else (np.zeros((0, 4), np.float32),
                                                                            np.zeros(0, np.float32))
        frames.append(RawFrame((160, 240), np.concatenate([walker, bike]), ["none", "novel_object"],
                               ["walker", "bicycle"], rpn if with_rpn else None, motion, index))
    return RawRecall(frames, ["01"], [1.0, 1.0] if with_rpn else [], [0.5, 0.5], "ort" if with_rpn else None)


def test_evaluate_motion_rpn_union_and_grouping():
    cfg = replace(preset("tiny").proposals, motion_warmup=20)
    r = evaluate(_raw(), cfg)
    assert set(r) == {"motion", "rpn", "union", "union grouped"}
    assert r["rpn"]["recall"] == 0.5 and r["rpn"]["recall_anomalous"] == 0.0
    assert r["motion"]["recall"] == 0.25 and r["motion"]["recall_after_warmup"] == 0.5
    assert r["union"]["recall"] == 0.75 and r["union"]["recall_after_warmup"] == 1.0
    assert r["union"]["per_anomaly"] == {"none": 1.0, "novel_object": 0.5}
    assert r["union"]["per_kind"]["bicycle"] == 0.5
    assert r["rpn"]["proposals_per_frame"] == 1.0  # the 0.2 box is under score_threshold
    assert r["union"]["ms_per_frame"] >= 1.5  # RPN + motion time are included
    # a low threshold lets the frame-sized box in: grouping merges everything into it
    low = evaluate(_raw(), replace(cfg, score_threshold=0.1))
    assert low["union"]["recall"] == 0.75 and low["union grouped"]["recall"] == 0.0


def test_evaluate_without_rpn_reports_motion_only_and_rows_render():
    cfg = replace(preset("tiny").proposals, motion_warmup=20)
    s = summary(_raw(with_rpn=False), cfg)
    assert list(s["sources"]) == ["motion"] and s["gt_boxes"] == 4 and s["gt_anomalous"] == 2
    rows = recall_rows(s)
    assert rows[0][:3] == ["motion", "25.0", "50.0"]


def test_bench_report_has_the_recall_table():
    from lpgb.benchmarks.report import to_markdown

    result = {"model": "m", "data": "d", "proposals": summary(_raw(), replace(preset("tiny").proposals,
                                                                              motion_warmup=20))}
    md = to_markdown(result)
    assert "Proposal recall @ IoU 0.5" in md and "| union | 75.0 | 100.0 |" in md
    assert "Proposal recall" not in to_markdown({"model": "m", "data": "d"})
    assert "error" in to_markdown({"proposals": {"error": "no boxes"}})


def test_measure_recall_on_a_trained_run(request):
    """End to end on the session's micro_run when tests/conftest.py provides one."""
    try:
        micro = request.getfixturevalue("micro_run")
    except pytest.FixtureLookupError:
        pytest.skip("no micro_run fixture in tests/conftest.py (the end-to-end path is run by test_check's run)")
    import json
    from pathlib import Path

    from lpgb.benchmarks.recall import measure_recall

    run = Path(micro["run"])
    data = Path(micro["data"]) if "data" in micro else Path(json.loads((run / "data.json").read_text())["data"])
    r = measure_recall(run, data, videos=1, max_frames=30)
    assert r["frames"] == 30 and r["rpn_backend"] == "ort" and r["gt_boxes"] > 0
    assert set(r["sources"]) == {"motion", "rpn", "union", "union grouped"}
    u, m, p = (r["sources"][k]["recall"] for k in ("union", "motion", "rpn"))
    assert u >= max(m, p) - 1e-9  # NMS may drop a box of one source in favour of the other, but rarely
    assert r["sources"]["rpn"]["ms_per_frame"] > 0


def test_motion_sweep_closing_5_beats_the_default_on_synthetic_boxes(request):
    """Open 3 + close 5 finds more synthetic GT boxes than the default close 7 + dilate 3 (fewer joined blobs)."""
    import json
    from dataclasses import replace
    from pathlib import Path

    from lpgb.benchmarks.motion_sweep import _load, motion_recall
    from lpgb.runtime.config import ProposalConfig

    micro = request.getfixturevalue("micro_run")
    run = Path(micro["run"])
    data = Path(micro["data"]) if "data" in micro else Path(json.loads((run / "data.json").read_text())["data"])
    videos = _load(data)[:2]
    new = motion_recall(videos, replace(ProposalConfig(), motion_close=5, motion_dilate=0))
    old = motion_recall(videos, ProposalConfig())
    for r in (new, old):
        assert r["gt"] > 100
        assert abs(r["recall"] + r["too_big"] + r["too_small"] + r["none"] - 1.0) < 1e-9
    assert new["recall"] > old["recall"] and new["too_big"] < old["too_big"]


def test_motion_sweep_bad_input_is_one_line(tmp_path):
    from lpgb.benchmarks.motion_sweep import main

    with pytest.raises(LpgbError, match="does not exist"):
        main([str(tmp_path / "nope")])
    with pytest.raises(LpgbError, match="--settings must be"):
        main([str(tmp_path), "--settings", "3,7"])


def test_evaluate_uses_the_recorded_fill_when_fill_ranking_is_on():
    """A loose high-objectness RPN box hides the tight one at power 0; the fill ranking finds it."""
    walker = np.array([[10, 10, 30, 50]], np.float32)
    loose = np.array([[6, 6, 34, 60]], np.float32)  # IoU 0.53 with the walker box: NMS keeps one of them
    rpn = (np.concatenate([loose, walker]), np.array([0.9, 0.8], np.float32))
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    frame = RawFrame((160, 240), np.array([[11, 11, 29, 49]], np.float32), ["none"], ["walker"], rpn, empty, 30,
                     np.array([0.3, 0.95], np.float32))
    raw = RawRecall([frame], ["01"], [1.0], [0.5], "ort")
    cfg = replace(preset("tiny").proposals, motion_warmup=20)
    from lpgb.runtime.geometry import iou_matrix

    assert iou_matrix(loose, walker)[0, 0] > cfg.nms_iou and iou_matrix(loose, frame.gt)[0, 0] < 0.5
    assert evaluate(raw, cfg)["rpn"]["recall"] == 0.0
    assert evaluate(raw, replace(cfg, rpn_fill_power=4.0))["rpn"]["recall"] == 1.0


def test_box_files_are_read_once_for_training_and_benchmarks(tmp_path):
    import json

    from lpgb.benchmarks.recall import load_gt
    from lpgb.runtime.boxfiles import box_array, load_box_file

    path = tmp_path / "01.json"
    path.write_text(json.dumps([[{"box": [1, 2, 3, 4], "anomaly": "running"}, [5, 6, 7, 8]], None, []]))
    frames = load_gt(path)
    assert frames == load_box_file(path) and [len(f) for f in frames] == [2, 0, 0]
    assert frames[0][1] == {"box": [5, 6, 7, 8]}  # a bare box reads as an object without attributes
    np.testing.assert_array_equal(box_array(frames[0]), [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert box_array(frames[1]).shape == (0, 4)
    path.write_text(json.dumps({"frames": []}))
    with pytest.raises(LpgbError, match="one entry per frame"):
        load_gt(path)


def test_candidate_recall_is_the_ceiling_of_post_processing():
    from lpgb.benchmarks.recall import candidate_recall

    gt = np.array([[10, 10, 30, 50], [100, 10, 120, 50]], np.float32)
    rpn = (np.array([[10, 10, 30, 50], [0, 0, 5, 5]], np.float32), np.array([0.1, 0.9], np.float32))
    motion = (np.array([[101, 11, 121, 51]], np.float32), np.ones(1, np.float32))
    frames = [RawFrame((200, 200), gt, ["none", "running"], ["walker", "walker"], rpn, motion, index=i)
              for i in (0, 30)]
    frames[0].motion = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))  # warm-up: no motion yet
    raw = RawRecall(frames=frames, rpn_backend="ort")
    result = candidate_recall(raw, warmup=20)
    assert result["recall"] == 0.75 and result["recall_after_warmup"] == 1.0
    assert result["candidates_per_frame"] == 2.5
    # the served union can only lose boxes: the low-scored RPN box falls under the threshold
    served = evaluate(raw, preset("tiny").proposals)["union"]["recall"]
    assert served <= result["recall"]


def test_recall_command_sweeps_nms_from_one_run(micro_run, capsys):
    from lpgb.benchmarks.recall import main

    main([str(micro_run["run"]), str(micro_run["data"]), "--videos", "1", "--nms-iou", "0.5,0.6"])
    out = capsys.readouterr().out
    assert "raw candidates" in out
    rows = [line for line in out.splitlines() if line.startswith("| 0.5 | 0.")]
    assert len(rows) == 2 and "| 0.6 |" in rows[1]
    with pytest.raises(LpgbError, match="--nms-iou"):
        main([str(micro_run["run"]), str(micro_run["data"]), "--nms-iou", "half"])
    with pytest.raises(LpgbError, match="does not exist"):
        main([str(micro_run["run"] / "missing"), str(micro_run["data"])])
