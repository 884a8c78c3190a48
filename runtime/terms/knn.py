"""k-nearest-neighbour density against a memory bank of normal training rows (numpy only).

Rows are standardised with the training mean/std; the bank is a greedy k-centre coreset (PatchCore)
of at most `bank_size` rows, so memory and time stay bounded; the score of a row is its mean
Euclidean distance to the k nearest bank rows. Calibration scores are held out per training video:
each training row is scored against the bank rows of the other videos.
"""

from __future__ import annotations

import numpy as np

from lpgb.runtime.errors import LpgbError

__all__ = ["KnnBank", "DensityTerm", "greedy_coreset"]

_MIN_STD = 1e-2  # a feature constant in training (e.g. no box ever at the border) cannot explode the distance
_CHUNK = 1024


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances `(len(a), len(b))` float32, clipped at 0."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def greedy_coreset(z: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of a greedy k-centre coreset of rows `z` `(M, D)`: at most `size`, farthest-first."""
    m = len(z)
    if m <= size:
        return np.arange(m)
    chosen = [int(np.random.default_rng(seed).integers(m))]
    nearest = _sq_distances(z, z[chosen[0]][None])[:, 0]
    for _ in range(size - 1):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        np.minimum(nearest, _sq_distances(z, z[nxt][None])[:, 0], out=nearest)
    return np.sort(np.asarray(chosen))


class KnnBank:
    """Standardise -> coreset bank -> mean distance to the k nearest bank rows."""

    def __init__(self, k: int, bank_size: int) -> None:
        if k < 1 or bank_size < 1:
            raise LpgbError(f"k-NN needs k >= 1 and bank_size >= 1, got k={k}, bank_size={bank_size}")
        self.k, self.bank_size = int(k), int(bank_size)
        self.mean = self.std = self.bank = None  # set by fit / load_state

    def fit(self, rows: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """rows `(M, D)`, groups `(M,)` -> held-out training scores `(M,)` float32."""
        rows = np.asarray(rows, np.float32)
        groups = np.asarray(groups).reshape(-1)
        if rows.ndim != 2 or len(rows) == 0 or len(groups) != len(rows):
            raise LpgbError(f"k-NN fit needs rows (M, D) with M >= 1 and M group ids; got {rows.shape}, {groups.shape}")
        self.mean = rows.mean(0)
        self.std = np.maximum(rows.std(0), _MIN_STD).astype(np.float32)
        z = self._standardise(rows)
        keep = greedy_coreset(z, self.bank_size)
        # the bank is stored as float16: calibrate against exactly what serving will load
        self.bank, bank_groups = z[keep].astype(np.float16).astype(np.float32), groups[keep]
        if len(np.unique(groups)) > 1:
            return self._held_out(z, groups, bank_groups)
        # one training video: leave the row itself out
        return self._held_out(z, np.arange(len(z)), np.asarray(keep))

    def _held_out(self, z: np.ndarray, groups: np.ndarray, bank_groups: np.ndarray) -> np.ndarray:
        out = np.empty(len(z), np.float32)
        for s in range(0, len(z), _CHUNK):
            d = _sq_distances(z[s:s + _CHUNK], self.bank)
            d[groups[s:s + _CHUNK, None] == bank_groups[None, :]] = np.inf
            out[s:s + _CHUNK] = self._reduce(d)
        return out

    def _reduce(self, sq: np.ndarray) -> np.ndarray:
        k = min(self.k, sq.shape[1])
        part = np.partition(sq, k - 1, axis=1)[:, :k]
        finite = np.where(np.isfinite(part), part, np.nan)
        return np.sqrt(np.nanmean(finite, axis=1)).astype(np.float32)

    def _standardise(self, rows: np.ndarray) -> np.ndarray:
        return ((np.asarray(rows, np.float32) - self.mean) / self.std).astype(np.float32)

    def score(self, rows: np.ndarray) -> np.ndarray:
        """rows `(K, D)` -> mean distance to the k nearest bank rows `(K,)` float32."""
        if self.bank is None:
            raise LpgbError("k-NN bank used before fit or load")
        rows = np.asarray(rows, np.float32).reshape(-1, self.bank.shape[1])
        if len(rows) == 0:
            return np.zeros(0, np.float32)
        return self._reduce(_sq_distances(self._standardise(rows), self.bank))

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std, "bank": self.bank.astype(np.float16)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        missing = {"mean", "std", "bank"} - set(arrays)
        if missing:
            raise LpgbError(f"k-NN state lacks {', '.join(sorted(missing))}")
        self.mean = np.asarray(arrays["mean"], np.float32)
        self.std = np.asarray(arrays["std"], np.float32)
        self.bank = np.asarray(arrays["bank"], np.float32)


class DensityTerm:
    """Mixin for a `ScoreTerm` whose raw score is the k-NN density of its feature rows (`KnnBank`, sized by
    `cfg.scoring.knn_k` / `cfg.scoring.bank_size`); subclasses define `name`, `needs` and `features`."""

    stateful = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.knn = KnnBank(cfg.scoring.knn_k, cfg.scoring.bank_size)

    def fit(self, features: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return self.knn.fit(features, groups)

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.knn.score(features)

    def state(self) -> dict[str, np.ndarray]:
        return self.knn.state()

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.knn.load_state(arrays)
