"""User-facing errors: the CLI prints their message as one line, with no traceback."""

from __future__ import annotations


class HarnessError(Exception):
    """A problem the user can fix (bad path, bad file, mismatched model/profile...)."""


class TargetUnavailable(HarnessError):
    """A target cannot run on this machine (runtime not installed, no GPU...)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (runtimes raise pages of C++ context),
    cut to `limit` characters; the exception's type name when the message is empty."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__


class ImageError(HarnessError):
    """One image cannot be used (missing, truncated, undecodable): `path` and a one-line `reason`,
    so a run that skips bad images records them without parsing messages."""

    def __init__(self, path, reason: str):
        super().__init__(f"image {path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def skipped(self) -> SkippedImage:
        return SkippedImage(self.path, self.reason)


class SkippedImage(str):
    """An image left out with --skip-bad-images, as a row lists it ('file name: reason'), keeping
    its full `path` and `reason` so nothing downstream parses the text."""

    path: str
    reason: str

    def __new__(cls, path, reason: str):
        from pathlib import Path

        entry = super().__new__(cls, f"{Path(str(path)).name}: {reason}")
        entry.path, entry.reason = str(path), reason
        return entry

    def __reduce__(self):  # copy/deepcopy/pickle (dataclasses.asdict deep-copies rows) rebuild it whole
        return (SkippedImage, (self.path, self.reason))
