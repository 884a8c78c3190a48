"""Frame sources: video files, frame folders, webcams and network streams behind one iterator.

Every source yields uint8 BGR frames `(H, W, 3)`; grayscale, 4-channel and 16-bit inputs are
converted here so nothing downstream has to care.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from lpgb.runtime.errors import LpgbError

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
VIDEO_SUFFIXES: tuple[str, ...] = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
STREAM_PREFIXES: tuple[str, ...] = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
DEFAULT_FOLDER_FPS = 25.0
STREAM_TIMEOUT_MS = 5000


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """Any decoded image -> contiguous uint8 BGR `(H, W, 3)`."""
    if frame.dtype != np.uint8:
        if np.issubdtype(frame.dtype, np.integer):
            shift = max(int(np.iinfo(frame.dtype).bits) - 8, 0)
            frame = (frame >> shift).astype(np.uint8) if shift else frame.astype(np.uint8)
        else:
            frame = np.clip(frame * (255.0 if frame.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    elif frame.ndim == 3 and frame.shape[2] == 1:
        frame = cv2.cvtColor(frame[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    elif frame.ndim != 3 or frame.shape[2] != 3:
        raise LpgbError(f"unsupported frame shape {frame.shape}: expected (H, W), (H, W, 3) or (H, W, 4)")
    return np.ascontiguousarray(frame)


def read_image(path: Path) -> np.ndarray:
    """Read one image file as uint8 BGR `(H, W, 3)`; LpgbError when it cannot be decoded."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise LpgbError(f"cannot read image {path}: {exc.strerror}") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise LpgbError(f"cannot decode image {path}: expected a readable jpg/png/tif/bmp file")
    return to_bgr(image)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files skipped)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def is_video_file(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() in VIDEO_SUFFIXES


class FrameSource:
    """Iterable of uint8 BGR frames `(H, W, 3)` with `.fps`, `.frame_count` (None for streams), `.name`.

    Use as a context manager or call `.close()`. Iterating a second time continues where the
    first iteration stopped (sources are streams, not sequences).
    """

    def __init__(self, name: str, fps: float, frame_count: int | None) -> None:
        self.name = name
        self.fps = float(fps)
        self.frame_count = frame_count

    def _frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._frames()

    def close(self) -> None:
        """Release the underlying reader (idempotent)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, fps={self.fps}, frame_count={self.frame_count})"


class FolderSource(FrameSource):
    """Frames from image files in one folder, in name order."""

    def __init__(self, folder: Path, fps: float = DEFAULT_FOLDER_FPS) -> None:
        self.files = list_images(folder)
        if not self.files:
            raise LpgbError(f"no images in {folder}: expected a folder of jpg/png/tif/bmp frames")
        super().__init__(Path(folder).name, fps, len(self.files))
        self._first: np.ndarray | None = read_image(self.files[0])
        self._next = 1

    def _frames(self) -> Iterator[np.ndarray]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while self._next < len(self.files):
            path = self.files[self._next]
            self._next += 1
            yield read_image(path)


class CaptureSource(FrameSource):
    """Frames from cv2.VideoCapture (file, webcam index or network URL)."""

    def __init__(self, cap: cv2.VideoCapture, name: str, is_stream: bool, what: str) -> None:
        if not cap.isOpened():
            cap.release()
            raise LpgbError(f"cannot open {what}: expected a readable video, camera or stream")
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise LpgbError(f"{what} has no decodable frames: expected a readable video, camera or stream")
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FOLDER_FPS
        count = None if is_stream else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
        super().__init__(name, fps, count)
        self._cap: cv2.VideoCapture | None = cap
        self._first: np.ndarray | None = to_bgr(frame)

    def _frames(self) -> Iterator[np.ndarray]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while self._cap is not None:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                return
            yield to_bgr(frame)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _open_stream(url: str) -> CaptureSource:
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
    cap = cv2.VideoCapture(url, cv2.CAP_ANY, params)
    return CaptureSource(cap, url, is_stream=True, what=f"stream {url}")


def _open_camera(index: int) -> CaptureSource:
    return CaptureSource(cv2.VideoCapture(index), f"camera{index}", is_stream=True, what=f"camera {index}")


def _open_file(path: Path) -> CaptureSource:
    if path.stat().st_size == 0:
        raise LpgbError(f"video {path} is empty (0 bytes): expected a readable video file")
    cap = cv2.VideoCapture(str(path))
    return CaptureSource(cap, path.stem, is_stream=False, what=f"video {path}")


def open_source(spec: str | Path) -> FrameSource:
    """Open a video file, a folder of frames, a webcam index ("0") or an rtsp/http URL.

    The first frame is read at open so a corrupt or empty input fails here with an LpgbError.
    """
    text = str(spec)
    if isinstance(spec, str) and text.lower().startswith(STREAM_PREFIXES):
        return _open_stream(text)
    if isinstance(spec, str) and text.strip().isdigit() and not Path(text).exists():
        return _open_camera(int(text))
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise LpgbError(f"{path} is a single image: expected a video file or a folder of frames")
        return _open_file(path)
    raise LpgbError(f"no such video, frame folder or camera: {spec}")


__all__ = ["FrameSource", "FolderSource", "CaptureSource", "open_source", "read_image", "list_images",
           "to_bgr", "is_video_file", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES"]
