"""The bit-width search of Eq. 5: most important layer first, lowest bits within a margin.

For each layer in turn (earlier layers fixed at their chosen bits, later ones at full
precision) bit-widths are tried from the minimum upward, and the first whose accuracy drop
against the full-precision model is within

    T_margin(l) = T_margin · I(l) / I(l_prev)        (T_margin for the first layer)

is kept. If none is, the paper's fallback (``fallback="max"``) gives the layer the maximum;
``fallback="best"`` gives it the lowest width that reaches the best score measured for that
layer (e.g. 3 bits when 3…8 bits all score the same). Drops and margins are in percentage
points. When I(l_prev) is 0 (e.g. all importance weights 0, Table 3's first row) the ratio is
taken as 1.

``evaluate`` returns a quality in [0, 1] (the paper: validation accuracy; the callback can mix
in agreement with the full-precision model), and the drop is 100·(baseline − quality).

``budget_search`` fits a size budget: it runs the same search over a ladder of T_margin values
and keeps the allocation that fits with the smallest drop. Each layer's drop is measured with
the later layers still at full precision, so drops that each looked small can add up: the
ladder's pick often scored below a uniform width that fits the same budget (EMODB, compact
recipe: 2.2 points under LOSO). With ``refine`` the uniform widths that fit are candidates
too, and the best start is improved one layer and one width at a time while the quality
rises and the budget holds (``refine_within_budget``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ser.quant.config import FALLBACKS
from ser.quant.importance import LayerImportance

Evaluate = Callable[[dict[str, int]], float]
# T_margin ladder (percentage points) tried by budget_search, inf last: every layer at the lowest width.
BUDGET_MARGINS = (
    0.0,
    0.25,
    0.5,
    1.0,
    1.5,
    2.0,
    3.0,
    4.0,
    6.0,
    8.0,
    12.0,
    16.0,
    24.0,
    32.0,
    50.0,
    75.0,
    100.0,
    float("inf"),
)


@dataclass(frozen=True)
class LayerChoice:
    layer: LayerImportance
    rank: int
    margin: float
    bits: int
    drop: float
    tried: tuple[tuple[int, float], ...] = ()  # (bits, drop) of every width measured, in order
    fallback: bool = False  # no width was within the margin


@dataclass
class SearchResult:
    choices: list[LayerChoice]
    accuracy: float
    evaluations: int
    seconds: float
    trace: list[tuple[str, int, float]] = field(default_factory=list)
    t_margin: float | None = None
    # budget_search with refine: the ladder's allocation, then each allocation the refinement moved to, with its quality
    refinement: list[tuple[dict[str, int], float]] = field(default_factory=list)

    @property
    def bits(self) -> dict[str, int]:
        return {c.layer.name: c.bits for c in self.choices}


def rank_layers(layers: Sequence[LayerImportance]) -> list[LayerImportance]:
    """Most important first; ties keep the network's order."""
    return sorted(layers, key=lambda l: -l.importance)


def adaptive_margins(ranked: Sequence[LayerImportance], t_margin: float) -> list[float]:
    margins = []
    if math.isinf(t_margin):
        return [t_margin] * len(ranked)
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
    fallback: str = "max",
) -> SearchResult:
    """Run the search; ``evaluate`` maps {layer: bits} to a quality in [0, 1] (validation accuracy in the paper)."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    start = time.perf_counter()
    ranked = rank_layers(layers)
    candidates = sorted(bit_range)
    chosen: dict[str, int] = {}
    choices, trace = [], []
    accuracy = baseline_accuracy
    for rank, (layer, margin) in enumerate(zip(ranked, adaptive_margins(ranked, t_margin)), start=1):
        picked = None
        tried: list[tuple[int, float, float]] = []
        for bits in candidates:
            acc = evaluate({**chosen, layer.name: bits})
            trace.append((layer.name, bits, acc))
            drop = 100.0 * (baseline_accuracy - acc)
            tried.append((bits, acc, drop))
            if drop <= margin + 1e-9:
                picked = (bits, acc, drop)
                break
        fell_back = picked is None
        if fell_back:
            if fallback == "max":  # the paper: the widest, measured
                picked = tried[-1]
            else:  # the lowest width reaching the best quality measured for this layer
                best = max(a for _, a, _ in tried)
                picked = next(t for t in tried if t[1] >= best - 1e-12)
        chosen[layer.name] = picked[0]
        accuracy = picked[1]
        choices.append(
            LayerChoice(layer, rank, margin, picked[0], picked[2], tuple((b, d) for b, _, d in tried), fell_back)
        )
    return SearchResult(choices, accuracy, len(trace), time.perf_counter() - start, trace, t_margin)


def _fits(size: Callable[[dict[str, int]], float], budget: float, bits: dict[str, int]) -> bool:
    """``size(bits) ≤ budget``, with room for the rounding of a sum of sizes that should equal it."""
    return size(bits) <= budget + 1e-9


def refine_within_budget(
    evaluate: Evaluate,
    size: Callable[[dict[str, int]], float],
    budget: float,
    starts: Sequence[dict[str, int]],
    bit_range: Sequence[int] = tuple(range(1, 9)),
) -> list[tuple[dict[str, int], float]]:
    """Coordinate ascent on quality within ``size ≤ budget``: from the best of ``starts`` (ties: the
    smaller), move one layer one width up or down to the fitting neighbour that scores highest,
    while that raises the quality. Returns every allocation it stood on, with its quality."""
    widths = sorted(bit_range)
    key = lambda bits: (evaluate(bits), -size(bits))  # noqa: E731
    current = max((dict(s) for s in starts if _fits(size, budget, s)), key=key)
    path = [(current, evaluate(current))]
    while True:
        neighbours = []
        for name, bits in current.items():
            i = widths.index(bits)
            neighbours += [{**current, name: widths[j]} for j in (i - 1, i + 1) if 0 <= j < len(widths)]
        fitting = [n for n in neighbours if _fits(size, budget, n)]
        if not fitting or key(best := max(fitting, key=key)) <= key(current):
            return path
        current = best
        path.append((current, evaluate(current)))


def budget_search(
    layers: Sequence[LayerImportance],
    evaluate: Evaluate,
    baseline_accuracy: float,
    size: Callable[[dict[str, int]], float],
    budget: float,
    bit_range: Sequence[int] = tuple(range(1, 9)),
    fallback: str = "max",
    margins: Sequence[float] = BUDGET_MARGINS,
    refine: bool = False,
) -> tuple[SearchResult, bool]:
    """The importance-ordered search of Eq. 5 at the T_margin that fits ``size(allocation) ≤ budget`` best.

    Every T_margin of the ladder is searched (``evaluate`` should be memoised: most allocations
    repeat); among the allocations that fit, the one with the highest quality wins (ties: the
    smaller). With ``refine`` that allocation and the uniform widths that fit are the starts of
    ``refine_within_budget``, whose result is kept (``SearchResult.refinement`` holds its path,
    the ladder's allocation first; each layer's ``bits`` is the refined width, its ``tried``
    and ``drop`` stay the ladder's measurements). Returns the result and whether the budget
    was met; when no margin fits, the smallest allocation found (every layer at the lowest
    width, at the largest margin).
    """
    start = time.perf_counter()
    runs = [laq_search(layers, evaluate, baseline_accuracy, t, bit_range, fallback) for t in margins]
    floor = {l.name: min(bit_range) for l in layers}
    fitting = [r for r in runs if _fits(size, budget, r.bits)]
    if fitting:
        best = max(fitting, key=lambda r: (r.accuracy, -size(r.bits), -(r.t_margin or 0)))
        met = True
    else:
        best = min(runs, key=lambda r: (size(r.bits), -r.accuracy))
        if size(floor) < size(best.bits):
            best = laq_search(layers, evaluate, baseline_accuracy, float("inf"), bit_range, fallback)
        met = False
    evaluations = sum(r.evaluations for r in runs)
    if met and refine:
        seen: set[tuple] = set()

        def counted(bits: dict[str, int]) -> float:  # distinct allocations asked for
            seen.add(tuple(sorted(bits.items())))
            return evaluate(bits)

        uniform = [{l.name: b for l in layers} for b in sorted(bit_range)]
        path = refine_within_budget(counted, size, budget, [best.bits, *uniform], bit_range)
        bits, quality = path[-1]
        best.refinement = [(best.bits, best.accuracy), *path] if path[0][0] != best.bits else path
        best.choices = [replace(c, bits=bits[c.layer.name]) for c in best.choices]
        best.accuracy = quality
        evaluations += len(seen)
    best.evaluations = evaluations
    best.seconds = time.perf_counter() - start
    return best, met


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
    choices = [
        LayerChoice(l, r, t_margin, bits[l.name], 100.0 * (baseline_accuracy - accuracy))
        for r, l in enumerate(ranked, 1)
    ]
    return SearchResult(choices, accuracy, len(trace), time.perf_counter() - start, trace)
