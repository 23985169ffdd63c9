"""Speaker-normalised models after deployment: export, runtime parity, ``ser enroll``, ``ser predict`` options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ser.dsp import speaker_norm
from ser.dsp.audio import load_audio
from ser.export import ExportSource, theoretical_bytes
from ser.models.mlp import MLP
from ser.quant.quantizer import QuantizedWeights
from ser.runtime import model_file
from ser.runtime.features import Extractor
from ser.runtime.model import QuantizedModel
from tests.conftest import REPO
from tests.runtime.conftest import PRIOR_WEIGHT

# The light install: numpy, soundfile, soxr. Everything of the training stack is made unimportable.
LIGHT = (
    "import sys; sys.modules.update(dict.fromkeys(['torch', 'lightning', 'hydra', 'omegaconf', 'librosa', 'scipy', "
    "'matplotlib', 'sklearn'])); from ser.cli import main; sys.exit(main())"
)


def _ser(*args) -> subprocess.CompletedProcess:
    """The ``ser`` command as a device without torch runs it."""
    return subprocess.run([sys.executable, "-c", LIGHT, *map(str, args)], cwd=REPO, capture_output=True, text=True)


def _lines(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _without_time(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k != "time_ms"} for line in lines]


def _speaker_files(speaker_run, part: str) -> dict[str, list[Path]]:
    """Audio files of ``part`` (train/val/test) per speaker, in split order."""
    prepared = speaker_run.datamodule.prepared
    out: dict[str, list[Path]] = {}
    for i in getattr(prepared.split, part):
        out.setdefault(prepared.utterances[i].speaker, []).append(Path(prepared.utterances[i].path))
    return out


def _runtime_features(model: QuantizedModel, files) -> np.ndarray:
    extractor = Extractor(model.features)
    return np.stack([extractor(load_audio(f, model.features.sample_rate)) for f in files])


def _training_statistics(datamodule, index: np.ndarray) -> speaker_norm.SpeakerStats:
    """The statistics training z-scored the utterances ``index`` (one speaker, one part) with."""
    prepared = datamodule.prepared
    blocks = datamodule.feature_config.block_slices()
    return speaker_norm.statistics(
        prepared.features[index], prepared.population, datamodule.speaker_prior_weight, blocks
    )


def test_ser_help_lists_enroll():
    proc = _ser("--help")
    assert proc.returncode == 0 and "ser enroll m.serq" in proc.stdout


def test_export_records_the_normalisation_and_carries_the_population_statistics(speaker_run):
    header, arrays = model_file.read(speaker_run.model)
    state = torch.load(speaker_run.run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert header["normalize"] == {"kind": "speaker", "prior_weight": PRIOR_WEIGHT}
    np.testing.assert_array_equal(arrays["population_mean"], state["population_mean"].numpy())
    np.testing.assert_array_equal(arrays["population_std"], state["population_std"].numpy())
    size, theory = speaker_run.model.stat().st_size, theoretical_bytes(ExportSource.load(speaker_run.run_dir, bits=8))
    assert theory <= size <= 1.05 * theory + 2000


def test_runtime_equals_the_torch_model_given_the_per_speaker_test_statistics_of_training(speaker_run):
    dm, model = speaker_run.datamodule, QuantizedModel.load(speaker_run.model)
    prepared, test = speaker_run.datamodule.prepared, speaker_run.datamodule.prepared.split.test
    state = torch.load(speaker_run.run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    net = MLP(dm.n_features, len(dm.classes), hidden=[l.weight.shape[0] for l in model.layers[:-1]])
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    quantizer = ExportSource.load(speaker_run.run_dir, bits=8).quantizer  # the run's: quant=none records none
    QuantizedWeights(net, quantizer).apply(
        {name: 8 for name, _ in net.named_children() if isinstance(_, torch.nn.Linear)}
    )
    with torch.no_grad():
        reference = torch.softmax(
            net.eval()((dm.tensors("test")[0] - state["feature_mean"]) / state["feature_std"]), 1
        ).numpy()

    speakers = np.array([prepared.utterances[i].speaker for i in test])
    assert len(set(speakers)) > 1, "the test part should mix speakers"
    ours = np.empty_like(reference)
    for speaker in set(speakers):
        rows = np.flatnonzero(speakers == speaker)
        stats = _training_statistics(dm, test[rows])
        ours[rows] = model.probabilities(
            _runtime_features(model, [prepared.utterances[i].path for i in test[rows]]), stats
        )
    np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1))
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_speaker_laq_run_ships_its_artifact_with_the_population_and_matches_it(speaker_laq_run):
    """Default LAQ (full grid, recovery) on a speaker-normalised run: export ships quantized.pt, population included."""
    run, dm = speaker_laq_run, speaker_laq_run.datamodule
    artifact = torch.load(run.run_dir / "quantized.pt", weights_only=True)
    results = json.loads((run.run_dir / "results.json").read_text())
    assert results["laq"].get("recovery") and ExportSource.load(run.run_dir).origin == "quantized.pt"
    header, arrays = model_file.read(run.model)
    assert header["normalize"] == {"kind": "speaker", "prior_weight": PRIOR_WEIGHT}
    assert {l["grid"] for l in header["layers"]} == {"full"}
    state = artifact["state_dict"]
    for name in ("feature_mean", "feature_std", "population_mean", "population_std"):
        np.testing.assert_array_equal(arrays[name], state[name].numpy())
    model = QuantizedModel.load(run.model)
    for spec, layer in zip(header["layers"], model.layers):
        np.testing.assert_array_equal(layer.weight, state[f"{spec['name']}.weight"].numpy())
        np.testing.assert_array_equal(layer.bias, state[f"{spec['name']}.bias"].numpy())

    net = MLP(dm.n_features, len(dm.classes), hidden=[l.weight.shape[0] for l in model.layers[:-1]])
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    x, y = dm.tensors("test")
    with torch.no_grad():
        reference = torch.softmax(net.eval()((x - state["feature_mean"]) / state["feature_std"]), 1).numpy()
    prepared, test = dm.prepared, dm.prepared.split.test
    speakers = np.array([prepared.utterances[i].speaker for i in test])
    ours = np.empty_like(reference)
    for speaker in set(speakers):
        rows = np.flatnonzero(speakers == speaker)
        ours[rows] = model.probabilities(
            _runtime_features(model, [prepared.utterances[i].path for i in test[rows]]),
            _training_statistics(dm, test[rows]),
        )
    np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1))
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert float(np.mean(ours.argmax(axis=1) == y.numpy())) == pytest.approx(results["laq"]["test_acc"], abs=1e-6)


def test_enrolment_with_the_models_prior_reproduces_the_training_inputs(speaker_run):
    dm, model = speaker_run.datamodule, QuantizedModel.load(speaker_run.model)
    prepared = dm.prepared
    speakers = np.array([u.speaker for u in prepared.utterances])
    for part in (prepared.split.train, prepared.split.test):
        for speaker in set(speakers[part]):
            index = part[speakers[part] == speaker]
            enrolled = model.enrol(prepared.features[index])
            np.testing.assert_allclose(
                enrolled.apply(prepared.features[index]), prepared.inputs[index], rtol=1e-5, atol=1e-5
            )


def test_enroll_then_predict_equals_predict_with_enroll(speaker_run, tmp_path):
    speaker, files = next(iter(_speaker_files(speaker_run, "train").items()))
    enrolment, inputs = files[:3], files[3:6]
    proc = _ser("enroll", speaker_run.model, *enrolment, "-o", tmp_path / "speaker.json")
    assert proc.returncode == 0, proc.stderr
    assert "statistics of 3 recordings" in proc.stdout
    saved = json.loads((tmp_path / "speaker.json").read_text())
    assert saved["recordings"] == 3 and saved["count"] == 3 + PRIOR_WEIGHT and saved["features"]["n_mfcc"] == 13

    from_file = _ser("predict", speaker_run.model, *inputs, "--speaker", tmp_path / "speaker.json")
    on_the_fly = _ser("predict", speaker_run.model, *inputs, "--enroll", *enrolment)
    assert from_file.returncode == on_the_fly.returncode == 0, from_file.stderr + on_the_fly.stderr
    assert len(_lines(from_file)) == 3
    assert _without_time(_lines(from_file)) == _without_time(_lines(on_the_fly))


def test_enroll_list_may_come_first_when_ended_with_a_double_dash(speaker_run):
    files = next(iter(_speaker_files(speaker_run, "train").values()))
    after = _ser("predict", speaker_run.model, files[3], "--enroll", *files[:3])
    before = _ser("predict", speaker_run.model, "--enroll", *files[:3], "--", files[3])
    assert after.returncode == before.returncode == 0, after.stderr + before.stderr
    assert _without_time(_lines(after)) == _without_time(_lines(before)) and len(_lines(after)) == 1


def test_adapt_predicts_file_i_with_the_statistics_of_files_0_to_i(speaker_run):
    model = QuantizedModel.load(speaker_run.model)
    files = next(iter(_speaker_files(speaker_run, "train").values()))[:5]
    proc = _ser("predict", speaker_run.model, *files, "--adapt")
    assert proc.returncode == 0, proc.stderr
    lines, features = _lines(proc), _runtime_features(model, files)
    assert [line["speaker_recordings"] for line in lines] == [1, 2, 3, 4, 5]
    for i, line in enumerate(lines):
        expected = model.probabilities(features[i], model.enrol(features[: i + 1]))[0]
        np.testing.assert_allclose([line["probabilities"][c] for c in model.classes], expected, atol=1.5e-6)
    # Not the same as using all five from the start: the estimate really grows.
    final = model.probabilities(features[0], model.enrol(features))[0]
    assert np.abs(final - [lines[0]["probabilities"][c] for c in model.classes]).max() > 1e-4


def test_speaker_model_without_speaker_statistics_names_the_options(speaker_run):
    files = next(iter(_speaker_files(speaker_run, "test").values()))
    proc = _ser("predict", speaker_run.model, files[0])
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "speaker normalisation" in proc.stderr
    assert all(option in proc.stderr for option in ("--speaker", "--enroll", "--adapt"))


@pytest.mark.parametrize("option", ["--speaker", "--enroll", "--adapt"])
def test_global_model_refuses_speaker_statistics(speaker_run, global_model, tmp_path, option):
    files = next(iter(_speaker_files(speaker_run, "train").values()))
    assert _ser("enroll", speaker_run.model, *files[:3], "-o", tmp_path / "s.json").returncode == 0
    extra = {"--speaker": [tmp_path / "s.json"], "--enroll": files[:3], "--adapt": []}[option]
    proc = _ser("predict", global_model, files[3], option, *extra)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "global normalisation" in proc.stderr and f"drop {option}" in proc.stderr
    assert _ser("predict", global_model, files[3]).returncode == 0


def test_enroll_with_a_global_model_is_a_one_line_error(speaker_run, global_model, tmp_path):
    files = next(iter(_speaker_files(speaker_run, "train").values()))
    proc = _ser("enroll", global_model, *files[:3], "-o", tmp_path / "s.json")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "global normalisation" in proc.stderr
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["features"].update(n_mfcc=20), "other feature settings than the model's (differ: n_mfcc)"),
        (lambda s: s.update(population="0" * 16), "enrolled with another model"),
        (lambda s: s.update(mean=s["mean"][:-1]), "damaged speaker file"),
        (lambda s: s.update(format="something"), "not a speaker file"),
    ],
    ids=["features", "prior", "length", "format"],
)
def test_speaker_file_that_does_not_fit_the_model_is_refused(speaker_run, tmp_path, change, message):
    files = next(iter(_speaker_files(speaker_run, "train").values()))
    assert _ser("enroll", speaker_run.model, *files[:3], "-o", tmp_path / "s.json").returncode == 0
    saved = json.loads((tmp_path / "s.json").read_text())
    change(saved)
    (tmp_path / "s.json").write_text(json.dumps(saved))
    proc = _ser("predict", speaker_run.model, files[3], "--speaker", tmp_path / "s.json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and str(tmp_path / "s.json") in proc.stderr


def test_bad_enrolment_recording_stops_with_its_name(speaker_run, tmp_path):
    files = next(iter(_speaker_files(speaker_run, "train").values()))
    (tmp_path / "broken.wav").write_bytes(b"RIFF, but not really")
    proc = _ser("enroll", speaker_run.model, files[0], tmp_path / "broken.wav", "-o", tmp_path / "s.json")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "broken.wav" in proc.stderr and "enrolment recording" in proc.stderr and not (tmp_path / "s.json").exists()


def test_onnx_of_a_speaker_model_takes_the_speakers_statistics_as_inputs(speaker_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from ser.export import main as export_main

    assert export_main([str(speaker_run.run_dir), "--bits", "8", "--onnx", str(tmp_path / "m.onnx")]) == 0
    model = QuantizedModel.load(speaker_run.model)
    files = next(iter(_speaker_files(speaker_run, "train").values()))[:4]
    features = _runtime_features(model, files)
    stats = model.enrol(features)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features", "speaker_mean", "speaker_std"]
    rows = lambda v: np.broadcast_to(v, features.shape).astype(np.float32)  # noqa: E731
    (probs,) = session.run(
        None, {"features": features, "speaker_mean": rows(stats.mean), "speaker_std": rows(stats.std)}
    )
    np.testing.assert_allclose(probs, model.probabilities(features, stats), atol=1e-5)
