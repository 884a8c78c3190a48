"""Proposal-quality diagnostic: merge rate definition, sparse vs crowd split, CLI and bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from lpgb.benchmarks.proposals import main, merge_counts, merges
from lpgb.benchmarks.synth import SynthConfig, generate
from lpgb.runtime.errors import LpgbError


def test_merge_definition() -> None:
    gt = np.array([[0, 0, 10, 30], [12, 0, 22, 30], [40, 0, 50, 30]], np.float32)  # two close, one apart
    props = np.array([
        [0, 0, 22, 30],  # spans the two close people (IoU 0.45 with each): a merge
        [0, 0, 14, 30],  # a loose box on the first (IoU 0.71) holding 20% of the second: no merge
        [0, 0, 50, 30],  # spans all three: a merge of three
        [38, 0, 52, 31],  # a loose box on the lone one
    ], np.float32)
    assert merge_counts(props, gt).tolist() == [2, 1, 3, 1]
    assert merges(props, gt).tolist() == [True, False, True, False]
    hidden = np.array([[0, 0, 10, 30], [3, 0, 13, 30]], np.float32)  # the second 70% behind the first
    assert merge_counts(hidden, hidden).tolist() == [2, 2] and not merges(hidden, hidden).any()
    assert merges(np.zeros((0, 4)), gt).shape == (0,) and not merges(props, np.zeros((0, 4))).any()


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("quality")
    generate(root / "sparse", SynthConfig(seed=1, train_videos=1, test_videos=2, frames_per_video=40))
    generate(root / "crowd", SynthConfig(seed=1, train_videos=2, test_videos=2, frames_per_video=40, crowd=25))
    return root / "sparse", root / "crowd"


def test_report_sparse_vs_crowd(sets: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sparse, crowd = sets
    out = tmp_path / "q.json"
    main([str(sparse), str(crowd), "--proposals", "motion_warmup=10", "--out", str(out)])
    report = json.loads(out.read_text())
    s, c = report["sets"]["sparse"]["sources"]["motion"], report["sets"]["crowd"]["sources"]["motion"]
    assert list(report["sets"]["sparse"]["sources"]) == ["motion"]  # no RPN without --model
    assert s["all"]["frames"] == s["sparse"]["frames"] == 2 * 30 and s["crowd"]["frames"] == 0
    assert c["crowd"]["frames"] == 2 * 30 and c["crowd"]["objects"] > 10 * c["crowd"]["frames"]
    assert 0 < s["all"]["anomalous_objects"] and 0 <= s["all"]["recall_anomalous"] <= 1
    kinds = s["all"]["recall_by_anomaly"]  # the anomalous recall split by anomaly kind adds up to it
    assert sum(k["objects"] for k in kinds.values()) == s["all"]["anomalous_objects"]
    assert sum(k["objects"] * k["recall"] for k in kinds.values()) == pytest.approx(
        s["all"]["recall_anomalous"] * s["all"]["anomalous_objects"])
    assert c["all"]["merge_rate"] > 2 * s["all"]["merge_rate"]  # walkers in a crowd merge into blobs
    assert c["all"]["recall"] < s["all"]["recall"]
    table = capsys.readouterr().out
    assert "| crowd | motion | crowd | 60 |" in table and "| sparse | motion | sparse | 60 |" in table
    md = tmp_path / "q.md"
    main([str(crowd), "--proposals", "motion_warmup=10", "--proposals", "motion_warmup=10,motion_split=true",
          "--out", str(md)])
    text = md.read_text()
    assert text.startswith("# Proposal quality") and '"motion_split": true' in text and "size_prior" in text
    rows = {line.split(" | ")[1]: line.split(" | ") for line in text.splitlines() if line.startswith("| crowd | motion")}
    plain, split = rows["motion [motion_warmup=10]"], rows["motion [motion_warmup=10,motion_split=true]"]
    assert plain[2] == split[2] == "crowd" and float(plain[8]) == pytest.approx(c["crowd"]["proposals_per_frame"], abs=0.05)
    assert float(split[8]) > float(plain[8])  # the crowd's blobs were cut into more boxes


def test_bad_input(sets: tuple[Path, Path], tmp_path: Path) -> None:
    sparse, _ = sets
    with pytest.raises(LpgbError, match=".md or .json"):
        main([str(sparse), "--out", str(tmp_path / "x.txt")])
    with pytest.raises(LpgbError, match="ground-truth boxes|no dataset|not"):
        main([str(tmp_path)])
    with pytest.raises(LpgbError, match="unknown setting"):
        main([str(sparse), "--proposals", "no_such=1"])
    with pytest.raises(LpgbError, match="crowd-min"):
        main([str(sparse), "--crowd-min", "0"])


def test_a_trained_run_adds_rpn_and_union_rows(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    try:
        micro = request.getfixturevalue("micro_run")
    except pytest.FixtureLookupError:
        pytest.skip("no micro_run fixture in tests/conftest.py")
    out = tmp_path / "q.json"
    main([str(micro["data"]), "--model", str(micro["run"]), "--videos", "1", "--max-frames", "40", "--out", str(out)])
    entry = next(iter(json.loads(out.read_text())["sets"].values()))
    assert entry["rpn_backend"] == "ort" and list(entry["sources"]) == ["motion", "rpn", "union"]
    rows = {s: r["all"] for s, r in entry["sources"].items()}
    assert all(r["frames"] == 40 - entry["settings"][""]["motion_warmup"] for r in rows.values())
    assert rows["union"]["recall"] >= max(rows["motion"]["recall"], rows["rpn"]["recall"]) - 0.05
    # a run trained so far only with --stage rpn (config.json + weights/rpn.pt, no calibration): its RPN in torch
    import shutil

    partial = tmp_path / "rpn_only"
    (partial / "weights").mkdir(parents=True)
    shutil.copy(Path(micro["run"]) / "config.json", partial / "config.json")
    shutil.copy(Path(micro["run"]) / "weights" / "rpn.pt", partial / "weights" / "rpn.pt")
    main([str(micro["data"]), "--model", str(partial), "--videos", "1", "--max-frames", "40", "--out", str(out)])
    again = next(iter(json.loads(out.read_text())["sets"].values()))
    assert again["rpn_backend"] == "torch (rpn stage)"
    assert again["sources"]["rpn"]["all"]["recall"] == pytest.approx(rows["rpn"]["recall"], abs=0.02)  # torch ~ ORT
    (partial / "weights" / "rpn.pt").unlink()
    with pytest.raises(LpgbError):
        main([str(micro["data"]), "--model", str(partial)])
