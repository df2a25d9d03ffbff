"""User-facing errors: the CLI prints their message as one line, with no traceback."""

from __future__ import annotations

import re


class HarnessError(Exception):
    """A problem the user can fix (bad path, bad file, mismatched model/profile...)."""


class TargetUnavailable(HarnessError):
    """A target cannot run on this machine (runtime not installed, no GPU...)."""


#: a line that only says where in a runtime's C++ sources an exception passed (OpenVINO writes one
#: per frame, "Exception from src/inference/src/cpp/core.cpp:84:"), never the reason
_SOURCE_LOCATION = re.compile(r"^(Exception from )?\S+\.(cpp|cc|hpp|h|c):\d+:?$")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message that says something (runtimes raise pages of C++
    context, and OpenVINO opens with source locations), cut to `limit` characters; the exception's
    type name when the message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if not _SOURCE_LOCATION.match(line):
            return line[:limit]
    return lines[0][:limit] if lines else type(exc).__name__


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
