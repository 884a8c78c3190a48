"""A run folder is served (torch backend) and exported only as lpgb-train wrote it: `RUN/run.json` lists
every served file with its sha256; a changed, missing, unlisted or escaping file is refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from cli_helpers import _cli, assert_one_line_error
from lpgb.runtime.errors import LpgbError


def _flip_last_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def run_copy(micro_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_run["run"], run, ignore=shutil.ignore_patterns("export", "tubes", "checkpoints"))
    return run


def test_a_trained_run_lists_what_it_serves_and_opens(run_copy):
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.run_manifest import served_run_files

    listed = json.loads((run_copy / "run.json").read_text())["files"]
    assert set(listed) == set(served_run_files(run_copy))
    assert {"config.json", "calibration.json", "terms.npz", "weights/branch1.pt"} <= set(listed)
    assert ModelBundle.open(run_copy, "torch").folder == run_copy


@pytest.mark.parametrize("damage, message", [
    (lambda run: _flip_last_byte(run / "weights" / "branch1.pt"), "changed since lpgb-train"),
    (lambda run: (run / "weights" / "branch2.pt").unlink(), "missing"),
    (lambda run: shutil.copy(run / "weights" / "branch1.pt", run / "weights" / "extra.pt"), "not listed"),
    (lambda run: (run / "run.json").unlink(), "no run.json"),
    (lambda run: (run / "run.json").write_text(json.dumps({"format": 1, "files": {"../x.pt": "0"}})), "inside"),
])
def test_a_damaged_run_is_refused_by_every_command_in_one_line(run_copy, micro_run, tmp_path, damage, message):
    from lpgb.export.pipeline import ExportRequest, export_run
    from lpgb.runtime.bundle import ModelBundle

    damage(run_copy)
    with pytest.raises(LpgbError, match=message):
        ModelBundle.open(run_copy, "torch")
    with pytest.raises(LpgbError, match=message):
        export_run(ExportRequest(run=run_copy, out=tmp_path / "export"))
    video = sorted((micro_run["data"] / "testing" / "frames").iterdir())[0]
    assert_one_line_error(_cli("lpgb-run", video, "--model", run_copy, "--backend", "torch", "--out",
                               tmp_path / "out", "--max-frames", 3), contains=message)
