"""The bit-width search of Eq. 5: most important layer first, lowest bits within a margin.

For each layer in turn (earlier layers fixed at their chosen bits, later ones at full
precision) bit-widths are tried from the minimum upward, and the first whose accuracy drop
against the full-precision model is within

    T_margin(l) = T_margin · I(l) / I(l_prev)        (T_margin for the first layer)

is kept; if none is, the layer gets the maximum. Drops and margins are in percentage points.
When I(l_prev) is 0 (e.g. all importance weights 0, Table 3's first row) the ratio is
taken as 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ser.quant.importance import LayerImportance

Evaluate = Callable[[dict[str, int]], float]


@dataclass(frozen=True)
class LayerChoice:
    layer: LayerImportance
    rank: int
    margin: float
    bits: int
    drop: float


@dataclass
class SearchResult:
    choices: list[LayerChoice]
    accuracy: float
    evaluations: int
    seconds: float
    trace: list[tuple[str, int, float]] = field(default_factory=list)

    @property
    def bits(self) -> dict[str, int]:
        return {c.layer.name: c.bits for c in self.choices}


def rank_layers(layers: Sequence[LayerImportance]) -> list[LayerImportance]:
    """Most important first; ties keep the network's order."""
    return sorted(layers, key=lambda l: -l.importance)


def adaptive_margins(ranked: Sequence[LayerImportance], t_margin: float) -> list[float]:
    margins = []
    for i, layer in enumerate(ranked):
        previous = ranked[i - 1].importance if i else 0.0
        ratio = layer.importance / previous if i and previous != 0 else 1.0
        margins.append(t_margin * ratio)
    return margins


def laq_search(
    layers: Sequence[LayerImportance],
    evaluate: Evaluate,
    baseline_accuracy: float,
    t_margin: float,
    bit_range: Sequence[int] = tuple(range(1, 9)),
) -> SearchResult:
    """Run the search; ``evaluate`` maps {layer: bits} to a validation accuracy in [0, 1]."""
    start = time.perf_counter()
    ranked = rank_layers(layers)
    candidates = sorted(bit_range)
    chosen: dict[str, int] = {}
    choices, trace = [], []
    accuracy = baseline_accuracy
    for rank, (layer, margin) in enumerate(zip(ranked, adaptive_margins(ranked, t_margin)), start=1):
        picked = None
        for bits in candidates:
            acc = evaluate({**chosen, layer.name: bits})
            trace.append((layer.name, bits, acc))
            drop = 100.0 * (baseline_accuracy - acc)
            if drop <= margin + 1e-9:
                picked = (bits, acc, drop)
                break
        if picked is None:  # nothing within the margin: fall back to the widest, measured
            bits = candidates[-1]
            acc = next(a for n, b, a in reversed(trace) if n == layer.name and b == bits)
            picked = (bits, acc, 100.0 * (baseline_accuracy - acc))
        chosen[layer.name] = picked[0]
        accuracy = picked[1]
        choices.append(LayerChoice(layer, rank, margin, picked[0], picked[2]))
    return SearchResult(choices, accuracy, len(trace), time.perf_counter() - start, trace)


def greedy_search(
    layers: Sequence[LayerImportance],
    evaluate: Evaluate,
    baseline_accuracy: float,
    t_margin: float,
    bit_range: Sequence[int] = tuple(range(1, 9)),
) -> SearchResult:
    """Sensitivity-based comparison baseline: measure, don't rank.

    Start with every layer at the widest bit-width; at each step try taking one bit from each
    layer, keep the cut that loses the least validation accuracy (ties: the larger layer, which
    saves more), and stop when the best cut would exceed ``t_margin`` points in total. It costs
    more evaluations than LAQ and answers whether LAQ's importance ranking earns its keep.
    """
    start = time.perf_counter()
    candidates = sorted(bit_range)
    bits = {layer.name: candidates[-1] for layer in layers}
    params = {layer.name: layer.params for layer in layers}
    trace: list[tuple[str, int, float]] = []
    accuracy = evaluate(bits)
    trace.append(("*", candidates[-1], accuracy))
    while True:
        options = []
        for name, b in bits.items():
            lower = [c for c in candidates if c < b]
            if lower:
                acc = evaluate({**bits, name: lower[-1]})
                trace.append((name, lower[-1], acc))
                options.append((acc, params[name], name, lower[-1]))
        if not options:
            break
        acc, _, name, b = max(options)
        if 100.0 * (baseline_accuracy - acc) > t_margin + 1e-9:
            break
        bits[name], accuracy = b, acc
    ranked = rank_layers(layers)
    choices = [LayerChoice(l, r, t_margin, bits[l.name], 100.0 * (baseline_accuracy - accuracy)) for r, l in enumerate(ranked, 1)]
    return SearchResult(choices, accuracy, len(trace), time.perf_counter() - start, trace)
