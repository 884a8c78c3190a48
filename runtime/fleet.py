"""A fleet of streams on Ray (`lpgb-run ... --ray`, `pip install 'lpgb[fleet]'`): the streams are split into
groups, each group runs on one Ray actor (`StreamGroup`: one model loaded per actor, its streams batched
as in `lpgb.runtime.streams`), on a local Ray instance or on an existing cluster (`--address auto` or
HOST:PORT after `ray start --head` / `ray start --address ...`).

A failed actor is restarted by Ray (`max_restarts`) and its task retried (`max_task_retries`); the retried
task resumes every stream of its group after the last frame the dead actor wrote (file sources are read
again from the start and the frames already written are recomputed to rebuild the stream's state, not
written again; live sources continue from now), so nothing scored is lost and nothing is written twice.
Ray does the placement, restarts and transport; lpgb adds no scheduler or RPC of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.streams import StreamOutcome, StreamsConfig, StreamSpec

__all__ = ["FleetConfig", "run_fleet", "StreamGroup", "require_ray"]


@dataclass(frozen=True)
class FleetConfig:
    """Where and how the streams run on Ray. `address`: None starts a local Ray instance for this command,
    "auto" or HOST:PORT joins a running cluster; per actor: `streams_per_actor` streams, `actor_cpus` CPUs and
    `actor_gpus` GPUs reserved; `max_restarts`: restarts of a failed actor (and retries of its task)."""

    address: Optional[str] = None
    streams_per_actor: int = 4
    actor_cpus: float = 1.0
    actor_gpus: float = 0.0
    max_restarts: int = 3
    local_cpus: Optional[int] = None  # CPUs of the local instance (None: Ray's default, all of them)

    def __post_init__(self) -> None:
        if self.streams_per_actor < 1:
            raise LpgbError(f"--streams-per-actor must be >= 1, got {self.streams_per_actor}")
        if not (self.actor_cpus >= 0 and self.actor_gpus >= 0) or self.max_restarts < 0:
            raise LpgbError("--actor-cpus, --actor-gpus and --max-restarts must be >= 0")


def require_ray():
    """The `ray` module, or a one-line LpgbError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise LpgbError("--ray needs Ray: pip install 'lpgb[fleet]'") from None
    return ray


class StreamGroup:
    """A Ray actor's work: one group of streams in one process (`run_streams`), resumable."""

    def __init__(self, request) -> None:
        self.request = request

    def run(self, specs: Sequence[StreamSpec], out: str, cfg: StreamsConfig) -> list[StreamOutcome]:
        from lpgb.runtime.streams import run_streams

        lines: list[str] = []
        return run_streams(self.request, specs, Path(out), replace(cfg, resume=True), report=lines.append)


def _groups(specs: Sequence[StreamSpec], size: int) -> list[list[StreamSpec]]:
    return [list(specs[i:i + size]) for i in range(0, len(specs), size)]


def start_ray(fleet: FleetConfig):
    """`ray.init` for `fleet` (a local instance, or the cluster at `fleet.address`); one-line errors."""
    ray = require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls from Ray itself
    if ray.is_initialized():
        return ray
    try:
        if fleet.address is None:
            ray.init(num_cpus=fleet.local_cpus, include_dashboard=False, log_to_driver=False,
                     object_store_memory=200 * 1024 * 1024)
        else:
            ray.init(address=fleet.address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray instance" if fleet.address is None else f"the Ray cluster at {fleet.address}"
        raise LpgbError(f"cannot start or reach {where}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    return ray


def run_fleet(request, specs: Sequence[StreamSpec], out: Path, fleet: FleetConfig,
              cfg: StreamsConfig = StreamsConfig(), report: Optional[Callable[[str], None]] = None,
              on_started: Optional[Callable[[list], None]] = None) -> list[StreamOutcome]:
    """Score `specs` on Ray actors, `fleet.streams_per_actor` streams each, into `out/<name>/`; returns one
    outcome per stream (in `specs` order). `on_started(actors)` is called with the actor handles once the
    tasks are submitted (tests kill one). A group whose actor fails more than `fleet.max_restarts` times
    is reported, and its streams' frames written so far stay on disk."""
    from lpgb.runtime.outputs import prepare_run_output, resumable_output

    from lpgb.runtime.atomic import NewFolder

    say = report or (lambda line: None)
    out = Path(out).resolve()  # actors may run in another working directory
    made = [NewFolder.before(out)] + [NewFolder.before(out / s.name) for s in specs]
    ready = []
    for spec in specs:  # refusals come before any actor starts, as in one process
        try:
            if not (resumable_output(out / spec.name)):
                prepare_run_output(out / spec.name, request.overwrite, source=spec.source, model=request.model)
            ready.append(spec)
        except LpgbError as exc:
            say(f"{spec.name}: {exc}; skipped")
    if not ready:
        raise LpgbError("no stream can run: every source was missing or refused")
    request = replace(request, model=Path(request.model).resolve(), overwrite=False)  # a retry must not restart
    try:
        ray = start_ray(fleet)
    except BaseException:
        for folder in reversed(made):  # no Ray: leave no folder this call made
            folder.undo()
        raise
    actor_class = ray.remote(num_cpus=fleet.actor_cpus, num_gpus=fleet.actor_gpus, max_restarts=fleet.max_restarts,
                             max_task_retries=fleet.max_restarts)(StreamGroup)
    groups = _groups(ready, fleet.streams_per_actor)
    actors = [actor_class.remote(request) for _ in groups]
    refs = [a.run.remote(g, str(out), cfg) for a, g in zip(actors, groups)]
    if on_started is not None:
        on_started(actors)
    outcomes: dict[str, StreamOutcome] = {}
    for group, ref in zip(groups, refs):
        try:
            for o in ray.get(ref):
                outcomes[o.spec.name] = o
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            for spec in group:
                outcomes[spec.name] = StreamOutcome(spec, out / spec.name, error=f"actor failed: {first}")
                say(f"{spec.name}: its actor failed beyond {fleet.max_restarts} restarts: {first}")
    for a in actors:
        ray.kill(a, no_restart=True)
    return [outcomes[s.name] for s in ready]
