"""Training tubes: the serving code's proposals + TubeBuilder run over normal training videos.

The cache is what the spatial and temporal stages train on, so training crops are made by exactly
the code that serves (`lpgb.runtime.proposals`, `lpgb.runtime.tubes`).
Stored in RUN/tubes/ as plain .npy files (uint8 crops can be large; memory-mapped on load), with
RUN/tubes/tubes.json recording what the cache was made from (`tube_cache_key`): a cache made from other
inputs (proposal settings, RPN weights, dataset, videos and their content: size and mtime of each video
file or frame file) is dropped and rebuilt (`drop_stale_cache`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from lpgb.runtime.atomic import atomic_path, write_text_atomic
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.proposer import Proposer, RpnFn
from lpgb.runtime.sidecar import sha256_file
from lpgb.runtime.tubes import TubeBuilder
from lpgb.runtime.video import list_images, open_source

ProposalFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
KEY_FILE = "tubes.json"  # what the cache in the folder was made from (tube_cache_key)
CACHE_FILES = ("videos.json", "crops.npy", "boxes.npy", "meta.npy", "frame_shapes.npy")


@dataclass
class TubeCache:
    """crops (M, L+1, S, S, 3) uint8 BGR; boxes (M, 4) float32; meta (M, 3) int32 = video, frame, k;
    frame_shapes (V, 2) int32 (H, W) per video."""

    crops: np.ndarray
    boxes: np.ndarray
    meta: np.ndarray
    frame_shapes: np.ndarray
    video_names: list[str]

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("crops", "boxes", "meta", "frame_shapes"):
            with atomic_path(folder / f"{name}.npy") as tmp:
                np.save(tmp, getattr(self, name))
        write_text_atomic(folder / "videos.json", json.dumps(self.video_names))

    @classmethod
    def load(cls, folder: Path) -> "TubeCache":
        if not (folder / "videos.json").is_file():
            raise LpgbError(f"no tube cache in {folder}")
        arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r" if n == "crops" else None)
                  for n in ("crops", "boxes", "meta", "frame_shapes")}
        return cls(video_names=json.loads((folder / "videos.json").read_text()), **arrays)


def make_proposal_fn(cfg: LpgbConfig, rpn_forward: Optional[RpnFn]) -> Callable[[], ProposalFn]:
    """Factory of per-video serving proposers (`lpgb.runtime.proposer.Proposer`; motion state is per video).

    `rpn_forward(image (1,3,H,W) float32) -> (boxes (K,4), scores (K,))` in RPN input pixels, or None.
    """
    return lambda: Proposer(cfg.proposals, rpn_forward)


def build_tube_cache(videos: list, cfg: LpgbConfig, tubes_per_video: int, new_proposer: Callable[[], ProposalFn],
                     progress: Optional[Callable[[int, int, str], None]] = None) -> TubeCache:
    """Run proposals + tubes over every frame of each video; keep at most `tubes_per_video` tubes,
    spread evenly over the frames that have a full buffer."""
    crops, boxes, meta, shapes, names = [], [], [], [], []
    for v, item in enumerate(videos):
        per_video_crops, per_video_boxes, per_video_meta = [], [], []
        builder = TubeBuilder(cfg)
        propose = new_proposer()
        shape = None
        with open_source(item.source) as src:
            for f, frame in enumerate(src):
                shape = frame.shape[:2]
                b, s = propose(frame)
                batch = builder.push(frame, b, s)
                if builder.ready and len(batch.boxes):
                    per_video_crops.append(batch.crops)
                    per_video_boxes.append(batch.boxes)
                    per_video_meta.append(np.array([[v, f, k] for k in range(len(batch.boxes))], np.int32))
        if shape is None:
            raise LpgbError(f"training video {item.name} has no frames")
        shapes.append(shape)
        names.append(item.name)
        if per_video_crops:
            c = np.concatenate(per_video_crops)
            pick = np.unique(np.linspace(0, len(c) - 1, min(tubes_per_video, len(c))).round().astype(int))
            crops.append(c[pick])
            boxes.append(np.concatenate(per_video_boxes)[pick])
            meta.append(np.concatenate(per_video_meta)[pick])
        if progress:
            progress(v + 1, len(videos), f"{item.name}: {sum(len(m) for m in meta)} tubes")
    if not crops:
        raise LpgbError("no objects were proposed in any training video: check the data or proposal settings")
    return TubeCache(np.concatenate(crops), np.concatenate(boxes).astype(np.float32), np.concatenate(meta),
                     np.asarray(shapes, np.int32), names)


def video_fingerprint(source: Path | str) -> str:
    """sha256 of what a video's frames are read from: name, size and mtime (ns) of the video file, or of
    every image in its frame folder (a regenerated or edited video gets another fingerprint). Cheap: no
    file is read."""
    source = Path(source)
    files = list_images(source) if source.is_dir() else [source]
    digest = hashlib.sha256()
    for path in files:
        st = path.stat()
        digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def tube_cache_key(run_dir: Path, cfg: LpgbConfig, data: Path, videos: list, tubes_per_video: int) -> dict[str, Any]:
    """What a tube cache is made from: the proposal and tube settings, the RPN weights (sha256, when the
    proposals use an RPN), the dataset folder, its training videos with their content (`video_fingerprint`)
    and the tubes kept per video."""
    rpn = Path(run_dir) / "weights" / "rpn.pt"
    uses_rpn = cfg.proposals.source != "motion" and rpn.is_file()
    proposals = cfg.to_dict()["proposals"]
    if proposals.get("region_snap") == 0.0:  # off: the exact regions of caches recorded before the field existed
        del proposals["region_snap"]
    if not proposals.get("motion_split"):  # split off: the boxes of caches recorded before these fields existed
        for name in ("motion_split", "size_prior", "split_factor", "split_valley"):
            proposals.pop(name, None)
    return {"proposals": proposals, "window": cfg.smm.window, "image_size": cfg.spatial.image_size,
            "rpn_sha256": sha256_file(rpn) if uses_rpn else None, "data": str(Path(data).resolve()),
            "videos": [str(v.name) for v in videos], "content": [video_fingerprint(v.source) for v in videos],
            "tubes_per_video": int(tubes_per_video)}


def read_key(path: Path) -> Optional[dict[str, Any]]:
    """The key recorded at `path` (a JSON object), None when absent or unreadable."""
    try:
        key = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return key if isinstance(key, dict) else None


def drop_stale_cache(folder: Path, key: dict[str, Any]) -> bool:
    """Remove the tube cache in `folder` (and any part of an unfinished one) unless it records `key`; a
    cache without a record is stale too. True when a finished cache was removed."""
    folder = Path(folder)
    finished = (folder / "videos.json").is_file()  # TubeCache.save writes it last
    if finished and read_key(folder / KEY_FILE) == key:
        return False
    for name in (KEY_FILE, *CACHE_FILES):  # the record first: a half-removed cache is never taken as current
        (folder / name).unlink(missing_ok=True)
    return finished


def record_key(folder: Path, key: dict[str, Any]) -> None:
    """Record `key` for a tube cache just built in `folder` (nothing when there is none or it has a record)."""
    folder = Path(folder)
    if (folder / "videos.json").is_file() and not (folder / KEY_FILE).is_file():
        write_text_atomic(folder / KEY_FILE, json.dumps(key, indent=2))
