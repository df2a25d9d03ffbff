"""Files written so that a reader never sees half of one: a temporary file in the same folder,
flushed to disk, then renamed over the target."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, (0o666 & ~_umask()) if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))




def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    from harness.errors import HarnessError

    try:
        write()
    except OSError as exc:
        raise HarnessError(f"cannot write {path} ({exc.strerror or exc}); files written before it are complete, "
                           "the rest were not written") from None
