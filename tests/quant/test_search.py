"""Eq. 5 search on a scripted evaluator with a known accuracy table."""

from __future__ import annotations

import pytest

from ser.quant.importance import LayerImportance
from ser.quant.search import adaptive_margins, greedy_search, laq_search, rank_layers


def _layer(name: str, importance: float) -> LayerImportance:
    return LayerImportance(name, 100, 0.25, 0.2, 0.8, importance)


LAYERS = [_layer("fc1", 0.5), _layer("fc2", 0.8), _layer("fc3", 0.4), _layer("out", 0.2)]

# Accuracy drop (percentage points) each layer causes at each bit-width; drops add up.
DROP = {
    "fc2": {1: 9.0, 2: 3.0, 3: 0.5},
    "fc1": {1: 5.0, 2: 1.0},
    "fc3": {1: 0.4},
    "out": {1: 2.0, 2: 0.6, 3: 0.0},
}
BASELINE = 0.80


def scripted(calls: list[dict[str, int]]):
    def evaluate(bits: dict[str, int]) -> float:
        calls.append(dict(bits))
        return BASELINE - sum(DROP[name].get(b, 0.0) for name, b in bits.items()) / 100

    return evaluate


def test_layers_are_ranked_most_important_first():
    assert [l.name for l in rank_layers(LAYERS)] == ["fc2", "fc1", "fc3", "out"]


def test_margins_scale_with_the_importance_ratio_to_the_previous_layer():
    margins = adaptive_margins(rank_layers(LAYERS), t_margin=2.0)
    assert margins == pytest.approx([2.0, 2.0 * 0.5 / 0.8, 2.0 * 0.4 / 0.5, 2.0 * 0.2 / 0.4])


def test_search_picks_the_lowest_bits_within_each_margin():
    calls: list[dict[str, int]] = []
    result = laq_search(LAYERS, scripted(calls), BASELINE, t_margin=2.0)
    # fc2: 1 bit drops 9, 2 bits drop 3 > 2.0, 3 bits drop 0.5 → 3.
    # fc1 (margin 1.25): 1 bit → 5.5, 2 bits → 1.5 > 1.25, 3 bits → 0.5 → 3.
    # fc3 (margin 1.6): 1 bit → 0.9 → 1.  out (margin 1.0): 1 → 2.9, 2 → 1.5, 3 → 0.9 → 3.
    assert result.bits == {"fc2": 3, "fc1": 3, "fc3": 1, "out": 3}
    assert [c.rank for c in result.choices] == [1, 2, 3, 4]
    assert result.evaluations == len(calls) == 3 + 3 + 1 + 3
    assert calls[3] == {"fc2": 3, "fc1": 1}  # earlier layers keep their bits, later ones stay full precision
    assert result.accuracy == pytest.approx(BASELINE - 0.009)
    assert [c.drop for c in result.choices] == pytest.approx([0.5, 0.5, 0.9, 0.9])


def test_layer_falls_back_to_maximum_bits_when_nothing_fits():
    result = laq_search([_layer("fc2", 1.0)], scripted([]), BASELINE, t_margin=0.1, bit_range=[1, 2])
    assert result.bits == {"fc2": 2}
    assert result.choices[0].drop == pytest.approx(3.0)


def test_zero_importance_keeps_the_margin_constant():
    layers = [_layer("a", 0.0), _layer("b", 0.0)]
    assert adaptive_margins(layers, 1.5) == [1.5, 1.5]


def test_greedy_baseline_takes_the_cheapest_bit_until_the_margin_is_spent():
    # Free cuts first (fc2→4, fc1→3, fc3→2, out→3), then fc3→1 (+0.4), fc2→3 (+0.5), out→2 (+0.6);
    # the cheapest next cut, fc1→2, would bring the total drop to 2.5 > 2.0.
    result = greedy_search(LAYERS, scripted([]), BASELINE, t_margin=2.0)
    assert result.bits == {"fc1": 3, "fc2": 3, "fc3": 1, "out": 2}
    assert result.accuracy == pytest.approx(BASELINE - 0.015)
    assert result.evaluations > 4 * 4


def test_best_fallback_takes_the_lowest_width_reaching_the_best_score():
    drops = {"fc2": {1: 9.0, 2: 3.0, 3: 1.0}}  # 3…8 bits all score the same
    evaluate = lambda bits: BASELINE - sum(drops[n].get(b, 1.0) for n, b in bits.items()) / 100  # noqa: E731
    paper = laq_search([_layer("fc2", 1.0)], evaluate, BASELINE, t_margin=0.5)
    ours = laq_search([_layer("fc2", 1.0)], evaluate, BASELINE, t_margin=0.5, fallback="best")
    assert paper.bits == {"fc2": 8} and ours.bits == {"fc2": 3}
    assert ours.choices[0].fallback and ours.choices[0].drop == pytest.approx(1.0)
    assert [b for b, _ in ours.choices[0].tried] == list(range(1, 9))


def test_every_width_tried_is_recorded_with_its_drop():
    result = laq_search(LAYERS, scripted([]), BASELINE, t_margin=2.0)
    fc2 = next(c for c in result.choices if c.layer.name == "fc2")
    assert [b for b, _ in fc2.tried] == [1, 2, 3]
    assert [d for _, d in fc2.tried] == pytest.approx([9.0, 3.0, 0.5])
    assert not any(c.fallback for c in result.choices)


def _params(bits):
    return sum(100 * b for b in bits.values())


def test_budget_search_fits_the_budget_with_the_best_score():
    from ser.quant.search import budget_search

    result, met = budget_search(LAYERS, scripted([]), BASELINE, _params, budget=100 * 9)
    assert met and _params(result.bits) <= 900
    # every fitting allocation of the T_margin ladder scores at most this one
    for t in (0.0, 1.0, 2.0, 4.0, 8.0, float("inf")):
        other = laq_search(LAYERS, scripted([]), BASELINE, t)
        if _params(other.bits) <= 900:
            assert other.accuracy <= result.accuracy + 1e-12


def test_budget_search_says_when_the_budget_cannot_be_met():
    from ser.quant.search import budget_search

    result, met = budget_search(LAYERS, scripted([]), BASELINE, _params, budget=100 * 3)
    assert not met and result.bits == {"fc2": 1, "fc1": 1, "fc3": 1, "out": 1}


def _size(bits: dict[str, int]) -> float:
    return sum(100 * b for b in bits.values())


def test_budget_refinement_spends_the_budget_the_ladder_left_unused():
    from ser.quant.search import budget_search

    ladder, _ = budget_search(LAYERS, scripted([]), BASELINE, _size, budget=900)
    refined, met = budget_search(LAYERS, scripted([]), BASELINE, _size, budget=900, refine=True)
    # The ladder's margins jump from an allocation of 500 (0.65) to ones over 900.
    assert (ladder.bits, _size(ladder.bits), ladder.accuracy) == (
        {"fc2": 1, "fc1": 1, "fc3": 1, "out": 2},
        500,
        pytest.approx(0.65),
    )
    # Uniform 2 bits (0.754) is the better start; raising fc2 to 3 bits fills the budget.
    assert met and refined.bits == {"fc2": 3, "fc1": 2, "fc3": 2, "out": 2} and _size(refined.bits) == 900
    assert refined.accuracy == pytest.approx(0.779)
    assert [b for b, _ in refined.refinement] == [
        ladder.bits,
        dict.fromkeys(["fc1", "fc2", "fc3", "out"], 2),
        refined.bits,
    ]
    assert [q for _, q in refined.refinement] == pytest.approx([0.65, 0.754, 0.779])


@pytest.mark.parametrize("budget", [500, 700, 800, 900, 1000])
def test_budget_refinement_ends_where_no_fitting_one_width_move_or_uniform_width_scores_higher(budget):
    from ser.quant.search import budget_search

    evaluate = scripted([])
    result, met = budget_search(LAYERS, evaluate, BASELINE, _size, budget=budget, refine=True)
    assert met and _size(result.bits) <= budget
    neighbours = [{**result.bits, n: b + d} for n, b in result.bits.items() for d in (-1, 1) if 1 <= b + d <= 8]
    uniform = [dict.fromkeys(result.bits, b) for b in range(1, 9)]
    for other in neighbours + uniform:
        if _size(other) <= budget:
            assert evaluate(other) <= result.accuracy + 1e-12, other


def test_budget_refinement_changes_widths_but_keeps_the_ladders_measurements():
    from ser.quant.search import budget_search

    ladder, _ = budget_search(LAYERS, scripted([]), BASELINE, _size, budget=900)
    refined, _ = budget_search(LAYERS, scripted([]), BASELINE, _size, budget=900, refine=True)
    assert [(c.layer.name, c.tried, c.drop, c.margin) for c in refined.choices] == [
        (c.layer.name, c.tried, c.drop, c.margin) for c in ladder.choices
    ]
    assert refined.evaluations > ladder.evaluations and refined.t_margin == ladder.t_margin


def test_a_budget_that_cannot_be_met_is_not_refined():
    from ser.quant.search import budget_search

    result, met = budget_search(LAYERS, scripted([]), BASELINE, _size, budget=300, refine=True)
    assert not met and result.refinement == [] and result.bits == dict.fromkeys(["fc2", "fc1", "fc3", "out"], 1)
