"""The feature cache: per file, by content; a second run loads, a changed setting or file recomputes,
damaged entries are recomputed, bad files are kept track of, parallel and killed jobs leave it whole."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from ser.data import cache as cache_module
from ser.data import extraction
from ser.data.cache import FeatureCache, unpack
from ser.data.corpora import load_corpus
from ser.data.extraction import load_features
from ser.data.features import FeatureConfig
from ser.data.problems import Problems
from ser.dsp.audio import AudioChecks
from ser.errors import DataError
from tests.conftest import REPO

CONFIG = FeatureConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=40, n_mfcc=13)


@pytest.fixture
def corpus(tiny_manifest, tmp_path):
    """A private copy of the first 12 files of the tiny corpus, so tests may damage it."""
    root = tmp_path / "corpus"
    shutil.copytree(tiny_manifest.parent, root)
    utterances = load_corpus("manifest", manifest=root / "manifest.csv")[:12]
    return utterances


def test_second_run_loads_identical_features_from_cache(corpus, tmp_path):
    first = load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    second = load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    assert (first.from_cache, second.from_cache) == (False, True)
    assert first.features.shape == (12, CONFIG.dim)
    np.testing.assert_array_equal(first.features, second.features)


def test_frame_sequences_are_cached_like_pooled_vectors(corpus, tmp_path):
    frames = FeatureConfig(**{**CONFIG.to_dict(), "pooling": "none", "frames": 30})
    first = load_features(corpus, frames, Problems(), tmp_path / "cache")
    second = load_features(corpus, frames, Problems(), tmp_path / "cache")
    assert (first.from_cache, second.from_cache) == (False, True)
    assert first.features.shape == (12, CONFIG.frame_dim, 30)
    np.testing.assert_array_equal(first.features, second.features)
    assert not load_features(corpus, CONFIG, Problems(), tmp_path / "cache").from_cache, "pooled and frames differ"


def test_changed_feature_setting_recomputes(corpus, tmp_path):
    load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    changed = load_features(corpus, FeatureConfig(**{**CONFIG.to_dict(), "n_mfcc": 20}), Problems(), tmp_path / "cache")
    assert not changed.from_cache
    assert changed.features.shape[1] == CONFIG.dim + 7


def test_changed_file_recomputes(corpus, tmp_path):
    before = load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    audio, rate = sf.read(corpus[0].path)
    sf.write(corpus[0].path, audio[::-1].copy(), rate)
    os.utime(corpus[0].path, ns=(1, 1))
    after = load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    assert not after.from_cache
    assert not np.allclose(before.features[0], after.features[0])
    np.testing.assert_array_equal(before.features[1:], after.features[1:])


@pytest.fixture
def decoded(monkeypatch):
    """The paths extraction decodes, in order: what a run really extracted."""
    seen = []
    original = extraction.load_audio

    def counting(path, *args, **kwargs):
        seen.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(extraction, "load_audio", counting)
    return seen


def _entries(cache_dir):
    return sorted((cache_dir / "features").rglob("*.feat"))


def test_file_rewritten_with_same_size_and_mtime_recomputes(corpus, tmp_path):
    before = load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    stat = os.stat(corpus[0].path)
    audio, rate = sf.read(corpus[0].path)
    sf.write(corpus[0].path, audio[::-1].copy(), rate)
    os.utime(corpus[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (os.stat(corpus[0].path).st_size, os.stat(corpus[0].path).st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    after = load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    fresh = load_features(corpus, CONFIG, Problems(), None)
    assert not after.from_cache
    np.testing.assert_array_equal(after.features, fresh.features)
    assert not np.allclose(before.features[0], after.features[0])


def test_adding_one_file_to_the_corpus_extracts_only_that_file(corpus, tmp_path, decoded):
    load_features(corpus[:11], CONFIG, Problems(), tmp_path / "cache")
    decoded.clear()
    table = load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    assert decoded == [corpus[11].path]
    assert len(_entries(tmp_path / "cache")) == 12
    # Batches of other lengths round differently in the last float32 bits, hence a tolerance.
    np.testing.assert_allclose(table.features, load_features(corpus, CONFIG, Problems(), None).features, rtol=1e-5)


def test_renamed_file_is_found_again_by_its_content(corpus, tmp_path, decoded):
    load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    moved = corpus[0].path.with_name("renamed.wav")
    os.rename(corpus[0].path, moved)
    renamed = [type(corpus[0])(moved, corpus[0].label, corpus[0].speaker), *corpus[1:]]
    decoded.clear()
    table = load_features(renamed, CONFIG, Problems(), tmp_path / "cache")
    assert table.from_cache and decoded == []
    assert table.utterances[0].path == moved


def test_unchanged_files_are_not_read_again_to_hash_them(corpus, tmp_path, monkeypatch):
    load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    hashed = []
    monkeypatch.setattr(cache_module, "file_digest", lambda path: hashed.append(path) or "x")
    assert load_features(corpus, CONFIG, Problems(), tmp_path / "cache").from_cache
    assert hashed == []


def test_cache_holds_one_intact_entry_per_file_and_no_temporary_files(corpus, tmp_path):
    load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    entries = _entries(tmp_path / "cache")
    assert len(entries) == 12
    assert all(unpack(e.read_bytes())[0]["kind"] == "features" for e in entries)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_damaged_cache_entry_is_detected_and_recomputed(corpus, tmp_path, decoded, damage):
    first = load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    cache = FeatureCache(tmp_path / "cache", CONFIG, AudioChecks())
    entry = cache.entry(cache.memo.digest(corpus[4].path))
    data = bytearray(entry.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    entry.write_bytes(bytes(data))
    decoded.clear()
    second = load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    assert decoded == [corpus[4].path] and not second.from_cache
    np.testing.assert_array_equal(first.features, second.features)
    assert unpack(entry.read_bytes()) is not None, "the entry was written again, whole"


def test_truncated_wav_is_bad_input_under_raise(corpus, tmp_path):
    data = corpus[2].path.read_bytes()
    corpus[2].path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{corpus[2].path}: truncated WAV file.*data.on_error=skip"):
        load_features(corpus, CONFIG, Problems("raise"), tmp_path / "cache")


def test_truncated_wav_is_skipped_and_counted_under_skip(corpus, tmp_path):
    data = corpus[2].path.read_bytes()
    corpus[2].path.write_bytes(data[: len(data) // 2])
    problems = Problems("skip")
    table = load_features(corpus, CONFIG, problems, tmp_path / "cache")
    assert len(table.utterances) == 11 and corpus[2] not in table.utterances
    assert len(problems) == 1 and problems.messages[0].startswith(f"{corpus[2].path}: truncated WAV file")


def test_cached_run_reports_bad_files_with_the_same_messages_as_the_first(corpus, tmp_path):
    corpus[3].path.write_bytes(b"not audio at all")
    corpus[7].path.write_bytes(b"")
    os.unlink(corpus[9].path)
    runs = []
    for _ in range(2):
        problems = Problems("skip")
        table = load_features(corpus, CONFIG, problems, tmp_path / "cache")
        runs.append((table.from_cache, problems.messages, table.problems))
    assert [r[0] for r in runs] == [False, True]
    assert runs[0][1] == runs[1][1] == runs[0][2] == runs[1][2]
    assert [m.split(":")[0] for m in runs[0][1]] == [str(corpus[i].path) for i in (3, 7, 9)]
    assert runs[0][1][1:] == [f"{corpus[7].path}: empty file (0 bytes)", f"{corpus[9].path}: file does not exist"]


def test_bad_file_is_skipped_counted_and_remembered_by_the_cache(corpus, tmp_path):
    corpus[3].path.write_bytes(b"not audio at all")
    for expect_cached in (False, True):
        problems = Problems("skip")
        table = load_features(corpus, CONFIG, problems, tmp_path / "cache")
        assert table.from_cache is expect_cached
        assert len(table.utterances) == 11 and corpus[3] not in table.utterances
        assert len(problems) == 1 and str(corpus[3].path) in problems.messages[0]


def test_bad_file_stops_the_run_under_raise(corpus, tmp_path):
    sf.write(corpus[5].path, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(DataError, match=f"{corpus[5].path}: clip is silent.*data.on_error=skip"):
        load_features(corpus, CONFIG, Problems("raise"), tmp_path / "cache")


def _extract_in_process(args):
    manifest, cache = args
    corpus = load_corpus("manifest", manifest=manifest)[:12]
    table = load_features(corpus, CONFIG, Problems(), cache)
    return table.from_cache, table.features


def test_two_processes_extracting_at_once_share_one_complete_cache_entry(tiny_manifest, tmp_path):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        (a_cached, a), (b_cached, b) = pool.map(_extract_in_process, [(tiny_manifest, tmp_path)] * 2)
    assert sorted([a_cached, b_cached]) == [False, True], "one extracts, the other waits and loads"
    np.testing.assert_array_equal(a, b)
    assert len(list((tmp_path / "features").rglob("*.feat"))) == 12
    assert not list((tmp_path / "features").rglob("*.tmp"))


KILLED_CHILD = """
import sys, time
from pathlib import Path
from ser.data import cache
from ser.data.corpora import load_corpus
from ser.data.extraction import load_features
from ser.data.features import FeatureConfig
from ser.data.problems import Problems
from ser.io import atomic_path

manifest, cache_dir, marker = sys.argv[1:]
writes = []

def write_bytes(path, data):  # the 5th entry is killed half-way through its write
    writes.extend([path] if str(path).endswith(".feat") else [])
    with atomic_path(path) as tmp:
        if len(writes) == 5:
            tmp.write_bytes(data[: len(data) // 2])
            Path(marker).write_text("writing")
            time.sleep(120)
        tmp.write_bytes(data)

cache.write_bytes = write_bytes
config = FeatureConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=40, n_mfcc=13)
load_features(load_corpus("manifest", manifest=manifest)[:12], config, Problems(), cache_dir)
"""


def test_sigkill_during_extraction_leaves_no_corrupt_entry_and_a_rerun_gives_the_same_features(corpus, tmp_path):
    manifest, cache_dir, marker = corpus[0].path.parents[2] / "manifest.csv", tmp_path / "cache", tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(manifest), str(cache_dir), str(marker)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child never reached its 5th entry"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    entries = _entries(cache_dir)
    assert len(entries) == 4 and all(unpack(e.read_bytes()) is not None for e in entries)
    assert len(list(cache_dir.rglob(".*.feat.*.tmp"))) == 1, "the half-written temporary file, not an entry"
    rerun = load_features(corpus, CONFIG, Problems(), cache_dir)
    np.testing.assert_allclose(rerun.features, load_features(corpus, CONFIG, Problems(), None).features, rtol=1e-5)
    assert len(_entries(cache_dir)) == 12 and all(unpack(e.read_bytes()) is not None for e in _entries(cache_dir))
    assert not list(cache_dir.rglob("*.tmp")), "the rerun, holding the lock, removed the killed job's leftover"


def test_extraction_uses_one_thread_while_other_processes_keep_every_core_busy(monkeypatch):
    cpus = extraction._cpus()
    monkeypatch.setattr(extraction.torch, "get_num_threads", lambda: len(cpus))
    monkeypatch.setattr(extraction, "_busy_seconds", lambda _: len(cpus) * time.perf_counter())
    policy = extraction.ThreadPolicy(sample_s=0.06)
    assert policy.threads() == 1


def test_extraction_uses_every_allowed_thread_on_an_idle_machine(monkeypatch):
    monkeypatch.setattr(extraction, "_cpus", lambda: [0, 1])
    monkeypatch.setattr(extraction.torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(extraction, "_busy_seconds", lambda _: 0.0)
    monkeypatch.setattr(extraction, "_own_seconds", lambda: 0.0)
    policy = extraction.ThreadPolicy(sample_s=0.06)
    assert policy.threads() == 2


def test_torch_thread_setting_is_an_upper_limit_for_extraction(monkeypatch):
    monkeypatch.setattr(extraction, "_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(extraction.torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(extraction, "_busy_seconds", lambda _: 0.0)
    assert extraction.ThreadPolicy(sample_s=0.06).threads() == 1


def test_emodb_copy_extracts_every_file_once_then_loads_warm_in_under_a_second(tmp_path, decoded):
    from tests.conftest import env_path

    corpus = load_corpus("emodb", root=env_path("SER_EMODB_ROOT"))
    first = load_features(corpus, FeatureConfig(), Problems("raise"), tmp_path / "cache")
    assert len(first.utterances) == len(corpus) == len(decoded) == 535
    decoded.clear()
    warm = load_features(corpus, FeatureConfig(), Problems("raise"), tmp_path / "cache")
    assert warm.from_cache and decoded == [] and warm.seconds < 1.0
    np.testing.assert_array_equal(first.features, warm.features)


def test_first_thread_choice_counts_the_threads_other_processes_are_running_now(monkeypatch):
    monkeypatch.setattr(extraction, "_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(extraction.torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(extraction, "_busy_seconds", lambda _: 0.0)
    monkeypatch.setattr(extraction, "_others_running", lambda: 3)
    assert extraction.ThreadPolicy().threads() == 1
    monkeypatch.setattr(extraction, "_others_running", lambda: 1)
    assert extraction.ThreadPolicy().threads() == 3


def test_a_busy_process_counts_among_the_threads_other_processes_run():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        looks = [extraction._others_running() for _ in range(5)]
    finally:
        busy.kill()
        busy.wait()
    assert None not in looks and max(looks) >= 1
