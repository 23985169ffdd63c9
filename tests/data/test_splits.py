"""Splits: the paper's stratified proportions, speaker independence, determinism."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ser.data import splits
from ser.data.corpora import Utterance
from ser.data.problems import Problems
from ser.errors import DataError

# EMODB's class sizes (W L N F A T E).
EMODB_COUNTS = {"anger": 127, "boredom": 81, "neutral": 79, "happiness": 71, "fear": 69, "sadness": 62, "disgust": 46}
LABELS = [label for label, n in EMODB_COUNTS.items() for _ in range(n)]


def _all(split: splits.Split) -> np.ndarray:
    return np.concatenate([split.train, split.val, split.test])


def test_stratified_split_is_80_10_10_per_class():
    split = splits.stratified_split(LABELS, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (427, 54, 54)
    test_counts = Counter(LABELS[i] for i in split.test)
    assert test_counts == {
        "anger": 13,
        "boredom": 8,
        "neutral": 8,
        "happiness": 7,
        "fear": 7,
        "sadness": 6,
        "disgust": 5,
    }


def test_stratified_split_partitions_every_index_once():
    split = splits.stratified_split(LABELS, seed=3)
    assert sorted(_all(split).tolist()) == list(range(len(LABELS)))


def test_stratified_split_is_deterministic_per_seed():
    a, b, c = (splits.stratified_split(LABELS, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.test, c.test)


def test_invalid_fractions_are_rejected():
    with pytest.raises(DataError, match="data.split.val"):
        splits.stratified_split(LABELS, val=0.5, test=0.5)


def test_small_class_is_reported_and_dropped_under_skip():
    problems = Problems("skip")
    assert splits.small_classes(["a"] * 10 + ["b"] * 2, 3, problems) == {"b"}
    assert len(problems) == 1 and "class 'b' has only 2" in problems.messages[0]


def test_small_class_raises_under_raise():
    with pytest.raises(DataError, match="class 'b' has only 2 file"):
        splits.small_classes(["a"] * 10 + ["b"] * 2, 3, Problems("raise"))


SPEAKERS = [s for s in ["03", "08", "09", "10"] for _ in range(5)]


def test_speaker_split_keeps_speakers_disjoint():
    split = splits.speaker_split(SPEAKERS, test_speakers=["03"], val_speakers=["08"])
    parts = {name: {SPEAKERS[i] for i in idx} for name, idx in split.parts().items()}
    assert parts == {"train": {"09", "10"}, "val": {"08"}, "test": {"03"}}


def test_speaker_split_rejects_unknown_speaker():
    with pytest.raises(DataError, match=r"\['99'\] are not in the corpus"):
        splits.speaker_split(SPEAKERS, test_speakers=["99"], val_speakers=["08"])


def test_loso_fold_tests_on_one_speaker_and_validates_on_the_next():
    folds = [splits.loso_split(SPEAKERS, k) for k in range(4)]
    assert [{SPEAKERS[i] for i in f.test} for f in folds] == [{"03"}, {"08"}, {"09"}, {"10"}]
    assert {SPEAKERS[i] for i in folds[3].val} == {"03"}
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(len(SPEAKERS)))


def test_loso_fold_out_of_range_names_the_option():
    with pytest.raises(DataError, match="data.split.fold=4 is out of range"):
        splits.loso_split(SPEAKERS, 4)


def test_saved_split_lists_files_with_labels(tmp_path):
    utterances = [Utterance(Path(f"/c/{i}.wav"), label, "s1") for i, label in enumerate(LABELS[:30] + LABELS[-30:])]
    split = splits.stratified_split([u.label for u in utterances], seed=0)
    splits.save_split(split, utterances, tmp_path)
    lines = (tmp_path / "test.csv").read_text().splitlines()
    assert lines[0] == "path,label,speaker"
    assert len(lines) - 1 == len(split.test)
    assert lines[1] == f"/c/{split.test[0]}.wav,{utterances[split.test[0]].label},s1"


def test_kfold_test_folds_cover_every_utterance_exactly_once():
    folds = [splits.kfold_split(LABELS, folds=10, fold=k, seed=0) for k in range(10)]
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(len(LABELS)))
    assert sorted(len(f.test) for f in folds) == [53] * 5 + [54] * 5


def test_kfold_deals_each_class_evenly_over_the_folds():
    for k in range(10):
        counts = Counter(LABELS[i] for i in splits.kfold_split(LABELS, folds=10, fold=k, seed=0).test)
        for label, n in EMODB_COUNTS.items():
            assert counts[label] in (n // 10, n // 10 + 1), (k, label)


def test_kfold_validation_is_carved_from_the_training_folds():
    split = splits.kfold_split(LABELS, folds=10, fold=4, val=0.1, seed=0)
    assert sorted(_all(split).tolist()) == list(range(len(LABELS)))
    assert not set(split.val) & set(split.test) and not set(split.train) & set(split.test)
    # 10 % of what each class has left after its test fold (at least one), rounded half up.
    val_counts, test_counts = Counter(LABELS[i] for i in split.val), Counter(LABELS[i] for i in split.test)
    assert val_counts == {label: max(1, int((n - test_counts[label]) * 0.1 + 0.5)) for label, n in EMODB_COUNTS.items()}
    assert val_counts["anger"] == 11  # 127 - 13 = 114 left


def test_kfold_is_deterministic_per_seed():
    a, b, c = (splits.kfold_split(LABELS, 10, 2, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.test, c.test)


def test_kfold_fold_out_of_range_names_the_option():
    with pytest.raises(DataError, match="data.split.fold=10 is out of range for data.split.folds=10"):
        splits.kfold_split(LABELS, folds=10, fold=10)


def test_cross_corpus_split_tests_on_every_utterance_of_the_other_corpus():
    labels = ["a"] * 20 + ["b"] * 10 + ["a", "b", "b"]
    split = splits.cross_corpus_split(labels, n_source=30, val=0.1, seed=0)
    assert split.test.tolist() == [30, 31, 32]
    assert Counter(labels[i] for i in split.val) == {"a": 2, "b": 1}
    assert sorted(_all(split).tolist()) == list(range(33))


def test_split_config_rejects_a_fold_outside_the_folds():
    with pytest.raises(DataError, match="data.split.fold=12 is out of range"):
        splits.SplitConfig(kind="kfold", folds=10, fold=12)


def test_cross_corpus_config_needs_a_test_corpus():
    with pytest.raises(DataError, match="needs data.split.test_corpus"):
        splits.SplitConfig(kind="cross_corpus")
