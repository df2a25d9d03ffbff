"""--exclude NODE_REGEX / --exclude-types OPS / --exclude-from FILE -> the node names kept in float.

Every rule must hit something: a pattern that matches no node name, an op type the graph does not
have, or a listed name that is not a node is one clear line, since a typo would otherwise quietly
quantize the layer the user meant to protect.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError


@dataclass(frozen=True)
class ExclusionRules:
    patterns: tuple[str, ...] = ()  # regular expressions, re.search against node names
    op_types: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # exact node names (from --exclude-from)
    names_source: str = ""  # the file the names came from, for messages and quant.json

    @property
    def empty(self) -> bool:
        return not (self.patterns or self.op_types or self.names)


@dataclass(frozen=True)
class Exclusions:
    nodes: frozenset[str]
    by_rule: dict[str, list[str]] = field(default_factory=dict)  # rule -> nodes it matched

    def to_dict(self) -> dict:
        return {"nodes": sorted(self.nodes), "by_rule": self.by_rule}


def parse_op_types(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def read_exclude_file(path: str | Path) -> tuple[str, ...]:
    """One node name per line; blank lines and `#` comments are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HarnessError(f"--exclude-from {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"--exclude-from {path}: cannot be read ({exc})") from None
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return tuple(names)


def resolve(rules: ExclusionRules, nodes: Iterable[tuple[str, str]]) -> Exclusions:
    """(name, op_type) pairs of the graph -> the excluded names; one clear line for a rule matching nothing."""
    nodes = list(nodes)
    names = {name for name, _ in nodes}
    by_rule: dict[str, list[str]] = {}
    for pattern in rules.patterns:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise HarnessError(f"--exclude '{pattern}': not a valid regular expression ({exc})") from None
        hits = [name for name, _ in nodes if regex.search(name)]
        if not hits:
            raise HarnessError(f"--exclude '{pattern}' matches no node name in the model "
                               f"(e.g. {', '.join(sorted(names)[:3])})")
        by_rule[f"pattern:{pattern}"] = hits
    present = sorted({op for _, op in nodes})
    for op_type in rules.op_types:
        hits = [name for name, op in nodes if op == op_type]
        if not hits:
            raise HarnessError(f"--exclude-types {op_type}: the model has no {op_type} node "
                               f"(its op types: {', '.join(present)})")
        by_rule[f"type:{op_type}"] = hits
    if rules.names:
        missing = [name for name in rules.names if name not in names]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise HarnessError(f"--exclude-from {rules.names_source or 'list'}: {len(missing)} name(s) are not "
                               f"nodes of the model: {shown}")
        by_rule[f"file:{rules.names_source}"] = list(dict.fromkeys(rules.names))
    return Exclusions(frozenset(n for hits in by_rule.values() for n in hits), by_rule)
