"""Export from memory: a LAQ artifact made by the callback on a small model, no run directory, shipped bit for bit."""

from __future__ import annotations

import filecmp
from functools import partial

import numpy as np
import pytest
import torch

from ser.dsp import storage
from ser.dsp.feature_config import FeatureConfig
from ser.errors import SERError
from ser.export import (
    ExportSource,
    theoretical_bytes,
    to_serq,
    write_c,
    write_onnx,
    write_serq,
)
from ser.models.lightsernet import LightSERNet
from ser.models.mlp import MLP
from ser.models.module import SERClassifier
from ser.quant.artifact import FORMAT, ArtifactMetadata, QuantizedArtifact
from ser.quant.callback import LayerwiseAdaptiveQuantization
from ser.quant.config import LAQConfig, QuantizerConfig, RecoveryConfig
from ser.quant.evaluation import SplitTensors
from ser.runtime import model_file
from ser.runtime.model import QuantizedModel
from ser.runtime.serq import SerqModel

CLASSES = ["angry", "happy", "neutral", "sad"]
MLP_FEATURES = FeatureConfig(parts=("mfcc",), n_mfcc=20)  # 20-d pooled vectors
GRAPH_FEATURES = FeatureConfig(parts=("mfcc",), n_mfcc=8, pooling="none", frames=16)  # (8, 16) frame sequences
SMALL_LIGHTSERNET = {"path_channels": 4, "block_channels": [8, 8, 8, 8], "head_channels": 8}
NARROW = {"bias_bits": 8, "stats_bits": 16}  # the default storage (ser.quant.config.QuantizerConfig)


def _split(shape, n: int, seed: int) -> SplitTensors:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, len(CLASSES), (n,), generator=gen)
    x = torch.randn(n, *shape, generator=gen) + y.float().reshape(-1, *([1] * len(shape)))
    return SplitTensors(3.0 * x + 1.0, y)


def _quantized(
    module: SERClassifier, shape, features: FeatureConfig, network: str, net_config: dict, **quant
) -> tuple[SERClassifier, QuantizedArtifact]:
    """LAQ (the default quantizer, with ``quant``'s storage; the paper's search, no recovery) on ``module``, and its
    artifact with the callback's metadata; the module then holds the artifact's state (the fake-quantized model
    the runtimes must reproduce)."""
    torch.manual_seed(0)
    cb = LayerwiseAdaptiveQuantization(
        fixed_bits=[],
        quantizer=QuantizerConfig(**quant),
        search=LAQConfig(t_margin=10.0, fidelity_weight=0.0, fallback="max"),
        recovery=RecoveryConfig(epochs=0),
    )
    cb.run(module.eval(), _split(shape, 48, 1), _split(shape, 48, 2))
    artifact = cb.artifact
    artifact.metadata = ArtifactMetadata(
        CLASSES,
        module.hparams["n_features"],
        module.normalize,
        module.hparams["speaker_prior_weight"],
        features,
        network,
        net_config,
    )
    module.load_state_dict(artifact.state_dict)
    return module.eval(), artifact


def _mlp(speaker: bool = False, **quant) -> tuple[SERClassifier, QuantizedArtifact]:
    torch.manual_seed(0)
    population = (torch.rand(20) * 2, torch.rand(20) + 0.5) if speaker else None
    module = SERClassifier(
        partial(MLP, hidden=[24, 12]),
        torch.optim.Adam,
        20,
        CLASSES,
        torch.rand(20) * 3,
        torch.rand(20) * 2 + 0.5,
        speaker_population=population,
        speaker_prior_weight=2.0 * speaker,
    )
    return _quantized(module, (20,), MLP_FEATURES, "ser.models.mlp.MLP", {"_target_": "ser.models.mlp.MLP"}, **quant)


@pytest.fixture(scope="module")
def mlp():
    return _mlp(**NARROW)


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    module = SERClassifier(
        partial(LightSERNet, **SMALL_LIGHTSERNET),
        torch.optim.Adam,
        [8, 16],
        CLASSES,
        torch.rand(8, 1),
        torch.rand(8, 1) + 0.5,
    )
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # batch norm as trained
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.uniform_(-0.2, 0.2)
    config = {"_target_": "ser.models.lightsernet.LightSERNet", "_partial_": True, **SMALL_LIGHTSERNET}
    return _quantized(module, (8, 16), GRAPH_FEATURES, "ser.models.lightsernet.LightSERNet", config, **NARROW)


def _torch(module: SERClassifier, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(module(x), dim=1).numpy()


def _onnx(path, **inputs: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)[0]


def _parity(ours: np.ndarray, reference: np.ndarray) -> None:
    np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1))
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


# -- the artifact ----------------------------------------------------------------------------------------------------


def test_an_artifact_saves_as_the_plain_dict_it_always_was_and_loads_back_typed(mlp, tmp_path):
    _, artifact = mlp
    artifact.save(tmp_path / "quantized.pt")
    raw = torch.load(tmp_path / "quantized.pt", weights_only=True)
    assert raw["format"] == FORMAT == "ser-quant-v2" and list(raw) == [
        "format",
        "layers",
        "state_dict",
        "quantizer",
        "metadata",
    ]
    assert list(raw["layers"]["net.0"]) == ["bits", "grid", "per_channel", "shape", "codes", "scales", "bias", "weight"]
    assert raw["quantizer"] == {**artifact.quantizer.as_dict(), "bias_correction": False}
    assert raw["metadata"]["features"] == MLP_FEATURES.to_dict() and raw["metadata"]["classes"] == CLASSES
    back = QuantizedArtifact.load(tmp_path / "quantized.pt")
    assert back.bits == artifact.bits and back.metadata == artifact.metadata and back.quantizer == artifact.quantizer
    for name, layer in artifact.layers.items():
        assert torch.equal(back.layers[name].codes, layer.codes) and torch.equal(back.layers[name].bias, layer.bias)


def test_an_artifact_of_an_older_format_reads_as_none_and_of_a_newer_one_is_refused(tmp_path):
    torch.save({"format": "ser-fakequant-v1", "state_dict": {}}, tmp_path / "old.pt")
    assert QuantizedArtifact.load(tmp_path / "old.pt") is None and QuantizedArtifact.load(tmp_path / "none.pt") is None
    torch.save({"format": "ser-quant-v9"}, tmp_path / "new.pt")
    with pytest.raises(SERError, match="'ser-quant-v9', this ser exports ser-quant-v2; upgrade ser"):
        QuantizedArtifact.load(tmp_path / "new.pt")


def test_a_layer_beyond_8_bits_is_refused_where_the_artifact_is_read(mlp, tmp_path):
    raw = mlp[1].to_dict()
    raw["layers"]["net.0"] = {**raw["layers"]["net.0"], "bits": 9}
    torch.save(raw, tmp_path / "quantized.pt")
    with pytest.raises(SERError, match="layer net.0 has grid 'full' at 9 bits.*upgrade ser"):
        QuantizedArtifact.load(tmp_path / "quantized.pt")


@pytest.mark.parametrize("damage", ["codes", "bias", "statistics"])
def test_an_artifact_that_is_not_what_its_quantizer_stores_is_refused(mlp, damage):
    raw = mlp[1].to_dict()
    layer = raw["layers"]["net.0"] = dict(raw["layers"]["net.0"])
    raw["state_dict"] = dict(raw["state_dict"])
    if damage == "codes":
        layer["codes"] = (layer["codes"].long() ^ 1).clamp(max=2 ** layer["bits"] - 1).to(torch.uint8)
    elif damage == "bias":
        layer["bias"] = layer["bias"] + 1e-4
    else:
        raw["state_dict"]["feature_std"] = raw["state_dict"]["feature_std"] * 1.001
    expected = {
        "codes": "net.0's codes and scales do not give its stored weight",
        "bias": "not on its 8-bit grid",
        "statistics": "feature_std are not stored at 16 bits",
    }[damage]
    with pytest.raises(SERError, match=expected):
        ExportSource.from_artifact(QuantizedArtifact.from_dict(raw, "quantized.pt"))


def test_an_artifact_without_metadata_or_a_graph_without_its_network_cannot_export(mlp, graph):
    raw = mlp[1].to_dict()
    del raw["metadata"]
    with pytest.raises(SERError, match="no metadata"):
        ExportSource.from_artifact(QuantizedArtifact.from_dict(raw, "quantized.pt"))
    with pytest.raises(SERError, match="LightSERNet exports from its network: pass net"):
        ExportSource.from_artifact(graph[1])


# -- the MLP ---------------------------------------------------------------------------------------------------------


def test_the_file_holds_the_artifacts_codes_scales_biases_and_statistics(mlp, tmp_path):
    _, artifact = mlp
    size = write_serq(ExportSource.from_artifact(artifact), tmp_path / "m.serq")
    assert size == (tmp_path / "m.serq").stat().st_size
    assert (tmp_path / "m.serq").read_bytes()[4:6] == (5).to_bytes(2, "little"), "narrow sections: version 5"
    header, arrays = model_file.read(tmp_path / "m.serq")
    assert [l["name"] for l in header["layers"]] == ["net.0", "net.3", "net.6"]
    assert [l["activation"] for l in header["layers"]] == ["relu", "relu", "none"]
    table = {s["name"]: s for s in header["sections"]}
    for spec in header["layers"]:
        stored = artifact.layers[spec["name"]]
        assert (spec["bits"], spec["grid"], spec["shape"]) == (stored.bits, "full", stored.shape)
        np.testing.assert_array_equal(arrays[f"{spec['name']}.codes"], stored.codes.numpy())
        np.testing.assert_array_equal(arrays[f"{spec['name']}.scales"], stored.scales.numpy())
        np.testing.assert_array_equal(arrays[f"{spec['name']}.bias"], stored.bias.numpy())
        entry = table[f"{spec['name']}.bias"]
        assert entry["bits"] == 8 and entry["nbytes"] == stored.bias.numel() and np.log2(entry["scale"]).is_integer()
    assert table["feature_mean"]["dtype"] == "f2" and table["feature_mean"]["unit"] == "feature_std"
    assert table["feature_std"]["dtype"] == "bf16"
    for name in ("feature_mean", "feature_std"):
        assert table[name]["nbytes"] == 2 * arrays[name].size
        np.testing.assert_array_equal(arrays[name], artifact.state_dict[name].numpy())


def test_the_file_reads_back_as_the_typed_model_it_was_written_from(mlp, tmp_path):
    serq = to_serq(ExportSource.from_artifact(mlp[1]))
    serq.write(tmp_path / "m.serq")
    back = SerqModel.read(tmp_path / "m.serq")
    assert back.header == serq.header and list(back.arrays) == list(serq.arrays)
    for name, values in serq.arrays.items():
        np.testing.assert_array_equal(back.arrays[name], values)


def test_the_file_size_is_the_theoretical_size_plus_its_header(mlp, tmp_path):
    source = ExportSource.from_artifact(mlp[1])
    size = write_serq(source, tmp_path / "m.serq")
    header_bytes = int.from_bytes((tmp_path / "m.serq").read_bytes()[6:10], "little")
    weights = sum(layer.codes.size * layer.bits for layer in source.layers.values()) / 8
    biases = sum(layer.bias.size + 4 for layer in source.layers.values())  # 8-bit codes and a float32 scale
    scales, statistics = 4 * len(source.layers), 2 * 2 * 20  # mean and std in 16 bits
    assert theoretical_bytes(source) == weights + biases + scales + statistics
    assert theoretical_bytes(source) + header_bytes <= size <= theoretical_bytes(source) + header_bytes + 32 + 3 * 7


def test_the_numpy_runtime_and_onnx_compute_the_fake_quantized_torch_model(mlp, tmp_path):
    module, artifact = mlp
    source = ExportSource.from_artifact(artifact)
    x = _split((20,), 64, 3).inputs
    reference = _torch(module, x)
    _parity(QuantizedModel.from_serq(to_serq(source)).probabilities(x.numpy()), reference)
    write_onnx(source, tmp_path / "m.onnx")
    _parity(_onnx(tmp_path / "m.onnx", features=x.numpy()), reference)


def test_a_speaker_normalised_model_ships_its_population_and_takes_speaker_statistics(tmp_path):
    module, artifact = _mlp(speaker=True, **NARROW)
    source = ExportSource.from_artifact(artifact)
    write_serq(source, tmp_path / "m.serq")
    header, arrays = model_file.read(tmp_path / "m.serq")
    assert header["normalize"] == {"kind": "speaker", "prior_weight": 2.0}
    np.testing.assert_array_equal(arrays["population_mean"], artifact.state_dict["population_mean"].numpy())
    assert {s["name"]: s.get("dtype", "f4") for s in header["sections"]}["population_std"] == "f4", (
        "population: float32"
    )
    model = QuantizedModel.load(tmp_path / "m.serq")
    raw = _split((20,), 16, 4).inputs
    stats = model.enrol(raw.numpy())
    reference = _torch(module, (raw - torch.from_numpy(stats.mean)) / torch.from_numpy(stats.std))
    _parity(model.probabilities(raw.numpy(), stats), reference)
    write_onnx(source, tmp_path / "m.onnx")
    means, stds = (np.broadcast_to(v, raw.shape).astype(np.float32) for v in (stats.mean, stats.std))
    _parity(_onnx(tmp_path / "m.onnx", features=raw.numpy(), speaker_mean=means, speaker_std=stds), reference)


def test_a_paper_quantizer_writes_float32_biases_and_statistics_readable_by_the_first_runtimes(tmp_path):
    _, artifact = _mlp(bias_bits=32, stats_bits=32)
    write_serq(ExportSource.from_artifact(artifact), tmp_path / "m.serq")
    header, _ = model_file.read(tmp_path / "m.serq")
    assert (tmp_path / "m.serq").read_bytes()[4:6] == (3).to_bytes(2, "little"), "full grid: version 3"
    assert all("bits" not in s and "dtype" not in s for s in header["sections"] if not s["name"].endswith(".codes"))


def test_the_c_library_is_generated_from_the_same_model_the_file_holds(mlp, tmp_path):
    source = ExportSource.from_artifact(mlp[1])
    summary = write_c(source, tmp_path / "memory")
    write_serq(source, tmp_path / "m.serq")
    from ser.runtime import c_export

    assert c_export.generate(SerqModel.read(tmp_path / "m.serq"), tmp_path / "file") == summary
    files = sorted(p.relative_to(tmp_path / "memory") for p in (tmp_path / "memory").rglob("*") if p.is_file())
    assert "ser_model.c" in map(str, files)
    assert all(filecmp.cmp(tmp_path / "memory" / f, tmp_path / "file" / f, shallow=False) for f in files)
    weights = sum(layer.shape[0] * -(-layer.shape[1] * layer.bits // 8) for layer in source.layers.values())
    assert summary["weight_bytes"] == weights, "each row from a byte boundary"


# -- Light-SERNet: a graph of operations, batch norm folded ------------------------------------------------------------


def test_a_graph_file_holds_the_artifacts_codes_with_batch_norm_folded(graph, tmp_path):
    module, artifact = graph
    write_serq(ExportSource.from_artifact(artifact, module.net), tmp_path / "g.serq")
    assert (tmp_path / "g.serq").read_bytes()[4:6] == (5).to_bytes(2, "little")
    header, arrays = model_file.read(tmp_path / "g.serq")
    assert header["network"]["kind"] == "graph" and header["network"]["input"] == [8, 16]
    ops = header["network"]["ops"]
    assert [op["op"] for op in ops].count("conv2d") == 8 and [op["op"] for op in ops].count("linear") == 1
    assert {"avgpool2d", "concat", "mean", "relu"} <= {op["op"] for op in ops}
    assert all("activation" not in spec for spec in header["layers"])
    for spec in header["layers"]:
        np.testing.assert_array_equal(arrays[f"{spec['name']}.codes"], artifact.layers[spec["name"]].codes.numpy())
    state = artifact.state_dict
    for op in (op for op in ops if op["op"] == "conv2d"):
        bn = op["scale"][: -len(".scale")]
        scale = state[f"{bn}.weight"].double() / torch.sqrt(state[f"{bn}.running_var"].double() + 1e-5)
        bias = state.get(f"{op['layer']}.bias", torch.zeros_like(scale)).double()
        shift = state[f"{bn}.bias"].double() + (bias - state[f"{bn}.running_mean"].double()) * scale
        np.testing.assert_allclose(arrays[op["scale"]], scale.numpy(), rtol=1e-6)
        np.testing.assert_allclose(arrays[op["shift"]], shift.numpy(), rtol=1e-6, atol=1e-7)
    assert arrays["feature_mean"].shape == (8, 1)


def test_a_graph_runs_in_numpy_and_onnx_as_the_fake_quantized_torch_model(graph, tmp_path):
    module, artifact = graph
    source = ExportSource.from_artifact(artifact, module.net)
    x = _split((8, 16), 12, 5).inputs
    reference = _torch(module, x)
    model = QuantizedModel.from_serq(to_serq(source))
    _parity(model.probabilities(x.numpy()), reference)
    _parity(model.probabilities(x[0].numpy()), reference[:1])  # one utterance without its batch axis
    write_onnx(source, tmp_path / "g.onnx")
    _parity(_onnx(tmp_path / "g.onnx", features=x.numpy()), reference)


def test_a_graph_size_counts_its_folded_arrays_at_32_bits(graph):
    module, artifact = graph
    source = ExportSource.from_artifact(artifact, module.net)
    weights = sum(layer.codes.size * layer.bits / 8 + 4 * layer.scales.size for layer in source.layers.values())
    arrays = 4 * sum(a.size for a in source.graph.arrays.values())
    assert theoretical_bytes(source) == weights + arrays + 2 * 2 * 8
    assert storage.layer_bits(10, 3, 1) == 30 + 32


def test_the_c_library_of_a_graph_is_refused(graph, tmp_path):
    module, artifact = graph
    with pytest.raises(SERError, match="C runtime runs the MLP only, this model is LightSERNet"):
        write_c(ExportSource.from_artifact(artifact, module.net), tmp_path / "c")
    assert not (tmp_path / "c").exists()
