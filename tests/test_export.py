"""``ser export``: file size, parity with the fake-quantized torch model, ONNX."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ser.export import ExportSource, main as export_main, theoretical_bytes
from ser.models.mlp import MLP
from ser.quant.quantizer import QuantizedWeights
from ser.runtime.features import Extractor
from ser.data.audio import load_audio
from ser.runtime import model_file
from ser.runtime.model import QuantizedModel


@pytest.fixture(scope="module")
def exported(default_run, tmp_path_factory):
    run_dir, results = default_run
    out = tmp_path_factory.mktemp("export")
    assert export_main([str(run_dir), "-o", str(out / "model.serq"), "--onnx", str(out / "model.onnx")]) == 0
    return run_dir, results, out


def _torch_reference(run_dir: Path, cache_dir: Path) -> tuple[torch.Tensor, list[str]]:
    """Probabilities of the fake-quantized torch model (as the LAQ callback evaluated it) on the test split."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.data.cache_dir = str(cache_dir)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    net = MLP(datamodule.n_features, len(datamodule.classes), hidden=list(cfg.model.net.hidden))
    net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    bits = {l["name"][len("net."):]: l["bits"] for l in json.loads((run_dir / "results.json").read_text())["laq"]["layers"]}
    QuantizedWeights(net).apply(bits)
    x, _ = datamodule.tensors("test")
    with torch.no_grad():
        probs = torch.softmax(net.eval()((x - state["feature_mean"]) / state["feature_std"]), dim=1)
    files = [row["path"] for row in csv.DictReader(open(run_dir / "splits" / "test.csv"))]
    return probs, files


def test_exported_file_is_within_5_percent_plus_2_kb_of_the_theoretical_size(exported):
    run_dir, results, out = exported
    size = (out / "model.serq").stat().st_size
    theory = theoretical_bytes(ExportSource.load(run_dir))
    weights_only = sum(l["params"] * l["bits"] for l in results["laq"]["layers"]) / 8
    assert weights_only < theory <= size <= 1.05 * theory + 2000
    assert size < results["n_params"] * 4 / 8, "at least 8x smaller than the fp32 weights"


def test_runtime_predictions_equal_the_fake_quantized_torch_model(exported, cache_dir):
    run_dir, _, out = exported
    reference, files = _torch_reference(run_dir, cache_dir)
    model = QuantizedModel.load(out / "model.serq")
    extractor = Extractor(model.features)
    ours = np.stack([model.probabilities(extractor(load_audio(f, model.features.sample_rate)))[0] for f in files])
    np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(dim=1).numpy())
    np.testing.assert_allclose(ours, reference.numpy(), atol=1e-5)


def test_onnx_model_matches_the_fake_quantized_torch_model(exported, cache_dir):
    ort = pytest.importorskip("onnxruntime")
    run_dir, _, out = exported
    reference, _ = _torch_reference(run_dir, cache_dir)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.data.cache_dir = str(cache_dir)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"features": datamodule.tensors("test")[0].numpy()})
    np.testing.assert_array_equal(probs.argmax(axis=1), reference.argmax(dim=1).numpy())
    np.testing.assert_allclose(probs, reference.numpy(), atol=1e-5)


def test_fixed_bits_export_from_a_checkpoint(default_run, tmp_path):
    run_dir, results = default_run
    assert export_main([str(run_dir / "checkpoints" / "best.ckpt"), "--bits", "4", "-o", str(tmp_path / "m4.serq")]) == 0
    model = QuantizedModel.load(tmp_path / "m4.serq")
    assert [l["bits"] for l in model.header["layers"]] == [4, 4, 4, 4]
    assert (tmp_path / "m4.serq").stat().st_size <= 1.05 * results["fixed"][4]["size_kb"] * 1000 + 2000


def test_export_of_a_directory_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    assert export_main([str(tmp_path), "-o", str(tmp_path / "m.serq")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a training run" in err


def test_export_of_a_lightsernet_run_says_only_the_mlp_is_supported(default_run, tmp_path, capsys):
    run_dir, _ = default_run
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes((run_dir / "checkpoints" / "best.ckpt").read_bytes())
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.model.net._target_ = "ser.models.lightsernet.LightSERNet"
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    assert export_main([str(tmp_path), "-o", str(tmp_path / "m.serq")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "supports the MLP" in err and "LightSERNet" in err


def test_global_run_exports_no_normalisation_entry_and_no_population(default_run, tmp_path):
    run_dir, _ = default_run
    assert export_main([str(run_dir), "--bits", "4", "-o", str(tmp_path / "m.serq")]) == 0
    header, _ = model_file.read(tmp_path / "m.serq")
    assert set(header) == {"classes", "features", "layers", "quantizer", "sections"}
    layers = [l["name"] for l in header["layers"]]
    assert [s["name"] for s in header["sections"]] == ["feature_mean", "feature_std"] + [
        f"{name}.{part}" for name in layers for part in ("scales", "codes", "bias")]
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
