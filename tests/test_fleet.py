"""Streams on Ray actors (`lpgb-run ... --ray`): a local Ray instance, 4 streams on 2 actors, one actor
killed mid-run; Ray restarts it and its streams resume after their last written frame, so every stream's
frames.jsonl holds every frame exactly once, with the scores of single-stream runs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

FRAMES = 160


@pytest.fixture(scope="module")
def local_ray():
    from lpgb.runtime.fleet import FleetConfig, start_ray

    start_ray(FleetConfig(local_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> list[Path]:
    from lpgb.benchmarks.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("fleet-data")
    generate(root, SynthConfig(seed=3, train_videos=1, test_videos=2, frames_per_video=FRAMES))
    return sorted((root / "testing" / "frames").iterdir())


def _frames(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "frames.jsonl").read_text().splitlines()]


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def test_a_killed_actor_is_restarted_and_its_streams_resume_without_gaps_or_repeats(micro_run, long_videos,
                                                                                     local_ray, tmp_path):
    from lpgb.runtime.fleet import FleetConfig, run_fleet
    from lpgb.runtime.runner import RunRequest, run_source
    from lpgb.runtime.streams import StreamSpec

    specs = [StreamSpec(f"cam{i}", str(long_videos[i % 2])) for i in range(4)]
    request = RunRequest(source="", model=micro_run["export"])
    out = tmp_path / "fleet"
    killed: dict = {}

    def kill_first_actor_mid_run(actors) -> None:
        def kill() -> None:
            log = out / "cam0" / "frames.jsonl"
            deadline = time.time() + 120
            while _lines(log) < 10 and time.time() < deadline:
                time.sleep(0.05)
            killed["written"] = _lines(log)  # no call to the actor here: it runs one method at a time
            ray.kill(actors[0], no_restart=False)  # as a crash: Ray restarts the actor and retries its task

        threading.Thread(target=kill, daemon=True).start()

    lines: list[str] = []
    outcomes = run_fleet(request, specs, out, FleetConfig(streams_per_actor=2, actor_cpus=1, max_restarts=2),
                         report=lines.append, on_started=kill_first_actor_mid_run)
    assert 10 <= killed["written"] < FRAMES, f"the kill did not land mid-run: {killed}"
    assert all(o.error is None for o in outcomes), (outcomes, lines)
    assert outcomes[0].resumed >= killed["written"] - 1  # the restarted actor kept what the dead one wrote
    assert outcomes[2].resumed == 0 and outcomes[3].resumed == 0  # the other actor's streams ran once
    for spec in specs:
        frames = _frames(out / spec.name)
        assert [f["frame"] for f in frames] == list(range(FRAMES)), spec.name  # each frame exactly once
        assert (out / spec.name / "scores.json").is_file()
    for i in range(2):  # cam0/cam2 play video 0, cam1/cam3 video 1
        run_source(RunRequest(source=str(long_videos[i]), model=micro_run["export"], out=tmp_path / f"single{i}"))
        single = np.array([f["score"] for f in _frames(tmp_path / f"single{i}")])
        for name in (f"cam{i}", f"cam{i + 2}"):
            np.testing.assert_allclose([f["score"] for f in _frames(out / name)], single, atol=1e-5)


def test_ray_cli_refusals_are_one_line(micro_run, tmp_path):
    from cli_helpers import _cli, assert_one_line_error

    video = sorted((micro_run["data"] / "testing" / "frames").iterdir())[0]
    r = _cli("lpgb-run", video, "--ray", "--overwrite", "--model", micro_run["export"], "--out", tmp_path / "o")
    assert_one_line_error(r, "--overwrite")
