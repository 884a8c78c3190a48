"""One backend shared by several stream threads, with the branch and temporal parts run once per step on
the crops of all streams together (dynamic batching, as Triton's dynamic batcher does for a model shared
by many clients).

Each stream thread runs its own `Detector` (its own background model, tubes and scoring state) over one
`BatchingBackend`. A stream enters a step with `with batcher.step():` around its `Detector.process`; a
`run(part, inputs)` call of a batched part waits until every stream inside a step has asked for that part
(or `max_wait_s` passed, e.g. when one stream has no boxes or is still decoding), then one thread runs the
requests concatenated along their batch axis and every caller gets its own rows back. Parts whose outputs
are not per-row (the RPN) run directly.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from lpgb.runtime.backends.base import Backend

__all__ = ["BatchingBackend", "BATCHED_PARTS", "BatchStats"]

BATCHED_PARTS = frozenset({"branch1", "branch2", "smm"})  # inputs and outputs (B, ...) row for row


@dataclass
class _Request:
    inputs: dict[str, np.ndarray]
    rows: int
    arrived: float
    outputs: Optional[dict[str, np.ndarray]] = None
    error: Optional[BaseException] = None
    done: bool = False


@dataclass
class BatchStats:
    """How the shared backend was called: `calls` backend runs per part and `requests` stream requests per
    part (requests / calls = mean streams per batch)."""

    calls: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)

    def add(self, part: str, requests: int) -> None:
        self.calls[part] = self.calls.get(part, 0) + 1
        self.requests[part] = self.requests.get(part, 0) + requests


class BatchingBackend:
    """A `Backend` shared by stream threads; `run` on a part in `BATCHED_PARTS` joins the other streams'
    requests for that part in one backend call."""

    def __init__(self, backend: Backend, max_wait_s: float = 0.02) -> None:
        self.inner = backend
        self.name = backend.name
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._pending: dict[str, list[_Request]] = {}
        self._in_step = 0  # streams inside `step()` that have not finished their frame

    @property
    def providers(self) -> list[str]:
        return self.inner.providers

    @contextmanager
    def step(self) -> Iterator[None]:
        """Around one stream's `Detector.process`: the batcher waits for the streams inside a step."""
        with self._cond:
            self._in_step += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_step -= 1
                self._cond.notify_all()  # one fewer stream to wait for

    def run(self, part: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if part not in BATCHED_PARTS:
            return self.inner.run(part, inputs)
        rows = {int(np.shape(v)[0]) for v in inputs.values()}
        if len(rows) != 1:
            raise ValueError(f"{part}: inputs disagree on the batch size: {sorted(rows)}")
        request = _Request(inputs, rows.pop(), time.perf_counter())
        with self._cond:
            queue = self._pending.setdefault(part, [])
            queue.append(request)
            self._cond.notify_all()
            while not request.done:
                if queue and self._ready(queue):
                    batch = list(queue)
                    queue.clear()
                    self._cond.release()
                    try:
                        self._run_batch(part, batch)
                    finally:
                        self._cond.acquire()
                        self._cond.notify_all()
                else:
                    self._cond.wait(timeout=max(0.0, queue[0].arrived + self.max_wait_s - time.perf_counter())
                                    if queue else None)
        if request.error is not None:
            raise request.error
        assert request.outputs is not None
        return request.outputs

    def _ready(self, queue: list[_Request]) -> bool:
        """Every stream inside a step waits on this part, or the oldest request waited `max_wait_s`."""
        return len(queue) >= self._in_step or time.perf_counter() - queue[0].arrived >= self.max_wait_s

    def _run_batch(self, part: str, batch: list[_Request]) -> None:
        """Run the requests of `batch` as one call (outside the lock) and hand each its rows."""
        try:
            if len(batch) == 1:
                outputs = [self.inner.run(part, batch[0].inputs)]
            else:
                joined = {k: np.concatenate([r.inputs[k] for r in batch]) for k in batch[0].inputs}
                out = self.inner.run(part, joined)
                ends = np.cumsum([r.rows for r in batch])
                outputs = [{k: v[e - r.rows:e] for k, v in out.items()} for r, e in zip(batch, ends)]
            for r, o in zip(batch, outputs):
                r.outputs = o
        except BaseException as exc:  # every waiting stream sees the failure, not only the runner
            for r in batch:
                r.error = exc
        finally:
            for r in batch:
                r.done = True
            self.stats.add(part, len(batch))

    def close(self) -> None:
        self.inner.close()
