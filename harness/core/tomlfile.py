"""Reading the TOML files users hand us (profiles, target settings, tool configurations)."""

from __future__ import annotations

import tomllib

from harness.core.errors import HarnessError


def read_toml(source, where: str) -> dict:
    """Parse a TOML file (a Path, or a packaged resource with read_text); a malformed or binary file is
    one line starting with `where` (the file as the user named it: "profile x.toml", "--tool-config f")."""
    try:
        return tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{where}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise HarnessError(f"{where}: not a text TOML file") from None
