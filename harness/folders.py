"""Output folders the harness writes into: one command at a time, a writability probe that cannot be
redirected, and no write that follows a symlink out of the folder.

- The lock is `fcntl.flock` on `.harness.lock` inside the folder: the kernel drops it when the
  holder exits or crashes, so a stale file never blocks anyone; the file keeps the holder's pid and
  command line so the second command can say who holds it. The file is never deleted (deleting it
  would let two commands lock two different files of the same name).
- The probe is a `tempfile.mkstemp` file (O_EXCL, unpredictable name), so a symlink planted under a
  fixed probe name cannot redirect the write, and concurrent commands never collide on it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import tempfile
from pathlib import Path

from harness.errors import HarnessError

LOCK_FILE = ".harness.lock"
PROBE_BYTES = 65536  # a small real write: fails on a full or read-only disk


class FolderLock:
    """An exclusive lock on an output folder for the life of one command (a context manager)."""

    def __init__(self, folder: str | Path, what: str = "output folder", lock_file: str | Path | None = None):
        """lock_file: where the lock lives when not inside the folder (a command that replaces the
        whole folder at the end, as quantize does, locks a file beside it, and removes it on close)."""
        self.folder = Path(folder)
        self._fd = None
        path = Path(lock_file) if lock_file is not None else self.folder / LOCK_FILE
        self._remove = path if lock_file is not None else None
        if path.is_symlink():
            raise HarnessError(f"{what} {self.folder}: {path.name} is a symlink; refusing to follow it")
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise HarnessError(f"{what} {self.folder} is not writable ({exc.strerror or exc})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if self._remove is not None and not _same_file(self._fd, path):
                # the holder removed it between our open and our flock: a new holder may lock a new file
                raise BlockingIOError(errno.EWOULDBLOCK, "lock file replaced")
        except OSError as exc:
            holder = _read_holder(self._fd)
            os.close(self._fd)
            self._fd = None
            self._remove = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise HarnessError(f"{what} {self.folder} is in use by another harness command ({holder}); "
                                   "wait for it to finish or choose another --out") from None
            raise HarnessError(f"{what} {self.folder}: cannot lock it ({exc.strerror or exc})") from None
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"pid {os.getpid()}: {' '.join(['harness', *sys.argv[1:]])[:300]}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the note (e.g. a full disk; the probe reports that)

    def close(self) -> None:
        if self._fd is not None:
            if self._remove is not None:  # unlinked while still locked, so nobody locks a file we delete
                self._remove.unlink(missing_ok=True)
                self._remove = None
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except OSError:
        return False


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "pid unknown"


def probe_writable(folder: str | Path, what: str = "output folder") -> None:
    """Create the folder and write a small unpredictable temp file in it (then remove it)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:  # a buffered write: a short write is retried, then ENOSPC
                handle.write(b"\0" * PROBE_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            os.unlink(name)
    except OSError as exc:
        raise HarnessError(f"{what} {folder} is not writable ({exc.strerror or exc})") from None


def safe_target(folder: str | Path, name: str, what: str = "output folder") -> Path:
    """folder/name, refused when it is a symlink or would resolve outside the folder (a name with
    separators or '..'): writes never follow a link out of --out."""
    folder = Path(folder)
    target = folder / name
    if target.is_symlink():
        raise HarnessError(f"{what} {folder}: {name} is a symlink (to {os.readlink(target)}); "
                           "refusing to write through it: remove it or choose another --out")
    if not target.resolve().is_relative_to(folder.resolve()):
        raise HarnessError(f"{what} {folder}: {name!r} would be written outside the folder; refused")
    return target


def plain_name(value: str, what: str) -> str:
    """A name that must stay one entry inside its folder: no separators, no '..', not absolute."""
    text = str(value)
    if (not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text
            or os.path.isabs(text)):
        raise HarnessError(f"{what} {text!r}: expected a plain file or folder name (no path separators or '..')")
    return text


def cache_root() -> Path:
    """$HARNESS_CACHE, else $XDG_CACHE_HOME/harness, else ~/.cache/harness."""
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "harness"
