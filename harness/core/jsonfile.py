"""Reading the JSON files users hand us (annotations, results, sidecars, vendor summaries)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import HarnessError


def read_json_object(path: Path, label: str = "", expected: str = "a JSON object", drop: tuple[str, ...] = ()) -> dict:
    """Parse a JSON file that must hold an object; errors name the file (prefixed by label). Keys in
    `drop` are left out of every object as soon as it is parsed, so what they hold (COCO's polygons, most
    of an annotation file) is freed while parsing goes on instead of all of it being built first."""
    where = f"{label} {path}" if label else str(path)

    def without(obj: dict) -> dict:
        for key in drop:
            obj.pop(key, None)
        return obj

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), object_hook=without if drop else None)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{where}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise HarnessError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{where}: expected {expected}")
    return data
