"""One strict loader for every configuration mapping: profiles, decoder parameters, target options,
sidecars.

Each configuration is a dataclass; its annotations say the type and its `setting(...)` fields the
allowed range. `load(cls, data, where)` builds one from plain data (TOML, JSON, command-line text)
and refuses, in one line naming the file, the key and what is allowed:
- an unknown key (with "did you mean" for near misses: a typo never silently falls back to a default),
- a wrong type (a string where a number belongs, a bool where an integer belongs, NaN or infinity),
- a value out of range or not among the choices (`Literal[...]`).

Supported annotations: bool, int, float, str, Literal[...], X | None, unions tried in order,
tuple[X, ...], tuple[X, Y, Z], dict[str, X] and nested config dataclasses (TOML tables).
Cross-field rules go in the dataclass's `__post_init__`, raising `Invalid(key, why)`. A key that was
renamed is listed in the class's `RENAMED` (old key -> what to write now) and refused with that line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from functools import cache

from harness.core.errors import HarnessError


class Invalid(ValueError):
    """Raised by a config dataclass's __post_init__ for a rule between fields."""

    def __init__(self, key: str, why: str):
        super().__init__(f"{key}: {why}")
        self.key = key
        self.why = why


def setting(default=MISSING, *, default_factory=MISSING, ge=None, gt=None, le=None, lt=None,
            nonempty: bool = False, expects: str = "", omit_default: bool = False):
    """A dataclass field with a range (ge/gt/le/lt apply to numbers and to each number of a tuple);
    `expects` words what the field takes, for errors, where the type alone says too little.
    omit_default: dump() leaves the field out while it holds its default, so a key added later does
    not change the identity (the hash of the dumped data) of configurations that do not set it."""
    metadata = {"ge": ge, "gt": gt, "le": le, "lt": lt, "nonempty": nonempty, "expects": expects,
                "omit_default": omit_default}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def did_you_mean(word: str, known) -> str:
    """' (did you mean 'x'?)' for a near miss among known words, else ''."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def label(section: str | None, key: str) -> str:
    """How an error names a key: `[section] key` in a file, `--key-name` for command-line options."""
    if section == FLAGS:
        return "--" + key.replace("_", "-")
    return f"{_section(section)} {key}" if section else key


def _section(section: str) -> str:
    """'[input]' for a TOML table, 'images[0]' for an item of a list of tables."""
    return section if section.endswith("]") else f"[{section}]"


FLAGS = "--"  # pass as `section` to load(): keys are command-line flags (errors name --key-name)


@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def known_keys(cls) -> list[str]:
    return [f.name for f in fields(cls) if f.init]


def load(cls, data, where: str, section: str | None = None, *, from_text: bool = False):
    """Build config dataclass `cls` from a mapping; every problem is a HarnessError naming `where`
    (the file or flag), the key (with its [section]) and what is allowed. from_text: values are
    command-line strings ("4", "true") to be read as the annotated type."""
    if not isinstance(data, Mapping):
        raise HarnessError(f"{where}: {_section(section) if section else 'the settings'} must be a table of key = value, "
                           f"got {type(data).__name__}")
    keys = known_keys(cls)
    unknown = [k for k in data if k not in keys]
    renamed = [k for k in unknown if k in getattr(cls, "RENAMED", {})]
    if renamed:
        raise HarnessError(f"{where}: {label(section, renamed[0])} was renamed: {cls.RENAMED[renamed[0]]}")
    if unknown:
        key = unknown[0]
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        if section == FLAGS:
            raise HarnessError(f"{where}: unknown option {label(section, key)}{did_you_mean(key, keys)}{more}; "
                               f"options: {', '.join(label(section, k) for k in keys) or 'none'}")
        raise HarnessError(f"{where}: unknown key {label(section, key)!r}{did_you_mean(key, keys)}{more}; "
                           f"known keys{f' in [{section}]' if section else ''}: {', '.join(keys)}")
    hints = _hints(cls)
    values = {}
    for f in fields(cls):
        if not f.init:
            continue
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                owner = f"{_section(section)} is" if section and section != FLAGS else "is"
                raise HarnessError(f"{where}: {owner} missing {f.name!r} ({describe(hints[f.name])})")
            continue
        values[f.name] = _value(hints[f.name], data[f.name], f, where, section, from_text)
    try:
        return cls(**values)
    except Invalid as exc:
        raise HarnessError(f"{where}: {label(section, exc.key)}: {exc.why}") from None


def _value(tp, value, f, where, section, from_text):
    key = label(section, f.name)
    try:
        out = coerce(tp, value, from_text, where, f.name)
    except _Mismatch as exc:
        expected = (f.metadata or {}).get("expects") or exc.expected
        raise HarnessError(f"{where}: {key} = {_show(value)}: expected {expected}") from None
    problem = _range_problem(out, f.metadata)
    if problem:
        raise HarnessError(f"{where}: {key} = {_show(value)}: expected {describe(tp)} {problem}")
    return out


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Mismatch(Exception):
    def __init__(self, expected: str):
        self.expected = expected


def _numbers(value):
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (tuple, list)):
        return [n for v in value for n in _numbers(v)]
    return []


_BOUNDS = (("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
           ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b))


def _range_problem(value, meta) -> str | None:
    """'(>= 0, <= 1)' when a number of value falls outside the field's bounds, else None."""
    if not meta:
        return None
    if meta.get("nonempty") and hasattr(value, "__len__") and len(value) == 0:
        return "(not empty)"
    bounds = [(text, test, meta[key]) for key, text, test in _BOUNDS if meta.get(key) is not None]
    if any(not test(n, bound) for n in _numbers(value) for _, test, bound in bounds):
        return "(" + ", ".join(f"{text} {bound}" for text, _, bound in bounds) + ")"
    return None


def describe(tp) -> str:
    """Words for what an annotation accepts, for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(describe(a) for a in inner)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}"
    if tp is dict or origin is dict:
        return f"a table of {_plural(args[1])}" if args else "a table"
    if is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _plural(tp) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(tp, f"({describe(tp)})")


def coerce(tp, value, from_text: bool = False, where: str = "", name: str = ""):
    """value as annotation tp, or _Mismatch(expected words)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return coerce(option, value, from_text, where, name)
            except _Mismatch as exc:
                mismatch = exc
        # X | None: X's own words (a Literal's "did you mean" included)
        raise mismatch if len(options) == 1 else _Mismatch(describe(tp))
    if origin is typing.Literal:
        text = value.strip() if from_text and isinstance(value, str) else value
        if text in args and not isinstance(text, bool):
            return text
        hint = did_you_mean(value, args) if isinstance(value, str) else ""
        raise _Mismatch(describe(tp) + hint)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
        raise _Mismatch(describe(tp))
    if tp is int:
        if from_text and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _Mismatch(describe(tp)) from None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch(describe(tp))
    if tp is float:
        if from_text and isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise _Mismatch(describe(tp)) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _Mismatch("a finite number")
            return float(value)
        raise _Mismatch(describe(tp))
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch(describe(tp))
    if origin is tuple:
        if from_text and isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(describe(tp))
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v, from_text, where, f"{name}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Mismatch(describe(tp))
        return tuple(coerce(a, v, from_text, where, name) for a, v in zip(args, value))
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _Mismatch("a table")
        return dict(value) if not args else {k: coerce(args[1], v, from_text, where, name) for k, v in value.items()}
    if is_dataclass(tp):
        return load(tp, value, where, name)
    raise TypeError(f"config annotation {tp!r} is not supported")  # a programming error, not a user's


_BOOL_TEXT = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def dump(obj) -> dict:
    """A config dataclass as plain data (tuples as lists, None values and omit_default fields at their
    default left out): what load() reads back."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None or ((f.metadata or {}).get("omit_default") and value == f.default):
            continue
        out[f.name] = _plain(value)
    return out


def _plain(value):
    if is_dataclass(value) and not isinstance(value, type):
        return dump(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def parse_assignments(pairs, where: str = "--option") -> dict[str, str]:
    """["key=value", ...] from the command line -> {key: "value"} (values typed later by load(from_text))."""
    out = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"{where} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def coerce_choice(value, choices: tuple, where: str, key: str):
    """value when it is one of choices, else one line naming where, the key and the choices."""
    if isinstance(value, str) and value in choices:
        return value
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    raise HarnessError(f"{where}: {key} = {_show(value)}: expected one of {', '.join(choices)}{hint}")
