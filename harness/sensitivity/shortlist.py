"""The nodes worth a ΔmAP measurement, chosen cheaply from tensor error and graph structure.

Every quantized node is a candidate. The shortlist takes first the nodes structure singles out:
inputs with crushed channels (largest share first), then head/decoder-side nodes; then the rest by
their own quantization error (worst of local activation and weight SQNR, lowest first), up to
top_k. A node the probe could not measure sorts after the measured ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.sensitivity.structure import NodeShape
from harness.sensitivity.tensor_error import NodeError


@dataclass(frozen=True)
class Candidate:
    name: str
    shape: NodeShape
    error: NodeError | None
    reasons: tuple[str, ...]  # why it is on the shortlist: crushed-channels, head, sqnr

    @property
    def sqnr_db(self) -> float | None:
        return self.error.worst_db if self.error else None


def _sqnr_key(name: str, errors: dict[str, NodeError]) -> tuple:
    worst = errors[name].worst_db if name in errors else None
    return (worst is None, worst if worst is not None else 0.0)


def sqnr_order(names, errors: dict[str, NodeError]) -> list[str]:
    """Names by their own SQNR, worst (lowest) first; unmeasured last, graph order among equals."""
    return sorted(names, key=lambda n: _sqnr_key(n, errors))


def shortlist(quantized: tuple[str, ...], shapes: dict[str, NodeShape], errors: dict[str, NodeError],
              top_k: int) -> list[Candidate]:
    crushed = sorted((n for n in quantized if shapes[n].outlier), key=lambda n: -shapes[n].crushed)
    heads = [n for n in sqnr_order(quantized, errors) if shapes[n].head and n not in set(crushed)]
    rest = [n for n in sqnr_order(quantized, errors) if n not in set(crushed) | set(heads)]
    chosen = (crushed + heads + rest)[:top_k]
    out = []
    for name in chosen:
        reasons = tuple(r for r, hit in (("crushed-channels", shapes[name].outlier), ("head", shapes[name].head),
                                         ("sqnr", name in rest)) if hit)
        out.append(Candidate(name, shapes[name], errors.get(name), reasons))
    return out
