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
