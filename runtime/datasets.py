"""Torch-free dataset readers: ShanghaiTech, CUHK Avenue, UCSD Ped1/Ped2 and plain video folders.

`open_dataset(root)` detects the layout; every layout answers `train_videos()` / `test_videos()`
with `VideoItem`s whose `source` can be given to `lpgb.runtime.video.open_source`.
Labels are uint8 `(T,)` per frame (1 = abnormal) or None when the dataset has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from typing import Callable

import cv2
import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.video import IMAGE_SUFFIXES, is_video_file, list_images

LAYOUTS: tuple[str, ...] = ("shanghaitech", "avenue", "ucsd", "folder")
EXPECTED_LAYOUTS = (
    "ShanghaiTech (training/videos/*.avi or training/frames/<vid>/, testing/frames/<vid>/, "
    "testing/test_frame_mask/<vid>.npy), CUHK Avenue (training_videos/, testing_videos/, "
    "testing_label_mask/), UCSD Ped1/Ped2 (Train/TrainNNN/, Test/TestNNN/), "
    "or a folder of videos / frame folders"
)


@dataclass(frozen=True, eq=False)
class VideoItem:
    """One video: `source` is a video file or a frame folder; `labels` uint8 `(T,)` or None."""

    name: str
    source: Path
    labels: np.ndarray | None = field(default=None, repr=False)
    boxes: Path | None = None


# ------------------------------------------------------------------------------------------------
# small helpers


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def _video_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _visible(p) and is_video_file(p))


def _frame_dirs(folder: Path) -> list[Path]:
    return [d for d in _subdirs(folder) if list_images(d)]


def _as_labels(values: np.ndarray) -> np.ndarray:
    return (np.asarray(values).reshape(-1) != 0).astype(np.uint8)


def _video_number(name: str) -> int | None:
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else None


def count_frames(source: Path) -> int | None:
    """Frames in a frame folder (exact) or a video file (container header; None if unknown)."""
    source = Path(source)
    if source.is_dir():
        return len(list_images(source))
    cap = cv2.VideoCapture(str(source))
    try:
        if not cap.isOpened():
            return None
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    finally:
        cap.release()


# ------------------------------------------------------------------------------------------------
# datasets


class Dataset:
    """A dataset root in one of `LAYOUTS`; subclasses implement the two listings."""

    layout: str = ""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def train_videos(self) -> list[VideoItem]:
        raise NotImplementedError

    def test_videos(self) -> list[VideoItem]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, layout={self.layout!r})"


class ShanghaiTechDataset(Dataset):
    """`training/{videos,frames}`, `testing/{frames,videos}`, `testing/test_frame_mask/<vid>.npy`."""

    layout = "shanghaitech"

    def _split(self, split: str, with_labels: bool) -> list[VideoItem]:
        base = self.root / split
        sources: dict[str, Path] = {p.stem: p for p in _video_files(base / "videos")}
        sources.update({d.name: d for d in _frame_dirs(base / "frames")})  # frames win over videos
        items = []
        for name in sorted(sources):
            labels = None
            mask = base / "test_frame_mask" / f"{name}.npy"
            if with_labels and mask.is_file():
                labels = _as_labels(_load_mask(mask))
            box_file = base / "boxes" / f"{name}.json"
            items.append(VideoItem(name, sources[name], labels, box_file if box_file.is_file() else None))
        return items

    def train_videos(self) -> list[VideoItem]:
        return self._split("training", with_labels=False)

    def test_videos(self) -> list[VideoItem]:
        return self._split("testing", with_labels=True)


def load_avenue_mask(path: Path) -> np.ndarray:
    """`<n>_label.mat` with `volLabel` (1 x T cell of H x W masks) -> uint8 `(T,)`."""
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a broken file
        raise LpgbError(f"cannot read {path}: expected a MATLAB file with volLabel ({exc})") from None
    if "volLabel" not in data:
        raise LpgbError(f"{path} has no volLabel: expected a CUHK Avenue testing_label_mask file")
    cells = np.asarray(data["volLabel"], dtype=object).reshape(-1)
    return np.array([int(np.any(np.asarray(m))) for m in cells], dtype=np.uint8)


class AvenueDataset(Dataset):
    """`training_videos/*.avi`, `testing_videos/*.avi`, `testing_label_mask/<n>_label.mat`."""

    layout = "avenue"

    def _mask_for(self, name: str) -> Path | None:
        folder = self.root / "testing_label_mask"
        number = _video_number(name)
        candidates = [folder / f"{name}_label.mat"]
        if number is not None:
            candidates.append(folder / f"{number}_label.mat")
        return next((c for c in candidates if c.is_file()), None)

    def _sources(self, folder: Path) -> list[Path]:
        return _video_files(folder) + _frame_dirs(folder)

    def train_videos(self) -> list[VideoItem]:
        return [VideoItem(p.stem, p) for p in self._sources(self.root / "training_videos")]

    def test_videos(self) -> list[VideoItem]:
        items = []
        for p in self._sources(self.root / "testing_videos"):
            mask = self._mask_for(p.stem)
            items.append(VideoItem(p.stem, p, load_avenue_mask(mask) if mask else None))
        return items


def load_ucsd_gt(folder: Path) -> np.ndarray:
    """`TestNNN_gt/*.bmp` pixel masks -> uint8 `(T,)`, 1 where a mask has any nonzero pixel."""
    masks = list_images(folder)
    labels = np.zeros(len(masks), dtype=np.uint8)
    for i, path in enumerate(masks):
        mask = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise LpgbError(f"cannot decode mask {path}: expected a bmp/png ground-truth image")
        labels[i] = int(np.any(mask))
    return labels


class UCSDDataset(Dataset):
    """UCSD Ped1/Ped2 as distributed: `Train/TrainNNN/*.tif`, `Test/TestNNN/*.tif`, `Test/TestNNN_gt/*.bmp`."""

    layout = "ucsd"

    def _videos(self, split: str, with_labels: bool) -> list[VideoItem]:
        items = []
        for d in _frame_dirs(self.root / split):
            if d.name.endswith("_gt"):
                continue
            gt = d.with_name(f"{d.name}_gt")
            labels = load_ucsd_gt(gt) if with_labels and gt.is_dir() else None
            items.append(VideoItem(d.name, d, labels))
        return items

    def train_videos(self) -> list[VideoItem]:
        return self._videos("Train", with_labels=False)

    def test_videos(self) -> list[VideoItem]:
        return self._videos("Test", with_labels=True)


class FolderDataset(Dataset):
    """A plain folder of videos and/or frame folders (or one frame folder): one unlabelled set.

    Both `train_videos()` and `test_videos()` return the same items, all with `labels=None`.
    """

    layout = "folder"

    def _items(self) -> list[VideoItem]:
        items = [VideoItem(p.stem, p) for p in _video_files(self.root)]
        items += [VideoItem(d.name, d) for d in _frame_dirs(self.root)]
        if not items and list_images(self.root):
            items = [VideoItem(self.root.name, self.root)]
        return sorted(items, key=lambda item: item.name)

    def train_videos(self) -> list[VideoItem]:
        return self._items()

    def test_videos(self) -> list[VideoItem]:
        return self._items()


def detect_layout(root: Path) -> str:
    """Name of the layout at `root` (one of `LAYOUTS`); LpgbError listing the expected ones."""
    root = Path(root)
    if not root.exists():
        raise LpgbError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise LpgbError(f"{root} is not a folder: expected a dataset root in one of: {EXPECTED_LAYOUTS}")
    if (root / "training").is_dir() or (root / "testing").is_dir():
        return "shanghaitech"
    if (root / "training_videos").is_dir() or (root / "testing_videos").is_dir():
        return "avenue"
    if (root / "Train").is_dir() or (root / "Test").is_dir():
        return "ucsd"
    if _video_files(root) or _frame_dirs(root) or list_images(root):
        return "folder"
    raise LpgbError(f"{root} is not a dataset: expected one of {EXPECTED_LAYOUTS}")


_CLASSES: dict[str, Callable[[Path], Dataset]] = {
    "shanghaitech": ShanghaiTechDataset, "avenue": AvenueDataset, "ucsd": UCSDDataset, "folder": FolderDataset,
}


def open_dataset(root: str | Path) -> Dataset:
    """Open the dataset at `root`, auto-detecting its layout."""
    root = Path(root).expanduser()
    return _CLASSES[detect_layout(root)](root)


# ------------------------------------------------------------------------------------------------
# check


NPY_MAGIC = b"\x93NUMPY"  # the first bytes of every file numpy.save writes


def load_npy(path: Path, what: str) -> np.ndarray:
    """The array in a .npy file (never a pickle); LpgbError naming `what` and saying what the file is
    instead (a text file, another format, a pickled object array)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise LpgbError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not head.startswith(NPY_MAGIC):
        kind = "a text file" if head and _looks_like_text(head) else "not a .npy file"
        raise LpgbError(f"{what} {path} is {kind}: expected a .npy array of per-frame 0/1 values "
                        "(write one with numpy.save(path, values))")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise LpgbError(f"{what} {path} is not a numeric .npy array ({str(exc).splitlines()[0]})") from None


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def _load_mask(path: Path) -> np.ndarray:
    return load_npy(path, "frame mask")


def _decoded_frames(source: Path) -> tuple[int, str]:
    """Frames that really decode (every one is read) and the first decoding problem ("" if none)."""
    from lpgb.runtime.video import open_source

    n = 0
    try:
        with open_source(source) as src:
            for _ in src:
                n += 1
    except LpgbError as exc:
        return n, str(exc)
    return n, ""


def _check_split(title: str, items: list[VideoItem], problems: list[str]) -> list[str]:
    frames = labelled = abnormal = 0
    for item in items:
        n, problem = _decoded_frames(item.source)
        listed = count_frames(item.source)
        if problem:
            problems.append(f"{title} video {item.name}: {problem}")
        elif n == 0:
            problems.append(f"{title} video {item.name}: no readable frames in {item.source}")
        elif listed and n < listed:
            problems.append(f"{title} video {item.name}: {n} of {listed} frames decode (truncated or damaged?)")
        frames += n
        if item.labels is not None:
            labelled += 1
            abnormal += int(item.labels.sum())
            if n and len(item.labels) != n:
                problems.append(f"{title} video {item.name}: {len(item.labels)} labels but {n} frames")
    lines = [f"{title}: {len(items)} videos, {frames} frames"]
    if title == "test":
        lines.append(f"  labelled videos: {labelled}/{len(items)}, abnormal frames: {abnormal}")
    return lines


def check_dataset(root: str | Path) -> str:
    """A multi-line human report: layout, videos and frames per split, labels, and problems."""
    return dataset_report(root)[0]


def dataset_report(root: str | Path) -> tuple[str, list[str]]:
    """`check_dataset`'s report and its problems (one line each; empty when none)."""
    ds = open_dataset(root)
    problems: list[str] = []
    train, test = ds.train_videos(), ds.test_videos()
    lines = [f"dataset: {ds.root}", f"layout: {ds.layout}"]
    lines += _check_split("train", train, problems)
    lines += _check_split("test", test, problems)
    if ds.layout != "folder" and not train:
        problems.append("no training videos found")
    if ds.layout != "folder" and not test:
        problems.append("no test videos found")
    if ds.layout == "folder":
        lines.append("note: plain folder, no labels; train and test are the same videos")
    lines.append(f"problems: {len(problems)}" if problems else "problems: none")
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines), problems


__all__ = ["VideoItem", "Dataset", "ShanghaiTechDataset", "AvenueDataset", "UCSDDataset", "FolderDataset",
           "open_dataset", "detect_layout", "check_dataset", "dataset_report", "load_npy", "count_frames", "load_avenue_mask", "load_ucsd_gt",
           "LAYOUTS", "IMAGE_SUFFIXES"]


DATA_RECORD = "data.json"  # written by lpgb-train in the run folder: {"data": "/abs/path/of/the/dataset"}


def recorded_dataset(run_dir: Path) -> Optional[Path]:
    """The dataset a run was trained on (RUN/data.json, also found from RUN/export), None when not
    recorded; LpgbError for an unreadable record or a dataset that no longer exists."""
    import json

    for folder in (Path(run_dir), Path(run_dir).parent):
        record = folder / DATA_RECORD
        if not record.is_file():
            continue
        try:
            path = Path(json.loads(record.read_text())["data"])
        except (json.JSONDecodeError, KeyError, TypeError, OSError):
            raise LpgbError(f"{record} is not a valid data record (expected {{\"data\": path}})") from None
        if not path.exists():
            raise LpgbError(f"the training data recorded in {record} ({path}) no longer exists; pass --data")
        return path
    return None
