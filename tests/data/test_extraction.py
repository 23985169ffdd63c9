"""The feature cache: a second run loads, a changed setting or file recomputes, bad files are kept track of."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from ser.data.corpora import load_corpus
from ser.data.extraction import load_features
from ser.data.features import FeatureConfig
from ser.data.problems import Problems
from ser.errors import DataError

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


def test_cache_directory_holds_only_complete_entries(corpus, tmp_path):
    load_features(corpus, CONFIG, Problems(), tmp_path / "cache")
    names = sorted(p.name for p in (tmp_path / "cache" / "features").iterdir())
    assert len(names) == 2 and names[0].endswith(".npz") and names[1].endswith(".npz.lock")


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
    assert len(list((tmp_path / "features").glob("*.npz"))) == 1
    assert not list((tmp_path / "features").glob("*.tmp"))
