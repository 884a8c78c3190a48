"""Ground-truth-tube accuracy (`benchmarks.oracle`): AUC bookkeeping and a run on the micro model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lpgb.runtime.errors import LpgbError

from lpgb.benchmarks.oracle import OracleErrors, collect_oracle_errors, main, summarise


def test_summarise_hand_made():
    errors = OracleErrors(anomaly=["none", "none", "running", "none", "cart", "running"],
                          error=[0.1, 0.2, 0.9, 0.3, 0.15, 0.25],
                          frame_label=[0, 1, 1, 0], frame_solo=[0.2, 0.9, 0.25, 0.3], frame_grouped=[0.5, 0.4, 0.3, 0.2])
    result = summarise(errors)
    # running errors 0.9, 0.25 vs normal 0.1, 0.2, 0.3: 5 of 6 pairs ordered
    assert result["object_auc_per_kind"]["running"] == {"auc": pytest.approx(5 / 6), "objects": 2}
    assert result["object_auc_per_kind"]["cart"]["auc"] == pytest.approx(1 / 3)
    assert result["object_auc"] == pytest.approx(6 / 9)
    assert result["frame_micro_auc_solo"] == pytest.approx(0.75)
    assert result["frame_micro_auc_grouped"] == pytest.approx(0.5)
    assert (result["objects"], result["anomalous_objects"], result["frames"]) == (6, 3, 4)
    one_class = summarise(OracleErrors(anomaly=["none"], error=[0.1], frame_label=[0], frame_solo=[0.1], frame_grouped=[0.1]))
    assert one_class["object_auc"] is None and one_class["frame_micro_auc_solo"] is None


def test_oracle_on_micro_run(micro_run, tmp_path, capsys):
    from lpgb.benchmarks.recall import boxed_videos, load_gt

    errors = collect_oracle_errors(micro_run["run"], micro_run["data"], "ort", videos=1, max_frames=30)
    item = boxed_videos(micro_run["data"], 1)[0]
    gt = load_gt(item.boxes)[:30]
    window = json.loads((micro_run["run"] / "config.json").read_text())["smm"]["window"]
    scored = [objects for objects in gt[window:] if objects]
    assert len(errors.error) == sum(len(o) for o in scored) and len(errors.frame_label) == len(scored)
    assert np.isfinite(errors.error).all() and min(errors.error) >= 0
    # the max over grouped tubes and over solo tubes both exist for every scored frame
    assert len(errors.frame_solo) == len(errors.frame_grouped) == len(scored)
    out = tmp_path / "oracle.json"
    main([str(micro_run["run"]), str(micro_run["data"]), "--videos", "1", "--json", str(out)])
    assert "object AUC" in capsys.readouterr().out
    assert json.loads(out.read_text())["objects"] > len(errors.error)  # the whole video, not 30 frames


def test_oracle_without_boxes_is_a_clean_exit(micro_run, tmp_path):
    with pytest.raises(LpgbError, match="is not a dataset"):
        main([str(micro_run["run"]), str(tmp_path)])
