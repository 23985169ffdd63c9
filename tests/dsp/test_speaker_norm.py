"""Speaker normalisation: each speaker's statistics, shrinkage toward the population, parts kept apart."""

from __future__ import annotations

import numpy as np
import pytest

from ser.dsp import speaker_norm
from ser.dsp.speaker_norm import RunningSpeakerStats, SpeakerStats, normalize_by_speaker, statistics

RNG = np.random.default_rng(0)
FEATURES = RNG.normal(3.0, 2.0, size=(12, 4)).astype(np.float32)
PRIOR = SpeakerStats(np.full(4, 10.0, np.float32), np.full(4, 5.0, np.float32), 100.0)


def test_statistics_without_prior_are_the_speakers_own_mean_and_std():
    stats = statistics(FEATURES)
    np.testing.assert_allclose(stats.mean, FEATURES.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, FEATURES.std(axis=0), rtol=1e-5)
    assert stats.count == 12


def test_prior_weight_shrinks_toward_the_population():
    x = np.array([[0.0], [2.0]], dtype=np.float32)  # mean 1, var 1
    prior = SpeakerStats(np.array([4.0], np.float32), np.array([1.0], np.float32), 100.0)
    stats = statistics(x, prior, prior_weight=2.0)
    # mean = (2·4 + 0 + 2) / 4 = 2.5; var = (2·(1 + 1.5²) + 2.5² + 0.5²) / 4 = 3.25
    assert float(stats.mean[0]) == pytest.approx(2.5)
    assert float(stats.std[0]) == pytest.approx(np.sqrt(3.25), rel=1e-6)
    assert stats.count == 4.0


def test_one_recording_without_prior_weight_falls_back_to_the_population():
    assert statistics(FEATURES[:1], PRIOR) is PRIOR


def test_running_statistics_match_the_batch_estimate_after_every_recording():
    running = RunningSpeakerStats(PRIOR, prior_weight=1.5)
    for i, row in enumerate(FEATURES, start=1):
        current = running.update(row)
        expected = statistics(FEATURES[:i], PRIOR, 1.5)
        np.testing.assert_allclose(current.mean, expected.mean, rtol=1e-5)
        np.testing.assert_allclose(current.std, expected.std, rtol=1e-5)


def test_frame_sequences_get_one_statistic_per_channel_over_utterances_and_time():
    frames = RNG.normal(size=(5, 3, 20)).astype(np.float32)
    stats = statistics(frames)
    assert stats.mean.shape == (3, 1)
    np.testing.assert_allclose(stats.mean[:, 0], frames.transpose(1, 0, 2).reshape(3, -1).mean(axis=1), rtol=1e-5)


def test_each_part_is_normalised_with_its_own_utterances_only():
    speakers = np.array(["a"] * 6 + ["b"] * 6)
    train, test = np.array([0, 1, 2, 3, 6, 7, 8, 9]), np.array([4, 5, 10, 11])
    out = normalize_by_speaker(FEATURES, speakers, [train, test])
    changed = FEATURES.copy()
    changed[4] += 100.0  # a test utterance of speaker a
    again = normalize_by_speaker(changed, speakers, [train, test])
    np.testing.assert_array_equal(out[train], again[train])
    np.testing.assert_array_equal(out[10:], again[10:])
    np.testing.assert_allclose(out[[0, 1, 2, 3]].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[[0, 1, 2, 3]].std(axis=0), 1.0, rtol=1e-4)


def test_enrolled_speakers_are_normalised_everywhere_with_their_training_utterances():
    speakers = np.array(["a"] * 6 + ["b"] * 6)
    train, test = np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7, 8, 9, 10, 11])  # b has no training utterance
    out = normalize_by_speaker(FEATURES, speakers, [train, test], enrolled=train)
    enrolled_a = statistics(FEATURES[train])
    np.testing.assert_allclose(out[[0, 1, 2, 3, 4, 5]], enrolled_a.apply(FEATURES[:6]), rtol=1e-6)
    np.testing.assert_allclose(out[6:], statistics(FEATURES[6:]).apply(FEATURES[6:]), rtol=1e-6)  # b: its own part's
    changed = FEATURES.copy()
    changed[4] += 100.0  # a test utterance of a moves nothing else of a
    again = normalize_by_speaker(changed, speakers, [train, test], enrolled=train)
    np.testing.assert_array_equal(np.delete(out, 4, axis=0)[:5], np.delete(again, 4, axis=0)[:5])


def test_noise_level_features_get_a_floored_std_instead_of_unit_variance_noise():
    x = np.stack([np.ones(8, np.float32) * 5.0, np.linspace(0, 1e-14, 8, dtype=np.float32)], axis=1)
    x[:, 0] += np.arange(8)
    stats = statistics(x, blocks=[slice(0, 2)])
    assert float(stats.std[1]) == pytest.approx(speaker_norm.STD_FLOOR * 12.0)
