"""The NSL student: cross-entropy plus a term that pulls graph neighbours' embeddings together."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.nn import functional as F

from ser.models.mlp import MLP
from ser.models.module import SERClassifier
from ser.transfer.student import GraphRegularizedClassifier

# training_step is called directly, without a Trainer for self.log to report to.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

NET = partial(MLP, hidden=[16, 8], dropout=0.0)
ADAM = partial(torch.optim.Adam, lr=1e-2)


def _student(weight: float) -> GraphRegularizedClassifier:
    torch.manual_seed(0)
    return GraphRegularizedClassifier(NET, ADAM, 6, ["a", "b", "c"], graph_weight=weight)


def _batch(n: int = 12, k: int = 2):
    gen = torch.Generator().manual_seed(1)
    return (
        torch.randn(n, 6, generator=gen),
        torch.randint(0, 3, (n,), generator=gen),
        torch.randn(n, k, 6, generator=gen),
        torch.ones(n, k),
    )


def _cosine_to_neighbours(model, batch) -> float:
    x, _, neighbors, _ = batch
    with torch.no_grad():
        own, theirs = model.embed(x), model.embed(neighbors.flatten(0, 1)).view(len(x), -1, 8)
    return float(F.cosine_similarity(own[:, None], theirs, dim=-1).mean())


def test_without_graph_weight_the_loss_is_plain_cross_entropy():
    batch = _batch()
    torch.manual_seed(0)
    plain = SERClassifier(NET, ADAM, 6, ["a", "b", "c"])
    assert torch.equal(_student(0.0).training_step(batch, 0), plain.training_step(batch[:2], 0))


def test_edges_of_weight_zero_add_nothing():
    x, y, neighbors, _ = _batch()
    student = _student(5.0)
    loss = student.training_step((x, y, neighbors, torch.zeros(12, 2)), 0)
    torch.testing.assert_close(loss, F.cross_entropy(student(x), y))


def test_graph_term_is_positive_and_scales_with_the_weight():
    batch = _batch()
    ce = F.cross_entropy(_student(1.0)(batch[0]), batch[1])
    extra = {w: float(_student(w).training_step(batch, 0).detach() - ce.detach()) for w in (1.0, 3.0)}
    assert extra[1.0] > 0 and abs(extra[3.0] - 3 * extra[1.0]) < 1e-5


def test_training_with_the_graph_pulls_neighbours_embeddings_together():
    batch = _batch()
    cosines = {}
    for weight in (0.0, 1.0):
        model = _student(weight)
        optimizer = model.configure_optimizers()
        for _ in range(60):
            optimizer.zero_grad()
            model.training_step(batch, 0).backward()
            optimizer.step()
        cosines[weight] = _cosine_to_neighbours(model, batch)
    assert cosines[1.0] > 0.9 > cosines[0.0]


def test_a_convolutional_student_takes_the_same_graph_term():
    from ser.models.lightsernet import LightSERNet

    torch.manual_seed(0)
    net = partial(LightSERNet, path_channels=4, block_channels=(8, 8, 8, 8), head_channels=8)
    student = GraphRegularizedClassifier(net, ADAM, (5, 16), ["a", "b"], graph_weight=1.0).eval()  # eval: no dropout
    x, y = torch.randn(4, 5, 16), torch.tensor([0, 1, 0, 1])
    neighbors, weights = torch.randn(4, 3, 5, 16), torch.full((4, 3), 0.5)
    loss = student.training_step((x, y, neighbors, weights), 0)
    assert loss.isfinite() and loss > F.cross_entropy(student(x), y)
