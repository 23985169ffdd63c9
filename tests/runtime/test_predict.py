"""``ser predict``: JSON lines per file, errors per file, no torch needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from ser.export import main as export_main
from tests.conftest import REPO

NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['lightning'] = None; from ser.cli import main; sys.exit(main())"


@pytest.fixture(scope="module")
def model_and_audio(default_run, tmp_path_factory):
    run_dir, results = default_run
    out = tmp_path_factory.mktemp("predict")
    assert export_main([str(run_dir), "-o", str(out / "model.serq")]) == 0
    audio = out / "audio"
    audio.mkdir()
    lines = (run_dir / "splits" / "test.csv").read_text().splitlines()[1:4]
    for line in lines:
        shutil.copy(line.split(",")[0], audio)
    (audio / "broken.wav").write_bytes(b"RIFF, but not really")
    (audio / "notes.txt").write_text("not audio, not listed")
    return out / "model.serq", audio, results["classes"]


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, "predict", *args], cwd=REPO, capture_output=True, text=True)


def test_directory_gives_one_json_line_per_audio_file_and_an_error_line_for_the_bad_one(model_and_audio):
    model, audio, classes = model_and_audio
    proc = _predict(str(model), str(audio))
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert len(lines) == 4
    (bad,) = [l for l in lines if "error" in l]
    assert bad["file"].endswith("broken.wav") and "cannot decode audio" in bad["error"]
    for line in (l for l in lines if "error" not in l):
        assert line["emotion"] in classes and set(line["probabilities"]) == set(classes)
        assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert line["emotion"] == max(line["probabilities"], key=line["probabilities"].get) and line["time_ms"] > 0


def test_corrupted_model_is_refused_before_any_prediction(model_and_audio, tmp_path):
    model, audio, _ = model_and_audio
    broken = tmp_path / "broken.serq"
    broken.write_bytes(model.read_bytes()[:-100])
    proc = _predict(str(broken), str(audio))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "checksum mismatch" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A complete one-layer global model for the default 180 features (2 classes), no training needed."""
    from dataclasses import asdict

    import numpy as np

    from ser.dsp.feature_config import FeatureConfig
    from ser.runtime import model_file
    from ser.runtime.model_file import Section

    path = tmp_path_factory.mktemp("tiny_model") / "m.serq"
    header = {
        "classes": ["calm", "loud"],
        "features": asdict(FeatureConfig()),
        "quantizer": {"per_channel": False},
        "layers": [{"name": "net.0", "shape": [2, 180], "bits": 2, "activation": "none"}],
    }
    codes = np.tile(np.array([[0], [2]], dtype=np.uint8), (1, 180))
    model_file.write(
        path,
        header,
        [
            Section("feature_mean", np.zeros(180, np.float32)),
            Section("feature_std", np.ones(180, np.float32)),
            Section("net.0.scales", np.array([0.5], np.float32)),
            Section("net.0.codes", codes, 2),
            Section("net.0.bias", np.zeros(2, np.float32)),
        ],
    )
    return path


def _tone_wav(path, seconds=1.0, rate=22050):
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def test_missing_file_gets_an_error_line_saying_it_does_not_exist(tiny_model, tmp_path):
    good = _tone_wav(tmp_path / "good.wav")
    proc = _predict(str(tiny_model), str(tmp_path / "nowhere.wav"), str(good))
    assert proc.returncode == 1, proc.stderr
    first, second = (json.loads(l) for l in proc.stdout.splitlines())
    assert first == {"file": str(tmp_path / "nowhere.wav"), "error": f"{tmp_path / 'nowhere.wav'}: file does not exist"}
    assert second["file"] == str(good) and second["emotion"] in ("calm", "loud")


def test_empty_file_gets_an_error_line_saying_it_is_empty(tiny_model, tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    proc = _predict(str(tiny_model), str(tmp_path / "empty.wav"))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"] == f"{tmp_path / 'empty.wav'}: empty file (0 bytes)"


def test_truncated_wav_gets_an_error_line_saying_it_is_truncated(tiny_model, tmp_path):
    path = _tone_wav(tmp_path / "cut.wav", seconds=2.0)
    path.write_bytes(path.read_bytes()[: 44 + 44100])
    proc = _predict(str(tiny_model), str(path))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"] == (
        f"{path}: truncated WAV file: its header promises 44100 frames (2.00 s) "
        f"but the file holds 22050 (1.00 s); copy or export it again"
    )


def test_inputs_without_audio_exit_2_with_one_error_line(tiny_model, tmp_path):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no audio here")
    proc = _predict(str(tiny_model), str(tmp_path / "empty_dir"), str(tmp_path / "notes"))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"error: no audio files (.aif .aiff .flac .ogg .wav) in {tmp_path / 'empty_dir'}, {tmp_path / 'notes'}\n"
    )
