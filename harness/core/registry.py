"""Name -> implementation tables for targets, decoders and file-based tools (after timm's registry).

Each table starts as one literal mapping of names to "module:attribute" strings, so listing the names
imports nothing and getting one imports only its module (each runtime is imported on first use, so
`harness targets` loads no runtime). Adding a target, decoder family or file tool is one new module
plus one line in its table; register() adds one at run time (a plugin, a test's own target).
"""

from __future__ import annotations

import importlib

from harness.core.config import did_you_mean
from harness.core.errors import HarnessError


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

    def register(self, name: str, entry) -> None:
        """Add an entry at run time (a plugin, or a test's own target): an object, or "module:attribute"."""
        if name in self._entries:
            raise HarnessError(f"{self.what} {name!r} is already registered")
        if isinstance(entry, str):
            self._entries[name] = entry
        else:
            self._entries[name] = f"{getattr(entry, '__module__', '?')}:{getattr(entry, '__qualname__', name)}"
            self._loaded[name] = entry

    def unregister(self, name: str) -> None:
        """Remove an entry added with register()."""
        self._entries.pop(name, None)
        self._loaded.pop(name, None)

    def location(self, name: str) -> str:
        """The "module:attribute" an entry points at (for docs and contract tests)."""
        return self._entries[name]
