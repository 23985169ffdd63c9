"""The paper's MLP and its LightningModule."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ser.models.mlp import MLP
from ser.models.module import SERClassifier


def test_default_mlp_has_the_paper_widths_and_dropout():
    net = MLP(180, 7)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(180, 256), (256, 512), (512, 64), (64, 7)]
    assert [m.p for m in net if isinstance(m, nn.Dropout)] == [0.1, 0.1, 0.1]


def test_depth_variants_follow_the_hidden_list():
    net = MLP(180, 7, hidden=[256, 64])
    assert sum(p.numel() for p in net.parameters()) == 180 * 256 + 256 + 256 * 64 + 64 + 64 * 7 + 7


def test_classifier_standardises_inside_the_model_and_saves_the_statistics(tmp_path):
    mean, std = torch.full((4,), 10.0), torch.full((4,), 2.0)
    model = SERClassifier(partial(MLP, hidden=[8]), partial(torch.optim.Adam, lr=1e-3), 4, ["a", "b"], mean, std)
    model.eval()
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x * 2 + 10), model.net(x))
    assert set(model.state_dict()) >= {"feature_mean", "feature_std"}
    assert model.hparams["classes"] == ["a", "b"] and model.n_params() == 4 * 8 + 8 + 8 * 2 + 2


def test_embed_then_head_is_the_forward_pass():
    net = MLP(6, 3, hidden=[5, 4]).eval()
    x = torch.randn(2, 6)
    assert net.embed(x).shape == (2, 4)
    torch.testing.assert_close(net.head(net.embed(x)), net(x))


def test_mlp_refuses_frame_sequences_with_the_setting_to_change():
    import pytest

    from ser.errors import SERError

    with pytest.raises(SERError, match="pooling=stats"):
        MLP((40, 188), 7)
