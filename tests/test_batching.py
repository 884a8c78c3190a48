"""The shared backend of several stream threads: requests of one part join one backend call, each stream
gets exactly its own rows back, and a stream that asks nothing (or fails) does not hold the others."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lpgb.runtime.batching import BatchingBackend


class RowBackend:
    """Row-wise outputs (each row's features depend on that row only), and a log of its calls."""

    name = "rows"
    providers = ["numpy"]

    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def run(self, part, inputs):
        with self.lock:
            self.calls.append((part, len(next(iter(inputs.values())))))
        if part == self.fail_on:
            raise RuntimeError(f"{part} failed")
        x = inputs["crops"].astype(np.float32)
        return {"features": np.stack([x.reshape(len(x), -1).sum(1), x.reshape(len(x), -1).max(1)], axis=1)}

    def close(self):
        pass


def _streams(batcher, sizes, part="branch1"):
    """One thread per stream, all inside a step at once; returns each stream's outputs (or its error)."""
    inputs = [np.random.default_rng(i).integers(0, 255, size=(n, 3, 4, 4)).astype(np.float32) for i, n in
              enumerate(sizes)]
    got: list = [None] * len(sizes)
    inside = threading.Barrier(len(sizes))

    def stream(i):
        with batcher.step():
            inside.wait()
            try:
                got[i] = batcher.run(part, {"crops": inputs[i]}) if sizes[i] else None
            except RuntimeError as exc:
                got[i] = exc

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a stream hung in the batcher"
    return inputs, got


def test_streams_requests_join_one_call_and_get_their_own_rows():
    inner = RowBackend()
    batcher = BatchingBackend(inner, max_wait_s=5.0)  # only "everyone asked" can release the batch in time
    inputs, got = _streams(batcher, [3, 1, 4, 2])
    assert inner.calls == [("branch1", 10)]
    for x, out in zip(inputs, got):
        np.testing.assert_array_equal(out["features"], RowBackend().run("branch1", {"crops": x})["features"])
    assert batcher.stats.calls == {"branch1": 1} and batcher.stats.requests == {"branch1": 4}


def test_a_stream_without_boxes_does_not_hold_the_others():
    inner = RowBackend()
    batcher = BatchingBackend(inner, max_wait_s=5.0)
    _, got = _streams(batcher, [2, 0, 3])  # stream 1 asks nothing and leaves its step
    assert got[1] is None and got[0]["features"].shape == (2, 2) and got[2]["features"].shape == (3, 2)
    assert sum(n for _, n in inner.calls) == 5


def test_a_late_stream_is_not_waited_for_longer_than_max_wait():
    inner = RowBackend()
    batcher = BatchingBackend(inner, max_wait_s=0.01)
    entered, release = threading.Event(), threading.Event()

    def slow_stream():  # inside its step, decoding, never asks
        with batcher.step():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=slow_stream)
    t.start()
    entered.wait(5)
    with batcher.step():
        out = batcher.run("branch1", {"crops": np.ones((2, 3, 4, 4), np.float32)})
    release.set()
    t.join(5)
    assert out["features"].shape == (2, 2) and inner.calls == [("branch1", 2)]


def test_a_failed_batch_raises_in_every_stream_that_joined_it_and_other_parts_pass_through():
    batcher = BatchingBackend(RowBackend(fail_on="branch2"), max_wait_s=5.0)
    _, got = _streams(batcher, [1, 2], part="branch2")
    assert all(isinstance(g, RuntimeError) and "branch2 failed" in str(g) for g in got)
    inner = RowBackend()
    direct = BatchingBackend(inner).run("rpn", {"crops": np.ones((1, 3, 4, 4), np.float32)})
    assert direct["features"].shape == (1, 2) and inner.calls == [("rpn", 1)]
    with pytest.raises(ValueError, match="batch size"):
        BatchingBackend(inner).run("smm", {"f1": np.ones((2, 3)), "f2": np.ones((3, 3))})
