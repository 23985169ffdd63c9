"""``ser export`` of run directories: the run's LAQ model (``quantized.pt``) or its checkpoint at ``--bits``, against
what results.json measured, end to end from audio. What needs no run directory is in ``test_memory.py``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ser.dsp.audio import load_audio
from ser.export import ExportSource, theoretical_bytes
from ser.export import main as export_main
from ser.models.mlp import MLP
from ser.quant.artifact import FORMAT
from ser.quant.quantizer import QuantizedWeights, QuantizerConfig, quantize_tensor
from ser.runtime import model_file
from ser.runtime.features import Extractor
from ser.runtime.model import QuantizedModel
from tests.conftest import run_train
from tests.test_train import SMALL_LIGHTSERNET  # small widths, 64 frames


@pytest.fixture(scope="module")
def exported(default_run, tmp_path_factory):
    run_dir, results = default_run
    out = tmp_path_factory.mktemp("export")
    assert export_main([str(run_dir), "-o", str(out / "model.serq"), "--onnx", str(out / "model.onnx")]) == 0
    return run_dir, results, out


@pytest.fixture(scope="module")
def test_split(default_run, cache_dir):
    """The default run's test split: cached features, labels, audio files (in the same order)."""
    run_dir, _ = default_run
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.data.cache_dir = str(cache_dir)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    x, y = datamodule.tensors("test")
    files = [row["path"] for row in csv.DictReader(open(run_dir / "splits" / "test.csv"))]
    return x, y.numpy(), files, datamodule


def _artifact(run_dir: Path) -> dict:
    return torch.load(run_dir / "quantized.pt", weights_only=True)


def _probabilities(state: dict, x: torch.Tensor, hidden) -> np.ndarray:
    """Softmax of the MLP holding ``state`` (a module state dict: net.* and the standardisation) on features ``x``."""
    n_classes = state[f"net.{3 * len(hidden)}.weight"].shape[0]
    net = MLP(x.shape[1], n_classes, hidden=hidden)
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    with torch.no_grad():
        return torch.softmax(net.eval()((x - state["feature_mean"]) / state["feature_std"]), dim=1).numpy()


def _laq_reference(run_dir: Path, x: torch.Tensor) -> np.ndarray:
    """Probabilities of the fake-quantized torch model the LAQ callback evaluated and saved (the recovered model)."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    return _probabilities(_artifact(run_dir)["state_dict"], x, list(cfg.model.net.hidden))


def _runtime(model: QuantizedModel, files) -> np.ndarray:
    extractor = Extractor(model.features)
    return np.stack([model.probabilities(extractor(load_audio(f, model.features.sample_rate)))[0] for f in files])


def _copy_run(run_dir: Path, to: Path, artifact: bool = True) -> Path:
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("tensorboard", *(() if artifact else ("quantized.pt",))))
    return to


# -- the default run (new grid, MSE scales, recovery) ships what LAQ evaluated ------------------------------------


def test_default_run_saves_a_recovered_full_grid_artifact_that_export_reads(exported):
    run_dir, results, _ = exported
    artifact = _artifact(run_dir)
    assert artifact["format"] == FORMAT
    assert results["laq"]["quantizer"]["grid"] == "full" and results["laq"].get("recovery"), (
        "these tests are about the default LAQ: full grid and recovery"
    )
    assert ExportSource.load(run_dir).origin == "quantized.pt"


def test_exported_file_is_within_5_percent_plus_2_kb_of_the_theoretical_size(exported):
    run_dir, results, out = exported
    size = (out / "model.serq").stat().st_size
    theory = theoretical_bytes(ExportSource.load(run_dir))
    laq = results["laq"]
    weights_only = sum(l["params"] * l["bits"] for l in laq["layers"]) / 8
    assert weights_only < theory <= size <= 1.05 * theory + 2000
    # Smaller than the fp32 weights by what the run's own bits say: LAQ's size (weights at their
    # widths, biases and scales at 32 bits), plus the float32 standardisation statistics.
    fp32 = results["n_params"] * 4
    own = laq["size_kb"] * 1000
    statistics = 2 * 4 * len(_artifact(run_dir)["state_dict"]["feature_mean"])
    assert laq["avg_bits"] < 32 and own < fp32
    assert size <= 1.05 * own + statistics + 2000


def test_runtime_predictions_equal_the_recovered_laq_model(exported, test_split):
    run_dir, results, out = exported
    x, labels, files, _ = test_split
    reference = _laq_reference(run_dir, x)
    assert float(np.mean(reference.argmax(axis=1) == labels)) == pytest.approx(results["laq"]["test_acc"], abs=1e-6)
    ours = _runtime(QuantizedModel.load(out / "model.serq"), files)
    np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1))
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    # The recovery that ships: the deployed model scores what results.json reports for LAQ.
    assert float(np.mean(ours.argmax(axis=1) == labels)) == pytest.approx(results["laq"]["test_acc"], abs=1e-6)
    assert results["test_predictions"]["models"]["laq"] == ours.argmax(axis=1).tolist()


def test_onnx_model_matches_the_recovered_laq_model(exported, test_split):
    ort = pytest.importorskip("onnxruntime")
    run_dir, results, out = exported
    x, labels, _, _ = test_split
    reference = _laq_reference(run_dir, x)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"features": x.numpy()})
    np.testing.assert_array_equal(probs.argmax(axis=1), reference.argmax(axis=1))
    np.testing.assert_allclose(probs, reference, atol=1e-5)
    assert float(np.mean(probs.argmax(axis=1) == labels)) == pytest.approx(results["laq"]["test_acc"], abs=1e-6)


def test_export_never_reads_the_checkpoints_weights_when_the_artifact_exists(exported, tmp_path):
    run_dir, _, out = exported
    run = _copy_run(run_dir, tmp_path / "run")
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["state_dict"] = {k: torch.full_like(v, 7.0) for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, run / "checkpoints" / "best.ckpt")
    assert export_main([str(run), "-o", str(tmp_path / "scrambled.serq")]) == 0
    assert (tmp_path / "scrambled.serq").read_bytes() == (out / "model.serq").read_bytes()
    (run / "checkpoints" / "best.ckpt").unlink()  # metadata then comes from results.json and the config
    assert export_main([str(run), "-o", str(tmp_path / "no_ckpt.serq")]) == 0
    assert (tmp_path / "no_ckpt.serq").read_bytes() == (out / "model.serq").read_bytes()


def test_export_of_the_best_checkpoint_file_ships_the_artifact_too(exported, tmp_path):
    run_dir, _, out = exported
    assert export_main([str(run_dir / "checkpoints" / "best.ckpt"), "-o", str(tmp_path / "m.serq")]) == 0
    assert (tmp_path / "m.serq").read_bytes() == (out / "model.serq").read_bytes()


def test_a_recovered_run_without_its_artifact_is_refused_not_requantized(default_run, tmp_path, capsys):
    run_dir, _ = default_run
    run = _copy_run(run_dir, tmp_path / "run", artifact=False)
    assert export_main([str(run), "-o", str(tmp_path / "m.serq")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quantized.pt" in err and "--bits" in err
    torch.save({"format": "ser-fakequant-v1", "state_dict": {}}, run / "quantized.pt")  # older artifact: as absent
    assert export_main([str(run), "-o", str(tmp_path / "m.serq")]) == 1
    assert "quantized.pt" in capsys.readouterr().err and not (tmp_path / "m.serq").exists()


def test_a_run_without_recovery_or_artifact_falls_back_to_quantizing_the_checkpoint(default_run, tmp_path):
    """Older runs (no ser-quant-v2 artifact, no recovery): results.json's bits, the run's quantizer, best.ckpt."""
    run_dir, results = default_run
    run = _copy_run(run_dir, tmp_path / "run", artifact=False)
    old = json.loads((run / "results.json").read_text())
    old["laq"].pop("recovery")
    old["laq"].pop("before_recovery")
    (run / "results.json").write_text(json.dumps(old))
    source = ExportSource.load(run)
    assert source.origin == "checkpoint"
    assert source.bits == {l["name"]: l["bits"] for l in results["laq"]["layers"]}
    state = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    config = QuantizerConfig(grid="full", scale="mse")  # the default run's quant section
    for name, layer in source.layers.items():
        t = quantize_tensor(state[f"{name}.weight"], layer.bits, config)
        assert layer.grid == "full"
        np.testing.assert_array_equal(layer.codes, t.codes.numpy())
        np.testing.assert_array_equal(layer.weight(), t.weight.numpy())


# -- --bits N: one width, the run's quantizer, from the checkpoint -------------------------------------------------


def test_fixed_bits_export_from_a_checkpoint(default_run, test_split, tmp_path):
    run_dir, results = default_run
    assert (
        export_main([str(run_dir / "checkpoints" / "best.ckpt"), "--bits", "4", "-o", str(tmp_path / "m4.serq")]) == 0
    )
    model = QuantizedModel.load(tmp_path / "m4.serq")
    assert [l.bits for l in model.header.layers] == [4, 4, 4, 4]
    assert [l.grid for l in model.header.layers] == ["full"] * 4, "the run's quantizer, not the paper's"
    (row,) = [r for r in results["fixed"] if r["bits"] == 4]
    assert (tmp_path / "m4.serq").stat().st_size <= 1.05 * row["size_kb"] * 1000 + 2000
    # The same model the callback's fixed/4 row evaluated.
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    config = QuantizerConfig(**{k: v for k, v in results["laq"]["quantizer"].items() if k != "bias_correction"})
    x, labels, files, _ = test_split
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    net = MLP(x.shape[1], len(results["classes"]), hidden=list(cfg.model.net.hidden))
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    QuantizedWeights(net, config).apply({name: 4 for name, m in net.named_children() if isinstance(m, torch.nn.Linear)})
    for layer, (_, m) in zip(model.layers, ((n, m) for n, m in net.named_children() if isinstance(m, torch.nn.Linear))):
        np.testing.assert_array_equal(layer.weight, m.weight.detach().numpy())
    with torch.no_grad():
        reference = torch.softmax(net.eval()((x - state["feature_mean"]) / state["feature_std"]), dim=1).numpy()
    ours = _runtime(model, files)
    np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1))
    assert float(np.mean(ours.argmax(axis=1) == labels)) == pytest.approx(row["test_acc"], abs=1e-6)


def test_fixed_bits_of_a_paper_run_stay_on_the_symmetric_grid(default_run, tmp_path):
    """A run's quant section decides the grid: quant=laq_paper (or an older config without one) is symmetric."""
    run_dir, _ = default_run
    run = _copy_run(run_dir, tmp_path / "run", artifact=False)
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    quantizer = cfg.quant.quantizer
    quantizer.grid, quantizer.scale, quantizer.bias_bits, quantizer.stats_bits = "symmetric", "max", 32, 32
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    source = ExportSource.load(run, bits=2)
    assert {l.grid for l in source.layers.values()} == {"symmetric"}
    assert max(int(l.codes.max()) for l in source.layers.values()) <= 2  # 3 levels at 2 bits
    assert export_main([str(run), "--bits", "2", "-o", str(tmp_path / "m.serq")]) == 0
    assert (tmp_path / "m.serq").read_bytes()[4:6] == (1).to_bytes(2, "little"), "readable by older runtimes"


def test_export_of_a_directory_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    assert export_main([str(tmp_path), "-o", str(tmp_path / "m.serq")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a training run" in err


def test_export_of_a_run_of_another_network_names_the_supported_ones(default_run, tmp_path, capsys):
    run_dir, _ = default_run
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes((run_dir / "checkpoints" / "best.ckpt").read_bytes())
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.model.net._target_ = "mypackage.models.Transformer"
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    assert export_main([str(tmp_path), "-o", str(tmp_path / "m.serq")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "supports the MLP" in err and "Light-SERNet" in err and "Transformer" in err


def test_global_run_exports_no_normalisation_entry_and_no_population(default_run, tmp_path):
    run_dir, _ = default_run
    assert export_main([str(run_dir), "--bits", "4", "-o", str(tmp_path / "m.serq")]) == 0
    header, _ = model_file.read(tmp_path / "m.serq")
    assert set(header) == {"classes", "features", "layers", "quantizer", "sections"}
    layers = [l["name"] for l in header["layers"]]
    assert [s["name"] for s in header["sections"]] == ["feature_mean", "feature_std"] + [
        f"{name}.{part}" for name in layers for part in ("scales", "codes", "bias")
    ]
    assert QuantizedModel.load(tmp_path / "m.serq").normalize == "global"


def test_checkpoint_from_before_speaker_normalisation_exports_the_same_bytes(default_run, tmp_path):
    """Older checkpoints have no ``normalize`` hyper-parameter; they are global runs, exported as before."""
    run_dir, _ = default_run
    old = tmp_path / "old_run"
    (old / "checkpoints").mkdir(parents=True)
    (old / ".hydra").mkdir()
    (old / ".hydra" / "config.yaml").write_bytes((run_dir / ".hydra" / "config.yaml").read_bytes())
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"].pop("normalize") == "global"
    ckpt["hyper_parameters"].pop("speaker_prior_weight")
    torch.save(ckpt, old / "checkpoints" / "best.ckpt")
    assert export_main([str(run_dir), "--bits", "4", "-o", str(tmp_path / "now.serq")]) == 0
    assert export_main([str(old), "--bits", "4", "-o", str(tmp_path / "old.serq")]) == 0
    assert (tmp_path / "now.serq").read_bytes() == (tmp_path / "old.serq").read_bytes()


# -- every depth of the paper's MLP --------------------------------------------------------------------------------


def _torch_reference(run_dir: Path, x: torch.Tensor, state: dict | None = None) -> np.ndarray:
    """Softmax of the run's own network (``model.net`` of its config) holding ``state`` (default: the LAQ
    artifact's, i.e. the fake-quantized recovered model), in eval mode, on raw features ``x``."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    state = _artifact(run_dir)["state_dict"] if state is None else state
    n_features = int(x.shape[1]) if x.ndim == 2 else list(x.shape[1:])
    n_classes = len(json.loads((run_dir / "results.json").read_text())["classes"])
    net = hydra.utils.instantiate(cfg.model.net)(n_features, n_classes)
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    with torch.no_grad():
        return torch.softmax(net.eval()((x - state["feature_mean"]) / state["feature_std"]), dim=1).numpy()


def _split(run_dir: Path, cache_dir: Path, part: str = "test"):
    """Cached features, labels and audio files of a run's split (in the same order), and its datamodule."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.data.cache_dir = str(cache_dir)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    x, y = datamodule.tensors(part)
    files = [row["path"] for row in csv.DictReader(open(run_dir / "splits" / f"{part}.csv"))]
    return x, y.numpy(), files, datamodule


def _onnx(path: Path, **inputs: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def _assert_parity(ours: np.ndarray, reference: np.ndarray) -> None:
    """Today's parity: the same class on every utterance, probabilities within 1e-5."""
    np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1))
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


@pytest.fixture(scope="module", params=["mlp_2hl", "mlp_5hl"])
def depth_run(request, default_corpus, cache_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(request.param)
    proc = run_train(
        f"model={request.param}",
        "trainer.max_epochs=3",
        "quant.fixed_bits=[]",
        "quant.recovery.epochs=2",
        cache_dir=cache_dir,
        run_dir=run_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert export_main([str(run_dir), "-o", str(run_dir / "m.serq"), "--onnx", str(run_dir / "m.onnx")]) == 0
    return request.param, run_dir


def test_every_mlp_depth_exports_and_runs_like_its_torch_model(depth_run, cache_dir):
    name, run_dir = depth_run
    results = json.loads((run_dir / "results.json").read_text())
    hidden = {"mlp_2hl": 2, "mlp_5hl": 5}[name]
    model = QuantizedModel.load(run_dir / "m.serq")
    assert len(model.layers) == hidden + 1 and [l.relu for l in model.layers] == [True] * hidden + [False]
    x, labels, files, _ = _split(run_dir, cache_dir)
    reference = _torch_reference(run_dir, x)
    assert reference.argmax(axis=1).tolist() == results["test_predictions"]["models"]["laq"]
    _assert_parity(model.probabilities(x.numpy()), reference)
    _assert_parity(_runtime(model, files), reference)  # end to end from audio
    _assert_parity(_onnx(run_dir / "m.onnx", features=x.numpy()), reference)


# -- Light-SERNet: batch norm folded, average pooling, global pooling ------------------------------------------------


@pytest.fixture(scope="module")
def lightsernet_run(default_corpus, cache_dir, tmp_path_factory):
    """A tiny Light-SERNet with the default LAQ (full grid, recovery), exported as .serq and ONNX."""
    run_dir = tmp_path_factory.mktemp("lightsernet_run")
    proc = run_train(
        *SMALL_LIGHTSERNET,
        "trainer.max_epochs=2",
        "quant.fixed_bits=[]",
        "quant.recovery.epochs=2",
        cache_dir=cache_dir,
        run_dir=run_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert export_main([str(run_dir), "-o", str(run_dir / "m.serq"), "--onnx", str(run_dir / "m.onnx")]) == 0
    return run_dir, json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def lightsernet_split(lightsernet_run, cache_dir):
    return _split(lightsernet_run[0], cache_dir)


def test_lightsernet_numpy_runtime_equals_the_fake_quantized_torch_model(lightsernet_run, lightsernet_split):
    run_dir, results = lightsernet_run
    x, labels, files, _ = lightsernet_split
    reference = _torch_reference(run_dir, x)
    assert reference.argmax(axis=1).tolist() == results["test_predictions"]["models"]["laq"]
    model = QuantizedModel.load(run_dir / "m.serq")
    _assert_parity(model.probabilities(x.numpy()), reference)
    _assert_parity(model.probabilities(x[0].numpy()), reference[:1])  # one utterance without its batch axis
    ours = _runtime(model, files)  # end to end: audio → the runtime's frame features → the graph
    _assert_parity(ours, reference)
    assert float(np.mean(ours.argmax(axis=1) == labels)) == pytest.approx(results["laq"]["test_acc"], abs=1e-6)


def test_lightsernet_runtime_frame_features_equal_the_torch_extractor(lightsernet_run, lightsernet_split):
    run_dir, _ = lightsernet_run
    x, _, files, _ = lightsernet_split
    model = QuantizedModel.load(run_dir / "m.serq")
    extractor = Extractor(model.features)
    for f, ref in zip(files, x.numpy()):
        ours = extractor(load_audio(f, model.features.sample_rate))
        assert ours.shape == ref.shape == (40, 64)
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_lightsernet_onnx_equals_the_fake_quantized_torch_model(lightsernet_run, lightsernet_split):
    run_dir, results = lightsernet_run
    x, labels, _, _ = lightsernet_split
    reference = _torch_reference(run_dir, x)
    probs = _onnx(run_dir / "m.onnx", features=x.numpy())
    _assert_parity(probs, reference)
    assert float(np.mean(probs.argmax(axis=1) == labels)) == pytest.approx(results["laq"]["test_acc"], abs=1e-6)


def test_lightsernet_fixed_bits_export_from_the_checkpoint(lightsernet_run, lightsernet_split, tmp_path):
    """--bits N: the checkpoint's convolutions and classifier at N bits, its batch norm folded as for LAQ."""
    run_dir, _ = lightsernet_run
    x, _, _, _ = lightsernet_split
    assert export_main([str(run_dir), "--bits", "3", "-o", str(tmp_path / "m3.serq")]) == 0
    source = ExportSource.load(run_dir, bits=3)
    assert source.origin == "checkpoint" and set(source.bits.values()) == {3}
    state = dict(torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"])
    for name, layer in source.layers.items():  # the stored weights, biases and standardisation
        state[f"{name}.weight"] = torch.from_numpy(layer.weight())
        if layer.bias is not None:
            state[f"{name}.bias"] = torch.from_numpy(layer.bias)
    state.update({k: source.state[k] for k in ("feature_mean", "feature_std")})
    reference = _torch_reference(run_dir, x, state)
    _assert_parity(QuantizedModel.load(tmp_path / "m3.serq").probabilities(x.numpy()), reference)


def test_lightsernet_c_export_is_refused_in_one_line_before_writing_anything(lightsernet_run, tmp_path, capsys):
    run_dir, _ = lightsernet_run
    assert export_main([str(run_dir), "-o", str(tmp_path / "m.serq"), "--c", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "C runtime runs the MLP only" in err and "LightSERNet" in err
    assert not (tmp_path / "m.serq").exists() and not (tmp_path / "c").exists()


def test_ser_predict_runs_a_lightsernet_model(lightsernet_run, lightsernet_split, capsys):
    from ser.runtime.predict import main as predict_main

    run_dir, _ = lightsernet_run
    x, _, files, _ = lightsernet_split
    assert predict_main([str(run_dir / "m.serq"), *files[:3]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    reference = _torch_reference(run_dir, x[:3])
    model = QuantizedModel.load(run_dir / "m.serq")
    assert [line["emotion"] for line in lines] == [model.classes[i] for i in reference.argmax(axis=1)]
    np.testing.assert_allclose(
        [[line["probabilities"][c] for c in model.classes] for line in lines], reference, atol=2e-6
    )


@pytest.fixture(scope="module")
def lightsernet_speaker_run(tiny_manifest, cache_dir, tmp_path_factory):
    """Light-SERNet trained on speaker-normalised frame sequences, exported as .serq and ONNX."""
    run_dir = tmp_path_factory.mktemp("lightsernet_speaker_run")
    proc = run_train(
        "data=manifest",
        f"data.manifest={tiny_manifest}",
        "data.normalize=speaker",
        "data.speaker_prior_weight=2",
        *SMALL_LIGHTSERNET,
        "trainer.max_epochs=2",
        "quant.fixed_bits=[]",
        "quant.recovery.epochs=1",
        cache_dir=cache_dir,
        run_dir=run_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert export_main([str(run_dir), "-o", str(run_dir / "m.serq"), "--onnx", str(run_dir / "m.onnx")]) == 0
    return run_dir


def test_speaker_normalised_lightsernet_runs_like_its_torch_model(lightsernet_speaker_run, cache_dir):
    from ser.dsp import speaker_norm

    run_dir = lightsernet_speaker_run
    model = QuantizedModel.load(run_dir / "m.serq")
    assert model.normalize == "speaker" and model.population.mean.shape == (40, 1)
    x, _, _, dm = _split(run_dir, cache_dir)  # x: the inputs training saw (z-scored per speaker)
    reference = _torch_reference(run_dir, x)
    prepared, blocks = dm.prepared, dm.feature_config.block_slices()
    test = prepared.split.test
    speakers = np.array([prepared.utterances[i].speaker for i in test])
    raw = prepared.features[test]
    ours = np.empty_like(reference)
    means, stds = np.empty((len(test), 40, 1), np.float32), np.empty((len(test), 40, 1), np.float32)
    for speaker in np.unique(speakers):
        rows = np.flatnonzero(speakers == speaker)
        stats = speaker_norm.statistics(raw[rows], prepared.population, dm.speaker_prior_weight, blocks)
        np.testing.assert_allclose(model.enrol(raw[rows]).mean, stats.mean, rtol=1e-6)  # the runtime's estimator
        ours[rows] = model.probabilities(raw[rows], stats)
        means[rows], stds[rows] = stats.mean, stats.std
    _assert_parity(ours, reference)
    _assert_parity(_onnx(run_dir / "m.onnx", features=raw, speaker_mean=means, speaker_std=stds), reference)


def test_an_enrolled_speaker_file_reads_back_for_a_frame_sequence_model(
    lightsernet_speaker_run, tiny_manifest, tmp_path, capsys
):
    from ser.runtime.enroll import main as enroll_main
    from ser.runtime.predict import main as predict_main

    run_dir = lightsernet_speaker_run
    clips = sorted(tiny_manifest.parent.glob("s01/*/*.wav"))[:4]
    assert enroll_main([str(run_dir / "m.serq"), *map(str, clips[:3]), "-o", str(tmp_path / "s01.json")]) == 0
    capsys.readouterr()
    assert predict_main([str(run_dir / "m.serq"), "--speaker", str(tmp_path / "s01.json"), str(clips[3])]) == 0
    with_file = json.loads(capsys.readouterr().out)
    assert predict_main([str(run_dir / "m.serq"), str(clips[3]), "--enroll", *map(str, clips[:3])]) == 0
    on_the_fly = json.loads(capsys.readouterr().out)
    assert with_file["emotion"] == on_the_fly["emotion"] and with_file["probabilities"] == on_the_fly["probabilities"]


@pytest.mark.parametrize("run", ["default_run", "lightsernet_run"])
def test_quantized_artifact_alone_exports_the_same_file(run, request, tmp_path):
    """Deleting results.json, .hydra/ and the checkpoints must not stop ser export (the artifact describes itself)."""
    import shutil

    source = request.getfixturevalue(run)
    run_dir = source[0] if isinstance(source, tuple) else source
    assert export_main([str(run_dir), "-o", str(tmp_path / "full.serq")]) == 0
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("results.json", ".hydra", "checkpoints"))
    assert export_main([str(bare), "-o", str(tmp_path / "bare.serq")]) == 0
    assert (tmp_path / "bare.serq").read_bytes() == (tmp_path / "full.serq").read_bytes()


# -- the paper's MLP under a 30 KB budget, with narrow biases and statistics ----------------------------------------


@pytest.fixture(scope="module")
def budget_run(default_corpus, cache_dir, tmp_path_factory):
    """The default MLP (256-512-64) held to a 30 KB file: it fits only with 8-bit biases and float16 statistics."""
    run_dir = tmp_path_factory.mktemp("budget_run")
    proc = run_train(
        "quant.search.target_kb=30",
        "quant.quantizer.bias_bits=8",
        "quant.quantizer.stats_bits=16",
        cache_dir=cache_dir,
        run_dir=run_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path_factory.mktemp("budget_export")
    assert export_main([str(run_dir), "-o", str(out / "model.serq"), "--onnx", str(out / "model.onnx")]) == 0
    return run_dir, json.loads((run_dir / "results.json").read_text()), out


def test_the_paper_mlp_at_target_kb_30_exports_a_file_of_at_most_30_kb(budget_run):
    run_dir, results, out = budget_run
    laq = results["laq"]
    assert laq["budget"]["met"] and laq["quantizer"]["bias_bits"] == 8 and laq["quantizer"]["stats_bits"] == 16
    size = (out / "model.serq").stat().st_size
    assert size <= 30_000 and size <= laq["budget"]["file_kb"] * 1000, "the budget's estimate must not undercount"
    assert laq["budget"]["file_kb"] * 1000 - size < 200, "nor overcount by much"
    assert (out / "model.serq").read_bytes()[4:6] == (5).to_bytes(2, "little")


def test_the_narrow_files_runtime_and_onnx_predict_what_results_json_measured(budget_run, cache_dir):
    run_dir, results, out = budget_run
    x, labels, files, _ = _split(run_dir, cache_dir)
    reference = _torch_reference(run_dir, x)
    assert float(np.mean(reference.argmax(axis=1) == labels)) == pytest.approx(results["laq"]["test_acc"], abs=1e-6)
    ours = _runtime(QuantizedModel.load(out / "model.serq"), files)
    _assert_parity(ours, reference)
    assert results["test_predictions"]["models"]["laq"] == ours.argmax(axis=1).tolist()
    _assert_parity(_onnx(out / "model.onnx", features=x.numpy()), reference)


def test_a_fixed_bits_export_of_a_narrow_run_stores_what_the_fixed_row_measured(budget_run, cache_dir, tmp_path):
    """``--bits 2`` quantizes the checkpoint with the run's quantizer, biases and statistics included."""
    run_dir, results, _ = budget_run
    assert export_main([str(run_dir), "--bits", "2", "-o", str(tmp_path / "m.serq")]) == 0
    x, labels, files, _ = _split(run_dir, cache_dir)
    ours = _runtime(QuantizedModel.load(tmp_path / "m.serq"), files)
    row = next(r for r in results["fixed"] if r["bits"] == 2)
    assert float(np.mean(ours.argmax(axis=1) == labels)) == pytest.approx(row["test_acc"], abs=1e-6)
    assert results["test_predictions"]["models"]["fixed/2"] == ours.argmax(axis=1).tolist()
    _, arrays = model_file.read(tmp_path / "m.serq")  # the biases every output (file, ONNX) computes with
    for name, layer in ExportSource.load(run_dir, bits=2).layers.items():
        np.testing.assert_array_equal(arrays[f"{name}.bias"], layer.bias)
