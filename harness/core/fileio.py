"""Files written so that a reader never sees half of one: a temporary file in the same folder,
flushed to disk, then renamed over the target.

Every file and folder the harness makes goes through `atomic_write_bytes` or `make_dirs`, which first
announce it to the watchers (harness.core.folders.OutputFolder): that is how the output folder's manifest
learns what the harness wrote, and where a write into --out that would replace a user's file or
follow a link is refused, in one place for every writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

#: callables(path, kind) told of each file ("file") or folder ("dir") before it is written; they may
#: raise a HarnessError to refuse the write (registered by harness.core.folders.OutputFolder)
_WATCHERS: list = []


def watch_writes(watcher) -> None:
    """Register a watcher; a bound method is held weakly, so a folder object dropped without close()
    neither stays alive (holding its lock) nor keeps watching."""
    import weakref

    _WATCHERS.append(weakref.WeakMethod(watcher) if hasattr(watcher, "__self__") else (lambda: watcher))


def unwatch_writes(watcher) -> None:
    _WATCHERS[:] = [ref for ref in _WATCHERS if ref() is not None and ref() != watcher]


def announce(path: str | Path, kind: str = "file") -> None:
    """Tell the watchers a file or folder is about to be written (writers that cannot use
    atomic_write_bytes, such as an append-only log or a runtime's own save, call this first)."""
    for ref in list(_WATCHERS):
        watcher = ref()
        if watcher is None:
            if ref in _WATCHERS:
                _WATCHERS.remove(ref)
            continue
        watcher(Path(path), kind)


def make_dirs(path: str | Path) -> Path:
    """mkdir -p, announcing each folder it creates (so --overwrite may remove them again)."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        announce(folder, "dir")
        folder.mkdir(exist_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None, fsync: bool = True) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file
    (and a full disk leaves no truncated one: the temporary file is removed). The rename replaces
    a symlink at `path` rather than writing through it.
    mode: the file's permissions (default: an ordinary file's, 0666 less the umask; mkstemp makes 0600).
    fsync=False for bulk files whose completeness a later fsync'ed file vouches for (prep.json)."""
    path = Path(path)
    announce(path, "file")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, (0o666 & ~_umask()) if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write says which file (a full disk: one line naming it)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8; a file name that is not UTF-8 (a surrogate escape) is written escaped, not an error."""
    atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))


def save_figure(fig, path: Path, **savefig) -> None:
    """A matplotlib figure rendered in memory, then written atomically (never through a link)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig)
    atomic_write_bytes(path, buffer.getvalue())


def strict_json(data, **kwargs) -> str:
    """json.dumps that refuses NaN/Infinity (not JSON: other readers reject the file); a non-finite
    float is written as null, which every reader takes as 'no value'."""
    import json

    return json.dumps(_finite(data), allow_nan=False, **kwargs)


def _finite(value):
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(value) -> str:
    """sha256 of a JSON value in one canonical form (keys sorted, no spaces): a cache key that does not
    depend on dict order. (Profile and prep identities keep the encodings their stored hashes were made with.)"""
    return sha256_bytes(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (models are hashed into row identities and cache keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_or_fail(write, path) -> None:
    """Run a write; an OSError (a full disk, a vanished folder) becomes one line naming the file.
    Atomic writes leave no partial file behind, so what is on disk stays complete."""
    from harness.core.errors import HarnessError

    try:
        write()
    except OSError as exc:
        raise HarnessError(f"cannot write {path} ({exc.strerror or exc}); files written before it are complete, "
                           "the rest were not written") from None


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def regular_file_problem(path: str | Path) -> str | None:
    """Why a path is not a readable regular file (stat only: never opens, so never blocks)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found"
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        return f"unreadable ({getattr(exc, 'strerror', None) or exc})"
    return None if stat.S_ISREG(mode) else f"not a regular file ({file_kind(mode)})"


def input_file(path: str | Path, what: str) -> Path:
    """A file the user named as input (a model, annotations): one line when it is missing
    (`WHAT not found: PATH`) or not a regular file (a FIFO is never opened: reading would block)."""
    from harness.core.errors import HarnessError

    problem = regular_file_problem(path)
    if problem == "file not found":
        raise HarnessError(f"{what} not found: {path}")
    if problem:
        raise HarnessError(f"{what} {path}: {problem}")
    return Path(path)
