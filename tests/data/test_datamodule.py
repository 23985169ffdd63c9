"""The datamodule: corpus to tensors, standardisation from the training split only, bad input policy."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

from ser.data.datamodule import SERDataModule
from ser.errors import DataError

FEATURES = {"sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 40, "n_mfcc": 13}


def _module(manifest, cache_dir, features=FEATURES, **kwargs) -> SERDataModule:
    dm = SERDataModule(corpus="manifest", manifest=str(manifest), cache_dir=str(cache_dir), features=features, **kwargs)
    dm.setup()
    return dm


def test_tiny_corpus_becomes_stratified_tensors(tiny_manifest, cache_dir):
    dm = _module(tiny_manifest, cache_dir)
    assert dm.classes == ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert dm.n_features == 13 + 12 + 40
    sizes = {part: len(dm.tensors(part)[1]) for part in ("train", "val", "test")}
    assert sizes == {"train": 70, "val": 7, "test": 7}  # 12 per class: round(1.2) = 1 each for val and test
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 65) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_standardization_uses_only_the_training_split(tiny_manifest, cache_dir):
    dm = _module(tiny_manifest, cache_dir)
    mean, std = dm.standardization()
    train = dm.tensors("train")[0].double()
    np.testing.assert_allclose(mean, train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, train.std(0, unbiased=False), rtol=1e-5)
    dm.prepared.inputs[dm.prepared.split.test] += 1000.0  # whatever the test and validation utterances hold ...
    dm.prepared.inputs[dm.prepared.split.val] -= 1000.0
    again_mean, again_std = dm.standardization()
    assert torch.equal(mean, again_mean) and torch.equal(std, again_std)  # ... the statistics do not move


def test_loso_split_holds_out_one_speaker(tiny_manifest, cache_dir):
    dm = _module(tiny_manifest, cache_dir, split={"kind": "loso", "fold": 1})
    speakers = {
        part: {dm.prepared.utterances[i].speaker for i in getattr(dm.prepared.split, part)}
        for part in ("train", "val", "test")
    }
    assert speakers == {"train": {"s01"}, "val": {"s03"}, "test": {"s02"}}


def test_loso_split_refuses_a_corpus_with_another_number_of_speakers_than_configured(tiny_manifest, cache_dir):
    with pytest.raises(DataError, match=r"holds 3 speakers, but data.speakers=4 .*set data.speakers=3"):
        _module(tiny_manifest, cache_dir, split={"kind": "loso", "fold": 0}, speakers=4)
    assert len(_module(tiny_manifest, cache_dir, split={"kind": "loso", "fold": 0}, speakers=3).tensors("test")[1]) > 0


def _broken_copy(tiny_manifest, tmp_path):
    """The tiny corpus with one corrupt file and a 'calm' class of two files."""
    root = tmp_path / "corpus"
    shutil.copytree(tiny_manifest.parent, root)
    rows = list(csv.DictReader(open(root / "manifest.csv")))
    (root / rows[0]["path"]).write_bytes(b"garbage")
    rows[1]["label"] = rows[2]["label"] = "calm"
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv", root / rows[0]["path"]


def test_skip_leaves_out_bad_files_and_small_classes_and_counts_them(tiny_manifest, tmp_path):
    manifest, corrupt = _broken_copy(tiny_manifest, tmp_path)
    dm = _module(manifest, tmp_path / "cache", on_error="skip")
    assert len(dm.prepared.problems) == 2
    assert str(corrupt) in dm.prepared.problems[0] and "class 'calm' has only 2" in dm.prepared.problems[1]
    assert "calm" not in dm.classes and len(dm.prepared.utterances) == 84 - 3


def test_raise_stops_at_the_first_bad_file(tiny_manifest, tmp_path):
    manifest, corrupt = _broken_copy(tiny_manifest, tmp_path)
    with pytest.raises(DataError, match=f"{corrupt}: cannot decode audio"):
        _module(manifest, tmp_path / "cache", on_error="raise")


def test_unknown_on_error_policy_is_rejected(tiny_manifest, cache_dir):
    from ser.errors import SERError

    with pytest.raises(SERError, match="data.on_error='ignore'"):
        SERDataModule(corpus="manifest", manifest=str(tiny_manifest), cache_dir=str(cache_dir), on_error="ignore")


def test_feature_blocks_cover_the_pooled_vector_in_order():
    from ser.dsp.feature_config import FeatureConfig

    blocks = FeatureConfig(stats=("mean", "std"), deltas=True).blocks()
    assert [name for name, _ in blocks][:4] == ["mean/mfcc", "mean/chroma", "mean/mel", "mean/delta"]
    assert blocks[2][1] == slice(52, 180) and blocks[-1] == ("std/delta", slice(400, 440))


def test_std_of_a_noise_level_feature_is_floored_at_its_blocks_scale(tiny_manifest, cache_dir):
    dm = _module(tiny_manifest, cache_dir)
    mel = dict(dm.feature_config.blocks())["mean/mel"]
    dm.prepared.features[:, mel.stop - 1] = 1e-16 * np.arange(len(dm.prepared.features))  # noise-level band
    _, std = dm.standardization()
    scale = np.abs(dm.prepared.features[dm.prepared.split.train][:, mel]).max()
    assert float(std[mel.stop - 1]) == pytest.approx(1e-10 * scale, rel=1e-5)
    assert float(std[mel.start]) > 1e-10 * scale


def test_frame_sequences_are_standardised_per_channel_over_utterances_and_time(tiny_manifest, cache_dir):
    dm = _module(tiny_manifest, cache_dir, features={**FEATURES, "parts": ["mfcc"], "pooling": "none", "frames": 20})
    assert dm.n_features == (13, 20)
    mean, std = dm.standardization()
    train = dm.tensors("train")[0].double()
    assert mean.shape == std.shape == (13, 1)
    np.testing.assert_allclose(mean[:, 0], train.mean(dim=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(std[:, 0], train.permute(1, 0, 2).reshape(13, -1).std(1, unbiased=False), rtol=1e-5)


def test_speaker_normalisation_zscores_each_speaker_within_each_part(tiny_manifest, cache_dir):
    dm = _module(tiny_manifest, cache_dir, normalize="speaker")
    prepared = dm.prepared
    speakers = np.array([u.speaker for u in prepared.utterances])
    population = prepared.population
    for part in ("train", "test"):
        index = getattr(prepared.split, part)
        for speaker in np.unique(speakers[index]):
            members = index[speakers[index] == speaker]
            raw = prepared.features[members].astype(np.float64)
            if len(members) > 1:
                expected = (raw - raw.mean(axis=0)) / np.where(raw.std(axis=0) > 0, raw.std(axis=0), 1)
            else:  # one recording has no spread: the training population's statistics stand in
                expected = (raw - population.mean) / population.std
            np.testing.assert_allclose(prepared.inputs[members], expected, rtol=1e-3, atol=1e-4)
    assert torch.equal(dm.tensors("test")[0], torch.from_numpy(prepared.inputs[prepared.split.test]))


def test_enrolled_speaker_statistics_come_from_each_speakers_training_utterances(tiny_manifest, cache_dir):
    dm = _module(tiny_manifest, cache_dir, normalize="speaker", speaker_statistics="enrolled")
    prepared = dm.prepared
    speakers = np.array([u.speaker for u in prepared.utterances])
    for speaker in np.unique(speakers):
        train = prepared.split.train[speakers[prepared.split.train] == speaker]
        raw = prepared.features[train].astype(np.float64)
        mean, std = raw.mean(axis=0), np.where(raw.std(axis=0) > 0, raw.std(axis=0), 1)
        everywhere = np.flatnonzero(speakers == speaker)  # train, val and test utterances of the speaker
        np.testing.assert_allclose(
            prepared.inputs[everywhere], (prepared.features[everywhere] - mean) / std, rtol=1e-3, atol=1e-4
        )


def test_unknown_speaker_statistics_source_is_rejected(tiny_manifest, cache_dir):
    with pytest.raises(DataError, match="data.speaker_statistics='test' is not one of enrolled, part"):
        _module(tiny_manifest, cache_dir, normalize="speaker", speaker_statistics="test")


def test_speaker_normalisation_keeps_the_training_population_for_deployment(tiny_manifest, cache_dir):
    dm = _module(tiny_manifest, cache_dir, normalize="speaker")
    train = dm.prepared.features[dm.prepared.split.train].astype(np.float64)
    np.testing.assert_allclose(dm.prepared.population.mean, train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(dm.prepared.population.std, train.std(axis=0), rtol=1e-4)


def test_speaker_normalisation_needs_speakers(tiny_manifest, tmp_path):
    rows = list(csv.DictReader(open(tiny_manifest)))
    manifest = tmp_path / "nameless.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows([[str(tiny_manifest.parent / r["path"]), r["label"]] for r in rows])
    with pytest.raises(DataError, match="has no speaker, which data.normalize=speaker needs"):
        _module(manifest, tmp_path / "cache", normalize="speaker")


def test_unknown_normalisation_is_rejected(tiny_manifest, cache_dir):
    with pytest.raises(DataError, match="data.normalize='utterance' is not one of global, speaker"):
        SERDataModule(corpus="manifest", manifest=str(tiny_manifest), cache_dir=str(cache_dir), normalize="utterance")


def test_kfold_datamodule_tests_on_one_fold(tiny_manifest, cache_dir):
    dm = _module(tiny_manifest, cache_dir, split={"kind": "kfold", "folds": 4, "fold": 1})
    assert len(dm.tensors("test")[1]) == 84 // 4
    assert torch.bincount(dm.tensors("test")[1]).tolist() == [3] * 7


def test_cross_corpus_trains_on_one_corpus_and_tests_on_the_shared_emotions_of_another(
    tiny_manifest, cache_dir, tmp_path
):
    rows = list(csv.DictReader(open(tiny_manifest)))
    other = tmp_path / "other.csv"
    with open(other, "w", newline="") as fh:  # a second "corpus": the same clips, two emotions, one renamed
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "speaker"])
        for r in rows:
            if r["label"] in ("anger", "sadness"):
                writer.writerow(
                    [str(tiny_manifest.parent / r["path"]), "angry" if r["label"] == "anger" else "calm", "x"]
                )
    dm = _module(
        tiny_manifest, cache_dir, split={"kind": "cross_corpus", "test_corpus": "manifest", "test_manifest": str(other)}
    )
    assert dm.classes == ["anger"]
    test_paths = {str(dm.prepared.utterances[i].path) for i in dm.prepared.split.test}
    assert len(test_paths) == 12 and all("anger" in p for p in test_paths)
