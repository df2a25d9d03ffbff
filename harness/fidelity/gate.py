"""`--fail-if "dmap<-0.01 or agreement<0.95"`: a CI gate over each compared row's fidelity figures.

A tiny recursive-descent parser, never eval(): comparisons `name OP number` (OP one of < <= > >= ==
!=) joined by `and` / `or` (and binds tighter), with optional parentheses. Names are the figures in
GATE_FIGURES. A figure that is NaN (for instance an output holding NaN) or undefined (None, e.g.
ΔmAP when these images have no ground truth) makes its comparison true, so a row that cannot be
judged fails the gate instead of slipping through.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from harness.core.errors import HarnessError

GATE_FIGURES = {
    "dmap": "ΔmAP, candidate − reference",
    "dmap_lo": "lower end of the 95% bootstrap interval of ΔmAP",
    "dmap_hi": "upper end of the 95% bootstrap interval of ΔmAP",
    "dmap50": "ΔAP50",
    "agreement": "matched fraction of the reference's confident detections",
    "missed": "reference detections without a same-class candidate match (count)",
    "extra": "candidate detections without a same-class reference match (count)",
    "flips": "class flips (count)",
    "mean_iou": "mean IoU of matched detections",
    "dscore": "mean |Δscore| of matched detections",
    "sqnr": "lowest SQNR over the saved outputs (dB)",
    "cosine": "lowest cosine similarity over the saved outputs",
    "max_abs": "largest max-abs error over the saved outputs",
    "p99_abs": "largest p99 abs error over the saved outputs",
}
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
       "!=": operator.ne}
MAX_DEPTH = 32  # nested parentheses: far beyond any real gate, far below Python's recursion limit
_TOKEN = re.compile(r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<op><=|>=|==|!=|<|>)"
                    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<paren>[()]))")


@dataclass(frozen=True)
class Condition:
    name: str
    op: str
    value: float

    def holds(self, figures: dict[str, float | None]) -> bool:
        actual = figures[self.name]
        return actual is None or math.isnan(actual) or OPS[self.op](actual, self.value)

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value:g}"


@dataclass(frozen=True)
class Either:
    kind: str  # "and" | "or"
    parts: tuple

    def holds(self, figures: dict[str, float]) -> bool:
        results = (p.holds(figures) for p in self.parts)
        return all(results) if self.kind == "and" else any(results)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise HarnessError(f"--fail-if {text!r}: cannot read {text[pos:].strip()[:20]!r} at position {pos + 1}; "
                               "expected comparisons like dmap<-0.01 joined by and/or")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "word" and value.lower() in ("and", "or"):
            kind, value = "bool", value.lower()
        out.append((kind, value))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0
        self.depth = 0

    def fail(self, what: str):
        got = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "the end"
        raise HarnessError(f"--fail-if {self.text!r}: expected {what}, got {got!r}; "
                           "write comparisons like dmap<-0.01 joined by and/or")

    def peek(self, kind: str, value: str | None = None) -> bool:
        if self.pos >= len(self.tokens):
            return False
        k, v = self.tokens[self.pos]
        return k == kind and (value is None or v == value)

    def take(self, kind: str, what: str) -> str:
        if not self.peek(kind):
            self.fail(what)
        self.pos += 1
        return self.tokens[self.pos - 1][1]

    def expr(self):
        return self.chain("or", self.term)

    def term(self):
        return self.chain("and", self.factor)

    def chain(self, word: str, part):
        """part (word part)*: one node, or an Either when the word joins several."""
        parts = [part()]
        while self.peek("bool", word):
            self.pos += 1
            parts.append(part())
        return parts[0] if len(parts) == 1 else Either(word, tuple(parts))

    def factor(self):
        if self.peek("paren", "("):
            self.pos += 1
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise HarnessError(f"--fail-if: parentheses nested deeper than {MAX_DEPTH}; write a flatter expression")
            inner = self.expr()
            self.depth -= 1
            if not self.peek("paren", ")"):
                self.fail("')'")
            self.pos += 1
            return inner
        name = self.take("word", "a figure name such as dmap or agreement")
        if name not in GATE_FIGURES:
            raise HarnessError(f"--fail-if {self.text!r}: unknown figure {name!r}; known: {', '.join(GATE_FIGURES)}")
        op = self.take("op", "a comparison (<, <=, >, >=, ==, !=)")
        value = float(self.take("num", "a number"))
        if not math.isfinite(value):
            self.pos -= 1
            self.fail("a finite number")
        return Condition(name, op, value)


def parse_gate(text: str):
    """The parsed expression (Condition or Either); a HarnessError of one line on bad input."""
    parser = _Parser(text)
    if not parser.tokens:
        raise HarnessError("--fail-if '': empty expression; write comparisons like dmap<-0.01 joined by and/or")
    tree = parser.expr()
    if parser.pos != len(parser.tokens):
        parser.fail("'and', 'or' or the end")
    return tree


def gate_names(tree) -> set[str]:
    if isinstance(tree, Condition):
        return {tree.name}
    return set().union(*(gate_names(p) for p in tree.parts))


def failing_comparisons(tree, figures: dict[str, float]) -> list[str]:
    """The comparisons that hold for these figures, e.g. ['dmap=-0.0213 < -0.01'] (for the report)."""
    if isinstance(tree, Condition):
        if not tree.holds(figures):
            return []
        actual = figures[tree.name]
        shown = "undefined" if actual is None else f"{actual:.4g}"
        return [f"{tree.name}={shown} {tree.op} {tree.value:g}"]
    return [text for p in tree.parts for text in failing_comparisons(p, figures)]
