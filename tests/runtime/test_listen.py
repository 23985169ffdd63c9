"""``ser listen``: a real clip's 16-bit PCM piped in gives one JSON line per sliding window, each what the
numpy runtime predicts on that window (with a running speaker estimate for speaker models); no torch."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import soundfile as sf

from ser.dsp.feature_config import FeatureConfig
from ser.runtime.features import Extractor
from ser.runtime.listen import window_samples, windows
from ser.runtime.model import QuantizedModel
from tests.conftest import REPO

NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['lightning'] = None; from ser.cli import main; sys.exit(main())"


def _listen(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, "listen", *args], cwd=REPO, input=stdin, capture_output=True)


def _pcm(run_dir, count: int, rate: int) -> np.ndarray:
    """Several of the run's test clips back to back, as int16 (16-bit PCM files at the model's rate)."""
    files = [row["path"] for row in csv.DictReader(open(run_dir / "splits" / "test.csv"))][:count]
    parts = []
    for f in files:
        data, sr = sf.read(f, dtype="int16")
        assert sr == rate
        parts.append(data)
    return np.concatenate(parts)


def test_windows_cover_the_stream_every_hop():
    chunks = iter([np.arange(7, dtype=np.float32), np.arange(7, 13, dtype=np.float32)])
    got = [(start, samples.tolist()) for start, samples in windows(chunks, 5, 3)]
    assert [start for start, _ in got] == [0, 3, 6]
    assert got[1][1] == [3, 4, 5, 6, 7] and got[2][1] == [6, 7, 8, 9, 10]
    assert [(s, len(x)) for s, x in windows(iter([np.ones(4, np.float32)]), 5, 3)] == [(0, 4)]  # shorter: one window


def test_the_hop_is_rounded_to_whole_feature_frames():
    config = FeatureConfig()  # 22,050 Hz, frames every 512 samples
    assert window_samples(config, 2.0, 0.5) == (44100, 22 * 512)  # 21.5 frames: 22
    assert window_samples(config, 2.0, 0.01) == (44100, 512)  # at least one frame
    assert window_samples(config, 1.0, 0.5, rate=44100) == (44100, 2 * 22 * 512)  # another input rate: scaled


def test_piped_pcm_of_a_speaker_model_matches_the_numpy_runtime_with_a_running_estimate(speaker_laq_run):
    model = QuantizedModel.load(speaker_laq_run.model)
    rate = model.features.sample_rate
    pcm = _pcm(speaker_laq_run.run_dir, 3, rate)
    proc = _listen(
        str(speaker_laq_run.model), "-", "--window", "1.0", "--hop", "0.5", stdin=pcm.astype("<i2").tobytes()
    )
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    signal = pcm.astype(np.float32) / 32768.0
    window, hop = rate, 31 * model.features.hop_length  # 0.5 s is 31.25 frames: rounded to 31
    starts = list(range(0, len(signal) - window + 1, hop))
    assert [line["start"] for line in lines] == [round(s / rate, 4) for s in starts]
    extractor, running, last = Extractor(model.features), model.running(), None
    for start, line in zip(starts, lines):
        features = extractor(signal[start : start + window])
        if last is None or start >= last + window:  # non-overlapping windows update the estimate
            running.update(features)
            last = start
        expected = model.probabilities(features, running.current)[0]
        got = np.array([line["probabilities"][c] for c in model.classes])
        assert line["emotion"] == model.classes[int(expected.argmax())]
        np.testing.assert_allclose(got, expected, atol=2e-6)
        assert line["end"] == round((start + window) / rate, 4)
    assert lines[-1]["speaker_windows"] == len(range(0, starts[-1] + 1, window))
    rtf = re.search(rb"real-time factor ([0-9.]+)", proc.stderr)
    assert rtf and 0 < float(rtf.group(1)) < 1, proc.stderr


def test_a_file_of_a_global_model(global_model, speaker_run, tmp_path):
    model = QuantizedModel.load(global_model)
    rate = model.features.sample_rate
    pcm = _pcm(speaker_run.run_dir, 2, rate)
    clip = tmp_path / "clip.wav"
    sf.write(clip, pcm, rate, subtype="PCM_16")
    proc = _listen(str(global_model), str(clip), "--window", "0.8", "--hop", "0.4")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    signal = pcm.astype(np.float32) / 32768.0
    window = round(0.8 * rate)
    assert len(lines) == (len(signal) - window) // round(0.4 * rate) + 1
    first = model.probabilities(Extractor(model.features)(signal[:window]))[0]
    np.testing.assert_allclose([lines[0]["probabilities"][c] for c in model.classes], first, atol=2e-6)
    assert "speaker_windows" not in lines[0]
