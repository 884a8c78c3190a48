"""Captions read from a JSONL file: one object per crop,
`{"key": ..., "action": ..., "appearance": ..., "place": ..., "objects": ...}`.

The four values are full sentences, used verbatim (write them with the templates of
`captioners.base` to match the other captioners). The key identifies the crop; the training
stage passes the same keys to `caption(..., keys=...)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.trainer.captioners.base import FIELDS, Captions

REQUIRED = ("key",) + FIELDS


def read_caption_file(path: Path) -> dict[str, Captions]:
    path = Path(path)
    if not path.is_file():
        raise LpgbError(f"caption file {path} does not exist (--caption-file)")
    table: dict[str, Captions] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LpgbError(f"{path} line {lineno} is not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise LpgbError(f"{path} line {lineno}: expected an object")
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise LpgbError(f"{path} line {lineno} lacks key(s) {', '.join(missing)} "
                                f"(need {', '.join(REQUIRED)})")
            bad = [k for k in FIELDS if not isinstance(row[k], str) or not row[k].strip()]
            if bad:
                raise LpgbError(f"{path} line {lineno}: {', '.join(bad)} must be non-empty strings")
            table[str(row["key"])] = Captions(**{f: row[f].strip() for f in FIELDS})
    return table


class FileCaptioner:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.table = read_caption_file(self.path)

    def caption(self, crops: np.ndarray, boxes: np.ndarray, frame_shape: Sequence[int],
                keys: Sequence[str] | None = None) -> list[Captions]:
        if keys is None:
            raise LpgbError("the file captioner needs crop keys (caption(..., keys=...))")
        if len(keys) != len(crops):
            raise ValueError(f"{len(keys)} keys for {len(crops)} crops")
        missing = [k for k in keys if k not in self.table]
        if missing:
            raise LpgbError(f"{self.path} has no captions for crop key {missing[0]!r}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return [self.table[k] for k in keys]


__all__ = ["FileCaptioner", "read_caption_file"]
