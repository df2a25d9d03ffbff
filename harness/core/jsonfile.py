"""Reading the JSON files users hand us (annotations, results, sidecars, vendor summaries)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import HarnessError


def read_json_object(path: Path, label: str = "", expected: str = "a JSON object") -> dict:
    """Parse a JSON file that must hold an object; errors name the file (prefixed by label)."""
    where = f"{label} {path}" if label else str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{where}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise HarnessError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{where}: expected {expected}")
    return data
