"""What a command wrote into a folder, so that `--overwrite` replaces exactly that and nothing else.

`OUT/.lpgb-manifest.json` lists, in one section per command (`lpgb-run`, `lpgb-demo`,
`lpgb-data synth`), the top-level entries it made in OUT and every file under them. A later `--overwrite` replaces an entry only
when the manifest of the same command lists it and every file now under it: a file of the same name
that the command did not write (the user's own `data/`, an input video called `video.mp4`) is
refused in one line, never deleted. Files in OUT that the command does not write are never touched.

Also here: `FolderLock` (one writer per folder: a lock file holding the owner's pid, taken over when
that process is gone) and `stale_folders` (hidden staging folders left by a killed process).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from lpgb.runtime.atomic import write_text_atomic
from lpgb.runtime.errors import LpgbError

MANIFEST = ".lpgb-manifest.json"
LOCK = ".lpgb-lock"
FRESH_LOCK_S = 5.0  # a lock file without a pid yet is being created by a live process for this long
MANIFEST_VERSION = 1
ALL = "/**"  # `NAME/**` in a manifest's files: everything under folder NAME


@dataclass(frozen=True)
class Manifest:
    """`command` wrote `entries` (top-level names in the folder); `files` are every file under them
    (relative POSIX paths; a plain-file entry lists itself; `NAME/**` claims all of folder NAME, what a
    command records while it is still writing there)."""

    command: str
    entries: tuple[str, ...]
    files: tuple[str, ...]

    @classmethod
    def of(cls, folder: Path, command: str, entries: Iterable[str]) -> "Manifest":
        """The manifest of `entries` as they are now in `folder` (absent ones are left out)."""
        folder = Path(folder)
        present = sorted(n for n in set(entries) if _exists(folder / n))
        return cls(command, tuple(present), tuple(sorted(f for n in present for f in _files(folder, n))))

    @classmethod
    def claim(cls, command: str, entries: Iterable[str]) -> "Manifest":
        """Everything under `entries` (written while the command runs, replaced by `of` when it is done)."""
        names = tuple(sorted(set(entries)))
        return cls(command, names, tuple(f"{n}{ALL}" for n in names))

    @classmethod
    def read(cls, folder: Path, command: str) -> Optional["Manifest"]:
        """`command`'s manifest in `folder`; None when there is none or it cannot be read (nothing is owned)."""
        try:
            data = _sections(folder)[command]
            return cls(command, tuple(map(str, data["entries"])), tuple(map(str, data["files"])))
        except (KeyError, TypeError):
            return None

    def write(self, folder: Path) -> None:
        """Record this manifest in `folder` (other commands' manifests there are kept)."""
        sections = _sections(folder)
        sections[self.command] = {"entries": list(self.entries), "files": list(self.files)}
        write_text_atomic(Path(folder) / MANIFEST, json.dumps({"version": MANIFEST_VERSION, **sections}, indent=1))

    def remove(self, folder: Path) -> None:
        """Forget this command's manifest in `folder` (the file goes when no other command has one)."""
        sections = _sections(folder)
        sections.pop(self.command, None)
        if sections:
            write_text_atomic(Path(folder) / MANIFEST, json.dumps({"version": MANIFEST_VERSION, **sections}, indent=1))
        else:
            (Path(folder) / MANIFEST).unlink(missing_ok=True)

    def merged(self, other: "Manifest") -> "Manifest":
        """Both manifests' entries and files (while outputs are being swapped, either may be on disk)."""
        return Manifest(self.command, tuple(sorted({*self.entries, *other.entries})),
                        tuple(sorted({*self.files, *other.files})))


def _sections(folder: Path) -> dict:
    """{command: {"entries", "files"}} of the manifest file in `folder` ({} when absent or unreadable)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if k != "version" and isinstance(v, dict)} if isinstance(data, dict) else {}


def owned_entries(folder: Path, command: str, names: Iterable[str]) -> list[str]:
    """Which of `names` exist in `folder` and were written there by `command` (to replace them).

    LpgbError naming the first that exists but is not the command's own: not listed in the folder's
    manifest of `command`, or holding a file the manifest does not list."""
    folder = Path(folder)
    present = sorted(n for n in set(names) if _exists(folder / n))
    if not present:
        return []
    manifest = Manifest.read(folder, command)
    listed = set(manifest.files) if manifest is not None else set()
    entries = set(manifest.entries) if manifest is not None else set()
    for name in present:
        whole = f"{name}{ALL}" in listed
        foreign = [f for f in _files(folder, name) if f not in listed and not whole] if name in entries else [name]
        if foreign:
            raise LpgbError(f"{folder / foreign[0]} was not written by {command} (not in {folder / MANIFEST}); "
                            "it is never replaced: move it away or choose another output folder")
    return present


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _files(folder: Path, name: str) -> list[str]:
    """Every file (or link, or empty folder) under `folder/name`, relative to `folder`."""
    top = folder / name
    if top.is_symlink() or not top.is_dir():
        return [name]
    found = []
    for root, dirs, files in os.walk(top):
        rel = Path(root).relative_to(folder)
        found += [(rel / f).as_posix() for f in files]
        found += [(rel / d).as_posix() for d in dirs if (Path(root) / d).is_symlink()]
        if not dirs and not files:
            found.append(rel.as_posix() + "/")
    return found


# -- process ids ------------------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (also one of another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def stale_folders(folder: Path, prefix: str) -> tuple[list[Path], list[Path]]:
    """Hidden folders `prefix<pid>` in `folder`: (those whose process is gone, those of a live process
    other than this one)."""
    stale, live = [], []
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    with contextlib.suppress(OSError):
        for path in sorted(Path(folder).iterdir()):
            m = pattern.match(path.name)
            if m is None or not path.is_dir() or path.is_symlink() or int(m.group(1)) == os.getpid():
                continue
            (live if pid_alive(int(m.group(1))) else stale).append(path)
    return stale, live


# -- one writer per folder ----------------------------------------------------------------------------------
class FolderLock:
    """`folder/.lpgb-lock`, created exclusively with this process's id; a lock whose process is gone (kill -9)
    is taken over. A second writer while the owner lives gets an LpgbError naming it. `release()` removes it."""

    def __init__(self, folder: Path, command: str) -> None:
        self.path = Path(folder) / LOCK
        self.command = command
        self.held = False

    def acquire(self) -> "FolderLock":
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _lock_owner(self.path)
                if (owner is not None and pid_alive(owner)) or (owner is None and _age(self.path) < FRESH_LOCK_S):
                    raise LpgbError(f"{self.path.parent} is being written by another lpgb command (pid {owner}); "
                                    f"let it finish or give {self.command} another output folder") from None
                _take_stale(self.path, owner)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise LpgbError(f"cannot lock {self.path.parent}: its lock file {self.path} keeps changing")

    def release(self) -> None:
        if self.held and _lock_owner(self.path) == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _lock_owner(path: Path) -> Optional[int]:
    """The pid in a lock file; None when it is unreadable or empty (a writer killed while creating it)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _take_stale(path: Path, owner: Optional[int]) -> None:
    """Remove a stale lock, unless another process replaced it meanwhile (then the next try sees that one)."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if _lock_owner(aside) != owner:  # a live writer's fresh lock was moved: put it back
        with contextlib.suppress(OSError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


__all__ = ["MANIFEST", "LOCK", "ALL", "Manifest", "owned_entries", "FolderLock", "pid_alive", "stale_folders"]
