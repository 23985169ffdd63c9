"""The quantization callback: on any Linear/Conv network, and end to end through train.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from ser.dsp import grid
from ser.quant.callback import LayerwiseAdaptiveQuantization
from ser.quant.config import LAQConfig, QATConfig, QuantizerConfig, RecoveryConfig
from ser.quant.evaluation import SplitTensors, accuracy, predict


def _conv_task() -> tuple[nn.Module, SplitTensors, SplitTensors]:
    """A small conv net trained to tell rising from falling ramps (plus noise)."""
    gen = torch.Generator().manual_seed(0)
    ramps = torch.linspace(-1, 1, 16)

    def data(n):
        y = torch.randint(0, 2, (n,), generator=gen)
        x = torch.where(y[:, None] == 1, ramps, -ramps) + 0.8 * torch.randn(n, 16, generator=gen)
        return SplitTensors(x[:, None, :], y)

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 8, 5), nn.ReLU(), nn.Conv1d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10, 2)
    )
    train = data(512)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(train.inputs), train.targets).backward()
        opt.step()
    return net, data(200), data(200)


def test_laq_chooses_per_layer_bits_on_a_conv_network():
    net, val, test = _conv_task()
    before = [p.detach().clone() for p in net.parameters()]
    full = accuracy(net, val)
    results = LayerwiseAdaptiveQuantization(search=LAQConfig(t_margin=3.0)).run(net, val, test)
    assert full > 0.8
    assert [f.bits for f in results.fixed] == [8, 7, 6, 5, 4, 3, 2, 1]
    laq = results.laq
    assert [l.name for l in laq.layers] == ["0", "2", "5"]
    assert all(1 <= l.bits <= 8 for l in laq.layers) and laq.scores.avg_bits < 8
    for layer in laq.layers:  # Eq. 5: each layer's drop within its own adaptive margin, or a flagged fallback
        assert layer.drop <= layer.margin + 1e-6 or layer.fallback
    assert laq.layers[0].margin != laq.layers[1].margin, "margins adapt to each layer's importance"
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters())), "weights restored after the search"


def test_greedy_baseline_is_reported_next_to_laq():
    net, val, test = _conv_task()
    results = LayerwiseAdaptiveQuantization(fixed_bits=[], search=LAQConfig(t_margin=3.0), greedy=True).run(
        net, val, test
    )
    greedy = results.greedy
    assert set(greedy.bits) == {"0", "2", "5"} and greedy.scores.avg_bits < 8
    assert greedy.evaluations > results.laq.evaluations


def test_qat_fine_tuning_is_reported_next_to_laq():
    net, val, test = _conv_task()
    gen = torch.Generator().manual_seed(1)  # fine-tuning data of the same task, apart from validation
    y = torch.randint(0, 2, (256,), generator=gen)
    x = torch.where(y[:, None] == 1, torch.linspace(-1, 1, 16), -torch.linspace(-1, 1, 16)) + 0.8 * torch.randn(
        256, 16, generator=gen
    )
    loader = lambda: [(x[:, None, :], y)]  # noqa: E731
    cb = LayerwiseAdaptiveQuantization(
        fixed_bits=[],
        search=LAQConfig(min_bits=1, max_bits=1),
        recovery=RecoveryConfig(epochs=0),
        qat=QATConfig(epochs=20, lr=1e-3),
    )
    laq = cb.run(net, val, test, loader).laq
    qat, row = laq.qat.scores, laq.scores
    assert laq.qat.epochs == 20 and qat.avg_bits == row.avg_bits
    # Fine-tuned on other data of the task, the 1-bit model keeps its held-out accuracy (within one point).
    assert qat.val_acc >= row.val_acc - 0.01 and qat.test_acc >= row.test_acc - 0.01


def test_default_run_quantizes_well_below_8_bits_within_the_margin(default_run):
    run_dir, results = default_run
    laq, baseline = results["laq"], results["baseline"]
    assert [f["bits"] for f in results["fixed"]] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert results["fixed"][-1]["test_acc"] < baseline["test_acc"], "1 bit must cost accuracy on the built-in corpus"
    assert laq["avg_bits"] < 5
    for layer in laq["layers"]:  # each width kept is within its margin, or flagged as a fallback
        assert layer["drop"] <= layer["margin"] + 1e-6 or layer["fallback"]
        assert [t["bits"] for t in layer["tried"]][-1] >= layer["bits"]
    assert laq["before_recovery"]["avg_bits"] == laq["avg_bits"] and laq["recovery"]["epochs"] > 0
    assert laq["size_kb"] < results["fixed"][0]["size_kb"]
    assert laq["evaluations"] >= len(laq["layers"]) and laq["search_s"] < 10
    assert {l["rank"] for l in laq["layers"]} == {1, 2, 3, 4}


def test_default_run_writes_report_quantized_model_and_tensorboard_views(default_run):
    run_dir, results = default_run
    report = (run_dir / "report.md").read_text()
    assert "| 32-bit baseline |" in report and "| 1-bit fixed |" in report and "| LAQ |" in report
    saved = torch.load(run_dir / "quantized.pt", weights_only=True)
    assert {name: layer["bits"] for name, layer in saved["layers"].items()} == {
        l["name"]: l["bits"] for l in results["laq"]["layers"]
    }
    assert saved["format"] == "ser-quant-v2" and saved["quantizer"]["grid"] == "full"
    for name, layer in saved["layers"].items():
        back = grid.dequantize(layer["codes"].numpy(), layer["scales"].numpy(), layer["bits"], layer["grid"])
        np.testing.assert_array_equal(back, saved["state_dict"][f"{name}.weight"].numpy())
        assert torch.equal(layer["bias"], saved["state_dict"][f"{name}.bias"])
    assert "laq_before_recovery" in results["test_predictions"]["models"]
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0}).Reload()
    assert {"quant/fixed/test_acc", "quant/laq/avg_bits", "laq/bits/net.0", "laq/importance/net.0"} <= set(
        events.Tags()["scalars"]
    )
    assert "quant/accuracy_vs_bits" in events.Tags()["images"]
    assert "quant/report/text_summary" in events.Tags()["tensors"]
    assert [e.step for e in events.Scalars("quant/fixed/test_acc")] == [1, 2, 3, 4, 5, 6, 7, 8]  # increasing steps
    assert {"laq/drop/net.0", "laq/fallback/net.0", "quant/recovery/val_kl"} <= set(events.Tags()["scalars"])
    assert "widths tried" in report and "Recovery:" in report


def _loader(data: SplitTensors):
    return lambda: [(data.inputs[i : i + 64], data.targets[i : i + 64]) for i in range(0, len(data.inputs), 64)]


def test_recovered_model_is_the_laq_model_and_its_artifact(tmp_path):
    net, val, test = _conv_task()
    train = _conv_task()[1]
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    cb = LayerwiseAdaptiveQuantization(
        fixed_bits=[2], search=LAQConfig(t_margin=3.0), recovery=RecoveryConfig(epochs=5)
    )
    laq = cb.run(net, val, test, _loader(train)).laq
    assert laq.before_recovery.avg_bits == laq.scores.avg_bits and laq.before_recovery.size_kb == laq.scores.size_kb
    assert 0 <= laq.recovery.chosen_epoch <= 5 and len(laq.recovery.curve) == 6
    curve = laq.recovery.curve
    assert curve[laq.recovery.chosen_epoch].val_kl == min(p.val_kl for p in curve)
    assert set(cb.predictions) == {"fixed/2", "laq", "laq_before_recovery"}
    assert all(torch.equal(before[k], p) for k, p in net.named_parameters()), "weights restored after recovery"
    cb.save(tmp_path / "quantized.pt")
    saved = torch.load(tmp_path / "quantized.pt", weights_only=True)
    state = saved["state_dict"]
    for name, layer in saved["layers"].items():
        assert layer["codes"].dtype == torch.uint8
        np.testing.assert_array_equal(
            grid.dequantize(layer["codes"].numpy(), layer["scales"].numpy(), layer["bits"], "full"),
            state[f"{name}.weight"].numpy(),
        )
    net.load_state_dict(state)  # the artifact alone reproduces the shipped model's predictions
    assert predict(net, test).tolist() == cb.predictions["laq"]


@pytest.mark.parametrize("budget", [{"target_bits": 2.0}, {"target_kb": 0.1}])
def test_size_budget_is_met_or_flagged(budget, caplog):
    net, val, test = _conv_task()
    laq = LayerwiseAdaptiveQuantization(fixed_bits=[], search=LAQConfig(**budget)).run(net, val, test, _loader(val)).laq
    if "target_bits" in budget:
        assert laq.budget.met and laq.scores.avg_bits <= 2.0 + 1e-9
    else:  # 0.1 KB is below even the all-1-bit model (biases and scales are 32-bit)
        assert not laq.budget.met and all(l.bits == 1 for l in laq.layers)
        assert "cannot be met" in caplog.text


def test_bias_correction_and_fallback_leave_the_model_unchanged():
    net, val, test = _conv_task()
    before = [p.detach().clone() for p in net.parameters()]
    cb = LayerwiseAdaptiveQuantization(quantizer=QuantizerConfig(bias_correction=True), search=LAQConfig(t_margin=0.0))
    results = cb.run(net, val, test, _loader(val))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert results.laq.quantizer.bias_correction is True
