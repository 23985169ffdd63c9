"""Eq. 1-4 on hand-built layers with known entropy and variance."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ser.quant.importance import ImportanceWeights, layer_importance, weight_entropy


def _layer(values: list[float], n_in: int, n_out: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values).reshape(n_out, n_in))
        if bias:
            layer.bias.zero_()
    return layer


def test_entropy_of_four_equally_frequent_values_is_two_bits():
    w = torch.tensor([-3.0, -1.0, 1.0, 3.0] * 8)
    assert weight_entropy(w, bins=4) == pytest.approx(2.0)
    assert weight_entropy(w, bins=256) == pytest.approx(2.0)


def test_entropy_of_constant_weights_is_zero():
    assert weight_entropy(torch.full((10,), 0.5)) == 0.0


def test_importance_terms_on_hand_built_layers():
    # Layer a: 8 weights in 4 equally frequent values (var 5, entropy 2 bits) + 2 biases.
    # Layer b: 4 weights in 2 equally frequent values (var 1, entropy 1 bit), no bias.
    a = _layer([-3.0, -1.0, 1.0, 3.0] * 2, 4, 2)
    b = _layer([-1.0, 1.0, -1.0, 1.0], 2, 2, bias=False)
    model = nn.Sequential(a, nn.ReLU(), b)
    la, lb = layer_importance(model, ImportanceWeights(w_p=0.5, w_e=0.25, w_v=0.25), bins=4)
    assert (la.name, la.params, lb.name, lb.params) == ("0", 10, "2", 4)
    assert (la.n_p, lb.n_p) == pytest.approx((10 / 14, 4 / 14))
    assert (la.n_e, lb.n_e) == pytest.approx((2 / 32, 1 / 32))
    assert (la.n_v, lb.n_v) == pytest.approx((1.0, math.log(math.e - 1 + 1 / 5)))
    assert la.importance == pytest.approx(0.5 * 10 / 14 + 0.25 * (1 - 2 / 32) + 0.25 * 1.0)
    assert lb.importance == pytest.approx(0.5 * 4 / 14 + 0.25 * (1 - 1 / 32) + 0.25 * math.log(math.e - 1.0 + 0.2))


def test_normalised_entropy_stays_within_0_and_1():
    model = nn.Sequential(nn.Linear(50, 40), nn.Linear(40, 3))
    for layer in layer_importance(model, bins=2**16):
        assert 0 <= layer.n_e <= 1
        assert math.log(math.e - 1) <= layer.n_v <= 1


def test_default_weights_are_the_papers_best_row():
    assert ImportanceWeights().as_dict() == {"w_p": 0.11, "w_e": 0.01, "w_v": 0.88}
