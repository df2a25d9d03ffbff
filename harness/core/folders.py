"""Output folders the harness writes into: one command at a time, a writability probe that cannot be
redirected, no write that follows a symlink out of the folder, and a manifest of what it wrote.

- Every writer (run, demo, decode, preprocess, emulate, quantize, sensitivity) opens its --out as an
  `OutputFolder`: the same probe, the same lock (always inside the folder) and the same manifest.
- The manifest `.harness-manifest.jsonl` lists, one JSON line each, every file and folder the harness
  wrote there, announced before the write (harness.core.fileio.announce), so an interrupted command is
  covered too. `--overwrite` removes only what it lists: never an input, a user's file, or a folder
  the harness did not make. A write that would replace a file the manifest does not list, or go
  through a symlinked folder, is refused before it happens.

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
import json
import os
import sys
import tempfile
from pathlib import Path

from harness.core.errors import HarnessError

LOCK_FILE = ".harness.lock"
MANIFEST_FILE = ".harness-manifest.jsonl"
OWN_FILES = (LOCK_FILE, MANIFEST_FILE)  # the folder's bookkeeping: never listed, never removed
PROBE_BYTES = 65536  # a small real write: fails on a full or read-only disk


class FolderLock:
    """An exclusive lock on an output folder for the life of one command (a context manager)."""

    def __init__(self, folder: str | Path, what: str = "output folder"):
        self.folder = Path(folder)
        self._fd = None
        path = self.folder / LOCK_FILE
        if path.is_symlink():
            raise HarnessError(f"{what} {self.folder}: {path.name} is a symlink; refusing to follow it")
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise HarnessError(f"{what} {self.folder} is not writable ({exc.strerror or exc})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(self._fd)
            os.close(self._fd)
            self._fd = None
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
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except BaseException:  # noqa: S110 - a second Ctrl-C during interpreter exit: the kernel drops the lock
            pass


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


class OutputFolder:
    """The --out of one command: created, probed, locked (inside), and watched: each file or folder
    the harness writes in it is listed in the manifest first (see the module docstring)."""

    def __init__(self, folder: str | Path, what: str = "output folder"):
        self.path = Path(folder)
        self.what = what
        if self.path.exists() and not self.path.is_dir():
            raise HarnessError(f"{what} {self.path}: exists and is not a folder")
        probe_writable(self.path, what)
        self.lock = FolderLock(self.path, what)
        self._root = os.path.abspath(self.path)
        self._manifest = self.path / MANIFEST_FILE
        try:
            self.listed: dict[str, str] = self._read_manifest()
        except BaseException:
            self.lock.close()
            raise
        from harness.core.fileio import watch_writes

        watch_writes(self._saw)

    def close(self) -> None:
        from harness.core.fileio import unwatch_writes

        unwatch_writes(self._saw)
        self.lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ what is in the folder

    def entries(self) -> list[Path]:
        """Everything in the folder but its bookkeeping files."""
        return sorted(p for p in self.path.iterdir() if p.name not in OWN_FILES)

    def foreign(self) -> list[Path]:
        """Entries the harness did not write (a folder counts as its own when the manifest lists it)."""
        return [p for p in self.entries() if p.name not in self.listed]

    def adopt(self, name: str) -> None:
        """List an existing file as the harness's own: a file the command has just read and recognised
        as its own output (a results.json with rows, written before manifests existed)."""
        self._list(name, "file")

    def clear(self) -> list[str]:
        """--overwrite: remove every listed file, then every listed folder left empty; everything else
        stays. Returns the names removed."""
        removed = []
        files = [n for n, kind in self.listed.items() if kind == "file"]
        dirs = sorted((n for n, kind in self.listed.items() if kind == "dir"), key=lambda n: -n.count("/"))
        for name in files:
            path = self.path / name
            if self._inside_without_links(name) and path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(name)
        for name in dirs:
            path = self.path / name
            if self._inside_without_links(name) and path.is_dir() and not path.is_symlink():
                try:
                    path.rmdir()  # only when empty: a user's file put inside keeps the folder
                    removed.append(name)
                except OSError:
                    continue
        kept = {n: k for n, k in self.listed.items() if (self.path / n).exists() or (self.path / n).is_symlink()}
        self.listed = kept
        from harness.core.fileio import atomic_write_text

        atomic_write_text(self._manifest, "".join(json.dumps({"name": n, "kind": k}) + "\n" for n, k in kept.items()))
        return removed

    # ------------------------------------------------------------------ the watcher

    def _relative(self, path: Path) -> str | None:
        """path relative to the folder, lexically (links are not resolved); None when outside."""
        absolute = os.path.abspath(path)
        if absolute == self._root or not absolute.startswith(self._root.rstrip(os.sep) + os.sep):
            return None
        return os.path.relpath(absolute, self._root).replace(os.sep, "/")

    def _inside_without_links(self, name: str) -> bool:
        parts = name.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return False
        probe = self.path
        for part in parts[:-1]:
            probe = probe / part
            if probe.is_symlink():
                return False
        return True

    def _saw(self, path: Path, kind: str) -> None:
        if self.lock._fd is None:  # closed (or never closed, and the lock released): no longer ours
            return
        name = self._relative(path)
        if name is None or name.rsplit("/", 1)[-1] in OWN_FILES:  # ours, or a nested output folder's own
            return
        parent = self.path
        for part in name.split("/")[:-1]:
            parent = parent / part
            if parent.is_symlink():
                raise HarnessError(f"{self.what} {self.path}: {parent.relative_to(self.path)} is a symlink "
                                   f"(to {os.readlink(parent)}); refusing to write through it: remove it or "
                                   "choose another folder")
        if name in self.listed:
            return
        target = self.path / name
        if kind == "file" and (target.exists() or target.is_symlink()) and not name.startswith(".staging-"):
            raise HarnessError(f"{self.what} {self.path}: {name} exists and was not written by the harness; "
                               "refusing to replace it: move it away or choose another folder")
        self._list(name, kind)

    def _list(self, name: str, kind: str) -> None:
        self.listed[name] = kind
        try:
            with open(self._manifest, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"name": name, "kind": kind}) + "\n")
                handle.flush()
        except OSError as exc:
            raise HarnessError(f"cannot write {self._manifest} ({exc.strerror or exc})") from None

    def _read_manifest(self) -> dict[str, str]:
        if self._manifest.is_symlink():
            raise HarnessError(f"{self.what} {self.path}: {MANIFEST_FILE} is a symlink; refusing to follow it")
        try:
            text = self._manifest.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise HarnessError(f"{self.what} {self.path}: cannot read {MANIFEST_FILE} ({exc.strerror or exc})") from None
        listed = {}
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                name, kind = str(entry["name"]), str(entry["kind"])
            except (ValueError, TypeError, KeyError):
                continue  # a torn last line (killed while appending): that write had not started
            if kind in ("file", "dir") and self._inside_without_links(name):
                listed[name] = kind
        return listed
