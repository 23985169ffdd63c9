"""Each quantization step on its own, driven by its config on a small trained conv net."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from ser.quant import workflows
from ser.quant.config import LAQConfig, QuantizerConfig, RecoveryConfig, SearchConfig
from ser.quant.evaluation import predict
from ser.quant.workflows import Session
from tests.quant.test_callback import _conv_task, _loader

LAYERS = ("0", "2", "5")


@functools.cache
def _task():
    """Trained once per module (seconds); each test quantizes its own copy."""
    net, val, test = _conv_task()
    return net, val, test, _conv_task()[1]


def _session(needs_train: bool = False, **quantizer) -> Session:
    net, val, test, train = _task()
    return Session.open(copy.deepcopy(net), val, test, _loader(train), QuantizerConfig(**quantizer), needs_train)


def test_the_training_split_is_collected_only_when_a_step_needs_it():
    assert _session().train is None
    session = _session(needs_train=True)
    assert session.train.inputs.shape == (200, 1, 16) and session.n_classes == 2


def test_fixed_sweep_scores_every_width_and_keeps_each_ones_test_predictions():
    session = _session()
    rows = workflows.fixed_sweep(session, [8, 1])
    assert [(r.bits, r.scores.avg_bits) for r in rows] == [(8, 8.0), (1, 1.0)]
    assert rows[1].scores.size_kb < rows[0].scores.size_kb
    assert set(session.predictions) == {"fixed/8", "fixed/1"}
    assert predict(session.module, session.test).tolist() == session.predictions["fixed/1"], "left at the last width"


def test_the_paper_search_with_an_unbounded_margin_takes_every_layer_to_the_minimum_in_one_try_each():
    session = _session(grid="symmetric", scale="max")
    paper = LAQConfig(t_margin=float("inf"), min_bits=2, fidelity_weight=0.0, fallback="max")
    found, tensors = workflows.laq(session, paper)
    assert found.bits == dict.fromkeys(LAYERS, 2) and found.scores.avg_bits == 2.0
    assert found.evaluations == len(LAYERS) and [t.bits for t in found.layers[0].tried] == [2]
    assert {name: t.bits for name, t in tensors.items()} == found.bits
    assert found.signal.fallback == "max" and found.budget is None and found.recovery is None


def test_a_size_budget_records_what_it_came_to():
    session = _session()
    found, _ = workflows.laq(session, LAQConfig(target_bits=2.0))
    assert found.budget.met and found.budget.target_bits == 2.0 and found.scores.avg_bits <= 2.0
    assert found.budget.file_kb > found.scores.size_kb, "the file adds standardisation and a header"


def test_a_missed_file_budget_says_what_narrow_biases_and_statistics_would_come_to(caplog):
    session = _session(bias_bits=32, stats_bits=32)
    smallest = workflows.quantizer.file_size_kb(session.module, dict.fromkeys(LAYERS, 1), session.quantizer)
    with caplog.at_level("WARNING"):
        found, _ = workflows.laq(session, LAQConfig(target_kb=smallest / 2))
    assert not found.budget.met and found.bits == dict.fromkeys(LAYERS, 1)
    narrow = QuantizerConfig()
    expected = workflows.quantizer.file_size_kb(session.module, found.bits, narrow)
    assert expected < smallest
    assert (
        f"with quant.quantizer.bias_bits=8 quant.quantizer.stats_bits=16 it would be about {expected:.1f} KB"
        in caplog.text
    )


def test_a_refined_budget_records_its_path_and_ships_its_last_allocation():
    session = _session()
    found, tensors = workflows.laq(session, LAQConfig(target_bits=2.0))
    steps = found.budget.refinement
    assert steps and steps[-1].bits == found.bits == {name: t.bits for name, t in tensors.items()}
    assert [s.quality for s in steps] == sorted(s.quality for s in steps), "each step scores at least as high"
    assert all(s.file_kb > 0 for s in steps) and found.scores.avg_bits <= 2.0
    plain, _ = workflows.laq(_session(), LAQConfig(target_bits=2.0, budget_refine=False))
    assert plain.budget.refinement is None and steps[0].bits == plain.bits, "the path starts at the ladder's allocation"


def test_recovery_without_epochs_ships_the_searched_model_and_keeps_its_numbers_as_before_recovery():
    session = _session(needs_train=True)
    found, _ = workflows.laq(session, LAQConfig(t_margin=3.0))
    searched = session.predictions["laq"]
    recovered, shipped = workflows.recover(session, found, RecoveryConfig(epochs=0))
    assert recovered.recovery.chosen_epoch == 0 and [p.epoch for p in recovered.recovery.curve] == [0]
    assert recovered.before_recovery == found.scores and recovered.scores == found.scores
    assert session.predictions["laq_before_recovery"] == searched == session.predictions["laq"]
    assert {name: t.bits for name, t in shipped.items()} == found.bits


def test_recovery_with_narrow_storage_starts_from_the_searched_model_and_ships_stored_biases():
    import numpy as np

    from ser.dsp import storage
    from ser.quant.quantizer import quantizable_layers

    session = _session(needs_train=True, bias_bits=4)
    found, _ = workflows.laq(session, LAQConfig(t_margin=3.0))
    recovered, _ = workflows.recover(session, found, RecoveryConfig(epochs=3, lr=1e-2))
    assert recovered.recovery.curve[0].val_acc == found.scores.val_acc, "epoch 0 is the searched model as stored"
    layers = quantizable_layers(session.module)
    for name in found.bits:
        bias = layers[name].bias.detach().numpy()
        assert np.array_equal(storage.round_bias(bias, 4), bias)
        assert not hasattr(layers[name], "parametrizations"), "the model is plain again"


def test_greedy_with_an_unbounded_margin_reaches_the_minimum_width_everywhere():
    session = _session()
    result = workflows.greedy(session, SearchConfig(t_margin=float("inf"), min_bits=3))
    assert result.bits == dict.fromkeys(LAYERS, 3) and result.scores.avg_bits == 3.0
    assert result.evaluations >= 5 * len(LAYERS), "one bit at a time from 8 down to 3"
    assert "greedy" in session.predictions


def test_the_session_starts_from_the_full_precision_model():
    net, val, test, _ = _task()
    net = copy.deepcopy(net)
    full = predict(net, val)
    session = Session.open(net, val, test, None, QuantizerConfig(), False)
    assert session.baseline_val == pytest.approx(float((full == val.targets).float().mean()))
    assert torch.equal(predict(session.module, val), full)
