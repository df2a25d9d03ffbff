"""The progress interface long work reports to (the CLI shows rich bars; library use shows nothing)."""

from __future__ import annotations

from contextlib import nullcontext


class NullProgress:
    """Progress sink used when nobody watches (tests, library use).

    The interface: `with progress.task(description, total) as advance: advance(n)` and
    `progress.message(text)`."""

    def task(self, description: str, total: int):
        return nullcontext(lambda n=1: None)

    def message(self, text: str) -> None:
        pass
