"""Branch features per (frame index, region), so a crop seen by several tubes or frames runs once.

A crop's branch1 / branch2 features depend only on the frame and the integer region it is cut from
(`geometry.crop_region` + `preprocess.crops_to_input`, the same path as without the cache). A tube at
frame t needs the crops of its region in frames t-L..t; when the region is the same as at frame t-1
(an object inside a fixed or snapped region, `ProposalConfig.region_snap`), only frame t's crop is new.
Memory is bounded: entries of frames that have left the L+1 frame buffer are evicted. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpgb.runtime.errors import LpgbError

__all__ = ["CacheKey", "CacheStats", "FeatureCache"]

CacheKey = tuple[int, int, int, int, int]  # (frame index, x1, y1, x2, y2)


@dataclass
class CacheStats:
    """Counts since the cache was made: crops asked for, found, and run through the branches."""

    lookups: int = 0
    hits: int = 0
    computed: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


class FeatureCache:
    """(frame index, region) -> (branch1 features, branch2 features), each `(N_q, E_d)` float32.

    `evict_before(index)` drops every entry of an older frame; the owner calls it as frames leave the
    tube buffer, so the cache holds at most the entries of the last L+1 frames (each at most the
    distinct regions asked for while that frame was buffered). `max_entries` is a hard cap on top
    (the oldest frames go first), against a stream with an extreme number of boxes.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise LpgbError(f"feature cache max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: dict[CacheKey, tuple[np.ndarray, np.ndarray]] = {}
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._entries

    @staticmethod
    def key(frame_index: int, region: np.ndarray) -> CacheKey:
        """The key of `region` `(4,)` int (x1, y1, x2, y2) cut from frame `frame_index`."""
        x1, y1, x2, y2 = (int(v) for v in np.asarray(region).reshape(4))
        return (int(frame_index), x1, y1, x2, y2)

    def get(self, key: CacheKey) -> tuple[np.ndarray, np.ndarray]:
        return self._entries[key]

    def put(self, key: CacheKey, f1: np.ndarray, f2: np.ndarray) -> None:
        """Store one crop's features `(N_q, E_d)` each (copied, so a batch array is not kept alive)."""
        self._entries[key] = (np.array(f1, np.float32), np.array(f2, np.float32))
        if len(self._entries) > self.max_entries:
            for old in sorted(self._entries)[: len(self._entries) - self.max_entries]:
                del self._entries[old]

    def evict_before(self, frame_index: int) -> None:
        """Drop the entries of frames older than `frame_index` (they left the buffer)."""
        stale = [k for k in self._entries if k[0] < frame_index]
        for k in stale:
            del self._entries[k]

    def frames(self) -> set[int]:
        """The frame indices that have entries."""
        return {k[0] for k in self._entries}

    def clear(self) -> None:
        """Forget every entry (a new video); the stats are kept."""
        self._entries.clear()
