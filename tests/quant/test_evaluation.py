"""Evaluation in batches sized by input numbers: the same logits as one batch, cache-sized batches."""

from __future__ import annotations

import torch
from torch import nn

from ser.quant.evaluation import BATCH_ELEMENTS, SplitTensors, batch_rows, logits, predict


def test_batches_hold_at_most_batch_elements_input_numbers_and_at_least_one_utterance():
    assert batch_rows(torch.zeros(1000, 180)) == BATCH_ELEMENTS // 180 == 364
    assert batch_rows(torch.zeros(960, 40, 188)) == 8
    assert batch_rows(torch.zeros(3, 100_000)) == 1


def test_logits_in_batches_equal_one_batch_for_a_convolutional_network():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()
    data = SplitTensors(torch.randn(50, 40, 188), torch.zeros(50, dtype=torch.long))
    with torch.no_grad():
        whole = net(data.inputs)
    batched = logits(net, data)
    torch.testing.assert_close(batched, whole, rtol=1e-6, atol=1e-7)
    assert torch.equal(predict(net, data), whole.argmax(dim=1))
