"""The built-in synthetic corpus: layout, determinism, caching, safety and acoustics."""

from __future__ import annotations

import csv
import json
import os
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.data import synthetic
from ser.errors import DataError

SMALL = synthetic.SyntheticSpec(speakers=2, per_speaker_per_emotion=2)


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as handle:
        return list(csv.DictReader(handle))


def _wavs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.wav"))


def _median_f0(samples: np.ndarray, sr: int) -> float:
    """Autocorrelation pitch of the louder frames: crude, but enough to rank voices."""
    size = int(0.04 * sr)
    frames = np.lib.stride_tricks.sliding_window_view(samples, size)[:: size // 2]
    energy = (frames**2).mean(axis=1)
    voiced = frames[energy > 0.3 * energy.max()]
    voiced = voiced - voiced.mean(axis=1, keepdims=True)
    autocorrelation = np.fft.irfft(np.abs(np.fft.rfft(voiced, 2 * size, axis=1)) ** 2, axis=1)
    shortest, longest = sr // 500, sr // 60
    lags = shortest + autocorrelation[:, shortest:longest].argmax(axis=1)
    return float(np.median(sr / lags))


def test_layout_and_manifest_list_every_file_once(tmp_path):
    manifest = synthetic.generate(tmp_path / "corpus", SMALL)

    assert manifest == tmp_path / "corpus" / "manifest.csv"
    assert manifest.read_text().splitlines()[0] == "path,label,speaker"
    rows = _rows(manifest)
    assert len(rows) == 2 * 7 * 2
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    assert Counter(r["label"] for r in rows) == {emotion: 4 for emotion in synthetic.EMOTIONS}
    assert Counter(r["speaker"] for r in rows) == {"s01": 14, "s02": 14}
    assert rows[0]["path"] == "s01/anger/s01_anger_01.wav"
    for row in rows:
        assert row["path"].startswith(f"{row['speaker']}/{row['label']}/{row['speaker']}_{row['label']}_")
    on_disk = [p.relative_to(manifest.parent).as_posix() for p in _wavs(manifest.parent)]
    assert on_disk == [r["path"] for r in rows]


def test_same_spec_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    first = synthetic.generate(tmp_path / "a", SMALL).parent
    second = synthetic.generate(tmp_path / "b", SMALL).parent
    reseeded = synthetic.generate(tmp_path / "c", synthetic.SyntheticSpec(2, 2, seed=1)).parent

    for path in _wavs(first):
        relative = path.relative_to(first)
        assert path.read_bytes() == (second / relative).read_bytes(), relative
    assert (first / "manifest.csv").read_bytes() == (second / "manifest.csv").read_bytes()
    sample = Path("s01/anger/s01_anger_01.wav")
    assert (first / sample).read_bytes() != (reseeded / sample).read_bytes()


def test_second_call_with_same_spec_rewrites_nothing(tmp_path):
    manifest = synthetic.generate(tmp_path / "corpus", SMALL)
    files = [*_wavs(manifest.parent), manifest, manifest.parent / "spec.json"]
    before = {path: path.stat().st_mtime_ns for path in files}

    assert synthetic.generate(tmp_path / "corpus", SMALL) == manifest
    assert {path: path.stat().st_mtime_ns for path in files} == before


def test_spec_json_records_spec_and_format_version(tmp_path):
    root = synthetic.generate(tmp_path / "corpus", SMALL).parent

    stamp = json.loads((root / "spec.json").read_text())
    assert stamp["format"] == synthetic.FORMAT_VERSION
    assert stamp["spec"] == {
        "speakers": 2,
        "per_speaker_per_emotion": 2,
        "sample_rate": 16000,
        "seed": 0,
        "min_duration_s": 1.0,
        "max_duration_s": 2.0,
    }


def test_a_different_spec_replaces_an_earlier_generated_corpus(tmp_path):
    root = tmp_path / "corpus"
    synthetic.generate(root, SMALL)
    bigger = synthetic.SyntheticSpec(speakers=3, per_speaker_per_emotion=1)

    rows = _rows(synthetic.generate(root, bigger))

    assert len(rows) == 3 * 7 and len(_wavs(root)) == 3 * 7
    assert json.loads((root / "spec.json").read_text())["spec"]["speakers"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "corpus.lock"]


def test_a_corpus_from_older_generator_code_is_rebuilt(tmp_path):
    manifest = synthetic.generate(tmp_path / "corpus", SMALL)
    stamp_file = manifest.parent / "spec.json"
    stamp = json.loads(stamp_file.read_text())
    stamp_file.write_text(json.dumps({**stamp, "code": "older"}))
    os.utime(manifest, ns=(1, 1))

    synthetic.generate(tmp_path / "corpus", SMALL)

    assert json.loads(stamp_file.read_text())["code"] == stamp["code"]
    assert manifest.stat().st_mtime_ns != 1


def test_refuses_to_overwrite_a_foreign_non_empty_directory(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")

    with pytest.raises(DataError, match="not a synthetic corpus") as raised:
        synthetic.generate(root, SMALL)

    assert "\n" not in str(raised.value) and str(root) in str(raised.value)
    assert [p.name for p in root.iterdir()] == ["notes.txt"]
    assert (root / "notes.txt").read_text() == "keep me"


def test_fills_an_existing_empty_directory(tmp_path):
    (tmp_path / "corpus").mkdir()

    assert len(_rows(synthetic.generate(tmp_path / "corpus", SMALL))) == 28


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real = synthetic._utterances

    def interrupted(spec):
        yield next(real(spec))
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_utterances", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path / "corpus", SMALL)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.lock"]


def test_staging_left_by_a_killed_run_is_cleared_on_the_next_build(tmp_path):
    stale = tmp_path / ".corpus.k1ll3d.tmp"
    (stale / "s01").mkdir(parents=True)

    synthetic.generate(tmp_path / "corpus", SMALL)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "corpus.lock"]


def test_concurrent_callers_build_the_corpus_once(tmp_path, monkeypatch):
    builds = []
    write = synthetic._write_corpus
    monkeypatch.setattr(synthetic, "_write_corpus", lambda *args: (builds.append(1), write(*args)))
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(synthetic.generate(tmp_path / "corpus", SMALL)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(builds) == 1
    assert results == [tmp_path / "corpus" / "manifest.csv"] * 3
    assert len(_wavs(tmp_path / "corpus")) == 28


def test_files_are_16_bit_pcm_at_the_spec_rate_and_durations(tmp_path):
    spec = synthetic.SyntheticSpec(
        speakers=1, per_speaker_per_emotion=2, sample_rate=22050, min_duration_s=0.6, max_duration_s=0.9
    )
    root = synthetic.generate(tmp_path / "corpus", spec).parent

    durations = []
    for path in _wavs(root):
        info = sf.info(str(path))
        assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
        assert info.samplerate == 22050
        durations.append(info.frames / info.samplerate)
        samples, _ = sf.read(str(path), dtype="int16")
        assert np.abs(samples).max() > 1000  # audible speech, not silence
    assert 0.6 <= min(durations) and max(durations) <= 0.9
    assert len(set(durations)) > 1


def test_anger_is_louder_and_higher_pitched_than_sadness(tmp_path):
    spec = synthetic.SyntheticSpec(speakers=2, per_speaker_per_emotion=4)
    root = synthetic.generate(tmp_path / "corpus", spec).parent

    for speaker in ("s01", "s02"):
        rms, f0 = {}, {}
        for emotion in ("anger", "sadness"):
            clips = [sf.read(str(p))[0] for p in sorted((root / speaker / emotion).glob("*.wav"))]
            rms[emotion] = np.mean([np.sqrt(np.mean(clip**2)) for clip in clips])
            f0[emotion] = np.mean([_median_f0(clip, spec.sample_rate) for clip in clips])
        assert rms["anger"] > 2.0 * rms["sadness"], (speaker, rms)
        assert f0["anger"] > 1.2 * f0["sadness"], (speaker, f0)


def test_spec_with_impossible_durations_is_a_data_error():
    with pytest.raises(DataError, match="min_duration_s"):
        synthetic.SyntheticSpec(min_duration_s=2.0, max_duration_s=1.0)


def test_corpus_directories_and_files_get_the_umasks_modes(tmp_path):
    import stat

    previous = os.umask(0o022)
    try:
        root = synthetic.generate(
            tmp_path / "corpus", synthetic.SyntheticSpec(speakers=1, per_speaker_per_emotion=1)
        ).parent
    finally:
        os.umask(previous)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(root) == 0o755, "the staging directory renamed into place"
    assert {mode(p) for p in root.rglob("*") if p.is_dir()} == {0o755}
    assert {mode(p) for p in root.rglob("*") if p.is_file()} == {0o644}
