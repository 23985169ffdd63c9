"""The LightningModule's training options: label smoothing, mixup, input noise, LR schedule."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.nn import functional as F

from ser.errors import SERError
from ser.models.mlp import MLP
from ser.models.module import Regularization, SERClassifier

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

X, Y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def _model(**kwargs) -> SERClassifier:
    torch.manual_seed(0)
    return SERClassifier(
        partial(MLP, hidden=[6], dropout=0.0), partial(torch.optim.SGD, lr=0.1), 4, ["a", "b", "c"], **kwargs
    )


def test_plain_training_step_is_cross_entropy():
    model = _model()
    torch.testing.assert_close(model.training_step((X, Y), 0), F.cross_entropy(model(X), Y))


def test_label_smoothing_enters_the_training_loss_only():
    model = _model(regularization={"label_smoothing": 0.2})
    torch.testing.assert_close(model.training_step((X, Y), 0), F.cross_entropy(model(X), Y, label_smoothing=0.2))
    with torch.no_grad():
        torch.testing.assert_close(model._step((X, Y))[0], F.cross_entropy(model(X), Y))


def test_mixup_mixes_inputs_and_both_targets_with_one_beta_weight():
    model = _model(regularization={"mixup_alpha": 0.4})
    torch.manual_seed(5)
    loss = model.training_step((X, Y), 0)
    torch.manual_seed(5)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    partner = torch.randperm(len(Y))
    logits = model.net(lam * X + (1 - lam) * X[partner])
    expected = lam * F.cross_entropy(logits, Y) + (1 - lam) * F.cross_entropy(logits, Y[partner])
    torch.testing.assert_close(loss, expected)
    assert 0 < lam < 1


def test_input_noise_perturbs_the_standardised_features():
    model = _model(regularization={"input_noise": 0.5})
    torch.manual_seed(3)
    loss = model.training_step((X, Y), 0)
    torch.manual_seed(3)
    noisy = X + 0.5 * torch.randn_like(X)
    torch.testing.assert_close(loss, F.cross_entropy(model.net(noisy), Y))
    assert not torch.allclose(loss, F.cross_entropy(model(X), Y))


def test_scheduler_is_stepped_per_epoch():
    model = _model(scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "epoch"
    config["optimizer"].step()
    config["lr_scheduler"]["scheduler"].step()
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(0.05)


def test_regularisation_settings_are_checked():
    with pytest.raises(SERError, match="label_smoothing=1.0 must be in"):
        Regularization(label_smoothing=1.0)
