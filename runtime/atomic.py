"""Atomic writes: write to a temporary file in the same folder, then rename over the target.

A write that fails because the disk (or the user's quota) is full is one line, `LpgbError("disk full
while writing PATH ...")`, whatever library was writing (numpy says "8183808 requested and 2084736
written", torch "file write failed"); the temporary file is removed and the target left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lpgb.runtime.errors import LpgbError


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically.

    `suffix` defaults to the target's suffix so writers that pick a format from it (cv2, numpy)
    behave the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc, path.parent):
            raise disk_full_error(path) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile / np.save on a short write
LOW_SPACE = 64 << 20  # a library's bare "write failed" with less than this free is taken as a full disk


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """True when `exc` (raised while writing into `folder`) means no space was left: ENOSPC / EDQUOT / EFBIG,
    numpy's short-write message, or a library's write failure while the file system is (nearly) full."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    if isinstance(exc, OSError) and SHORT_WRITE.search(text):
        return True
    return ("write failed" in text or "unexpected pos" in text) and free_bytes(folder) < LOW_SPACE


def free_bytes(folder: Path) -> int:
    """Bytes this user may still write on `folder`'s file system (a large number when unknown)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62


def disk_full_error(path: Path) -> LpgbError:
    """The one-line error for a full disk while writing `path`."""
    return LpgbError(f"disk full while writing {path} ({free_bytes(Path(path).parent) >> 20} MiB left on its "
                     "file system): free space there and rerun")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def prepare_output_dir(path: Path, overwrite: bool) -> Path:
    """Create `path`; refuse a non-empty existing folder unless `overwrite` is set."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LpgbError(f"output {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise LpgbError(f"output folder {path} is not empty; pass --overwrite to replace its files")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class NewFolder:
    """A folder as it was before this process filled it, so that a failure can undo exactly what it made.

    `made` is the topmost folder of `path` (itself or a parent) that did not exist; `was_empty` says
    that `path` existed with nothing in it. A folder that had content is never touched by `undo`.
    """

    path: Path
    made: Path | None
    was_empty: bool

    @classmethod
    def before(cls, path: Path) -> "NewFolder":
        path = Path(path).absolute()
        if path.exists():
            return cls(path, None, path.is_dir() and not any(path.iterdir()))
        made = path
        while not made.parent.exists():
            made = made.parent
        return cls(path, made, False)

    @property
    def ours(self) -> bool:
        """True when everything in `path` was made by this process."""
        return self.made is not None or self.was_empty

    def undo(self) -> None:
        """Remove `made` with its contents, or empty a folder that existed empty; nothing otherwise."""
        if self.made is not None:
            shutil.rmtree(self.made, ignore_errors=True)
        elif self.was_empty and self.path.is_dir():
            for entry in list(self.path.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def move_in(staging: Path, target: Path, names: list[str]) -> None:
    """Move `names` from `staging` into `target` in order (one rename each, same file system)."""
    for name in names:
        os.replace(Path(staging) / name, Path(target) / name)
