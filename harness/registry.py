"""Name -> implementation tables for targets, decoders and file-based tools (after timm's registry).

Each table is one literal mapping of names to "module:attribute" strings, so listing the names
imports nothing (no runtime is loaded to print `harness targets`) and importing an implementation
module changes no global state. Adding a target, decoder family or file tool is one new module plus
one line in its table.
"""

from __future__ import annotations

import importlib

from harness.config import did_you_mean
from harness.errors import HarnessError


class Registry:
    """A lazy name -> object table; `get(name)` imports the implementing module on first use."""

    def __init__(self, what: str, entries: dict[str, str]):
        self.what = what
        self._entries = dict(entries)
        self._loaded: dict[str, object] = {}

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def get(self, name: str):
        if name not in self._entries:
            raise HarnessError(f"unknown {self.what} {name!r}{did_you_mean(name, self._entries)}; "
                               f"known {self.what}s: {', '.join(self.names())}")
        if name not in self._loaded:
            module_name, _, attribute = self._entries[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module_name), attribute)
        return self._loaded[name]

    def items(self):
        return [(name, self.get(name)) for name in self.names()]

    def location(self, name: str) -> str:
        """The "module:attribute" an entry points at (for docs and contract tests)."""
        return self._entries[name]
