"""The numpy runtime's convolutional pieces (Light-SERNet graphs) and frame-sequence features, against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ser.data.features import FeatureConfig, FeatureExtractor
from ser.errors import SERError
from ser.runtime import model_file
from ser.runtime.features import Extractor
from ser.runtime.graph import Graph, avgpool2d, conv2d_same
from ser.runtime.model import QuantizedModel
from ser.runtime.serq import GraphSpec, SerqHeader
from tests.data.test_features import _speechlike


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("kernel", [(11, 1), (1, 9), (3, 3), (1, 1), (2, 4)])
def test_conv2d_same_equals_torch(kernel):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 17, 10)).astype(np.float32)
    w = rng.standard_normal((5, 3, *kernel)).astype(np.float32)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same").numpy()
    np.testing.assert_allclose(conv2d_same(x, w), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 6), (17, 5), (1, 3), (9, 1)])
@pytest.mark.parametrize("kernel", [(2, 2), (2, 1), (3, 2)])
@pytest.mark.parametrize("ceil_mode", [True, False])
def test_average_pooling_equals_torch_at_odd_sizes(size, kernel, ceil_mode):
    if not ceil_mode and (size[0] < kernel[0] or size[1] < kernel[1]):
        pytest.skip("no output without ceil_mode")
    x = np.random.default_rng(1).standard_normal((2, 3, *size)).astype(np.float32)
    ref = F.avg_pool2d(torch.from_numpy(x), kernel, kernel, ceil_mode=ceil_mode).numpy()
    ours = avgpool2d(x, kernel, kernel, ceil_mode)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(
            sample_rate=16000, n_fft=1024, hop_length=256, n_mels=40, parts=("mfcc",), pooling="none", frames=188
        ),  # conf/data/features/lightsernet.yaml
        FeatureConfig(pooling="none", frames=64, crop="start", deltas=True, stats=("mean", "std")),
        FeatureConfig(pooling="none", frames=100, deltas=True, delta_width=5, parts=("mfcc", "chroma")),
    ],
    ids=["lightsernet", "start-deltas", "chroma-deltas"],
)
def test_frame_sequences_equal_the_torch_extractor(config):
    """Cropped (centre or start) when long, continued with silence frames when short, in one batch as in training."""
    signals = [_speechlike(i, s) for i, s in enumerate([0.4, 1.0, 1.73, 2.5, 3.7])]
    signals[2][20000:] = 0.0
    signals.append(np.zeros(100, np.float32))
    reference = FeatureExtractor(config, batch_size=3)(signals)
    extractor = Extractor(config)
    for y, ref in zip(signals, reference):
        ours = extractor(y)
        assert ours.dtype == np.float32 and ours.shape == ref.shape == config.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def _tiny_graph() -> dict:
    return {
        "kind": "graph",
        "input": [2, 4],
        "output": "logits",
        "ops": [
            {"op": "unsqueeze", "in": ["input"], "axis": 1},
            {"op": "conv2d", "layer": "c", "kernel": [3, 3], "padding": "same", "scale": "c.s", "shift": "c.t"},
            {"op": "relu"},
            {"op": "avgpool2d", "kernel": [2, 2], "stride": [2, 2], "ceil_mode": True},
            {"op": "mean", "axes": [2, 3]},
            {"op": "linear", "out": "logits", "layer": "l", "bias": "l.b"},
        ],
    }


def _spec() -> GraphSpec:
    network = _tiny_graph()
    return GraphSpec(tuple(network["input"]), network["ops"], network["output"])


def test_a_graph_runs_its_ops_on_named_and_implicit_tensors():
    rng = np.random.default_rng(2)
    wc, wl = rng.standard_normal((3, 1, 3, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
    s, t, b = (rng.standard_normal(n).astype(np.float32) for n in (3, 3, 2))
    graph = Graph.load("g", _spec(), {"c": wc, "l": wl}, {"c.s": s, "c.t": t, "l.b": b})
    x = rng.standard_normal((5, 2, 4)).astype(np.float32)
    y = F.conv2d(torch.from_numpy(x)[:, None], torch.from_numpy(wc), padding="same")
    y = torch.relu(y * torch.from_numpy(s)[None, :, None, None] + torch.from_numpy(t)[None, :, None, None])
    y = F.avg_pool2d(y, 2, ceil_mode=True).mean(dim=(2, 3)) @ torch.from_numpy(wl).T + torch.from_numpy(b)
    np.testing.assert_allclose(graph(x), y.numpy(), rtol=1e-5, atol=1e-6)


def test_an_unknown_op_or_a_missing_section_is_refused():
    network = _tiny_graph()
    network["ops"][2] = {"op": "gelu"}
    header = {
        "classes": ["a", "b"],
        "features": FeatureConfig(pooling="none", frames=4).to_dict(),
        "network": network,
        "layers": [],
        "quantizer": {"per_channel": False},
    }
    with pytest.raises(model_file.ModelFileError, match="'gelu' is not known.*upgrade ser"):
        SerqHeader.parse(header, "g")
    with pytest.raises(model_file.ModelFileError, match="needs sections"):
        Graph.load("g", _spec(), {"c": np.zeros((3, 1, 3, 3)), "l": np.zeros((2, 3))}, {"c.s": 0, "l.b": 0})


def test_a_file_with_a_graph_is_version_4_and_a_graph_model_refuses_pooled_vectors(tmp_path):
    from ser.runtime.model_file import Section

    config = FeatureConfig(pooling="none", frames=4, parts=("mfcc",), n_mfcc=2)
    codes = {"c": np.ones((3, 1, 3, 3), np.uint8), "l": np.ones((2, 3), np.uint8)}
    sections = [
        Section("feature_mean", np.zeros((2, 1), np.float32)),
        Section("feature_std", np.ones((2, 1), np.float32)),
    ]
    for name, c in codes.items():
        sections += [Section(f"{name}.scales", np.ones(1, np.float32)), Section(f"{name}.codes", c, 2)]
    sections += [Section(n, np.ones(k, np.float32)) for n, k in (("c.s", 3), ("c.t", 3), ("l.b", 2))]
    header = {
        "classes": ["a", "b"],
        "features": config.to_dict(),
        "network": _tiny_graph(),
        "layers": [{"name": n, "shape": list(c.shape), "bits": 2, "grid": "full"} for n, c in codes.items()],
        "quantizer": {"per_channel": False},
    }
    model_file.write(tmp_path / "g.serq", header, sections)
    assert (tmp_path / "g.serq").read_bytes()[4:6] == (4).to_bytes(2, "little")
    model = QuantizedModel.load(tmp_path / "g.serq")
    assert model.probabilities(np.zeros((2, 4), np.float32)).shape == (1, 2)
    assert model.probabilities(np.zeros((3, 2, 4), np.float32)).shape == (3, 2)
    with pytest.raises(SERError, match="frame sequences"):
        model.probabilities(np.zeros((3, 8), np.float32))
