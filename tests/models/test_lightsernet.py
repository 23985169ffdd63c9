"""Light-SERNet: the published layer list, and that it learns on frame sequences."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from ser.errors import SERError
from ser.models.lightsernet import LightSERNet
from ser.models.module import SERClassifier
from ser.quant.quantizer import quantizable_layers

SMALL = dict(path_channels=4, block_channels=(8, 8, 16, 16), head_channels=16)


def test_parameter_count_matches_the_published_layers():
    paths = (11 * 1 + 1) * 32 + (1 * 9 + 1) * 32 + (3 * 3 + 1) * 32 + 3 * 2 * 32  # convs + batch norms
    blocks = sum(9 * i * o + 2 * o for i, o in [(96, 64), (64, 96), (96, 128), (128, 160)])  # no conv bias
    head = 160 * 320 + 2 * 320 + 320 * 7 + 7
    assert sum(p.numel() for p in LightSERNet((40, 188), 7).parameters()) == paths + blocks + head == 461_703


def test_pooling_shapes_follow_the_paper_and_output_is_logits():
    net = LightSERNet((40, 188), 7).eval()
    x = torch.randn(2, 40, 188)
    image = x.transpose(1, 2).unsqueeze(1)
    assert net.paths[0](image).shape == (2, 32, 94, 20)  # 2x2 average pooling, "same" convolution
    maps = net.blocks(torch.cat([p(image) for p in net.paths], dim=1))
    assert maps.shape == (2, 320, 94 // 4 // 2 // 2 + 1, 20 // 4)  # time /16 (rounded up), coefficients /4
    assert net.embed(x).shape == (2, 320) and net(x).shape == (2, 7)


def test_any_number_of_frames_works_thanks_to_global_pooling():
    net = LightSERNet((40, 10), 5, **SMALL).eval()
    assert net(torch.randn(3, 40, 10)).shape == net(torch.randn(3, 40, 301)).shape == (3, 5)


def test_paths_have_time_frequency_and_square_kernels():
    kernels = [path[0].kernel_size for path in LightSERNet((40, 188), 7).paths]
    assert kernels == [(11, 1), (1, 9), (3, 3)]


def test_every_convolution_and_the_classifier_can_be_quantized():
    layers = quantizable_layers(LightSERNet((40, 188), 7))
    assert len(layers) == 3 + 4 + 1 + 1
    assert sum(isinstance(l, nn.Conv2d) for l in layers.values()) == 8


def test_pooled_vectors_are_refused_with_the_setting_to_change():
    with pytest.raises(SERError, match="pooling=none"):
        LightSERNet(180, 7)


def test_classifier_standardises_frames_per_channel():
    mean, std = torch.arange(3.0)[:, None], torch.full((3, 1), 2.0)
    model = SERClassifier(partial(LightSERNet, **SMALL), partial(torch.optim.Adam), (3, 12), ["a", "b"], mean, std)
    model.eval()
    x = torch.randn(2, 3, 12)
    torch.testing.assert_close(model(x * 2 + mean), model.net(x))
    assert model.hparams["n_features"] == [3, 12]
