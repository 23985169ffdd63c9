"""The classical reference: an SVM on the network's own inputs, C chosen inside the training part."""

from __future__ import annotations

import numpy as np
import pytest

from ser.errors import SERError
from ser.models.classic import SVMConfig, utterance_statistics


def _parts(seed: int = 0, n: int = 20, shift: float = 3.0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Three classes of 2-d points around (0, 0), (shift, 0) and (0, shift), in raw (unstandardised) units."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [shift, 0.0], [0.0, shift]])

    def part(k: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(3), k)
        return (100.0 + 10.0 * (centres[y] + 0.3 * rng.standard_normal((len(y), 2)))).astype(np.float32), y

    return {"train": part(n), "val": part(4), "test": part(10)}


def _fit(config: SVMConfig, parts, seed: int = 0):
    train = parts["train"][0]
    return config.fit_predict(parts, train.mean(axis=0), train.std(axis=0), seed)


def test_separable_classes_are_all_recognised_and_kept_as_the_test_predictions():
    parts = _parts()
    (record,), predictions = _fit(SVMConfig(), parts)
    assert record.name == "svm" and record.kernel == "rbf"
    assert predictions["svm"] == parts["test"][1].tolist()
    assert (record.test_acc, record.test_uar) == (1.0, 1.0)
    assert record.train_utterances == 72  # train (60) and val (12): an SVM needs no early-stopping data


def test_train_on_train_leaves_the_validation_part_out():
    (record,), _ = _fit(SVMConfig(train_on="train"), _parts())
    assert record.train_utterances == 60


def test_linear_kernel_is_kept_under_its_own_name():
    records, predictions = _fit(SVMConfig(kernels=["rbf", "linear"]), _parts())
    assert [r.name for r in records] == ["svm", "svm_linear"] and set(predictions) == {"svm", "svm_linear"}


def test_c_is_chosen_from_the_grid_without_looking_at_the_test_part():
    parts = _parts(shift=0.5)
    (record,), _ = _fit(SVMConfig(C=[0.01, 1.0, 100.0]), parts)
    scrambled = {**parts, "test": (parts["test"][0][::-1].copy(), parts["test"][1])}
    (again,), _ = _fit(SVMConfig(C=[0.01, 1.0, 100.0]), scrambled)
    assert record.C in (0.01, 1.0, 100.0)
    assert (again.C, again.inner_uar) == (record.C, record.inner_uar)
    assert again.test_acc != record.test_acc  # the test part was scored, and only scored


def test_the_same_seed_gives_the_same_choice_and_predictions():
    parts = _parts(shift=0.5)
    (first,), first_predictions = _fit(SVMConfig(), parts, seed=3)
    (second,), second_predictions = _fit(SVMConfig(), parts, seed=3)
    assert (first.C, first.inner_uar, first_predictions) == (second.C, second.inner_uar, second_predictions)


def test_frame_sequences_become_each_channels_mean_and_std_over_time():
    frames = np.array([[[1.0, 3.0], [2.0, 2.0]]])  # one utterance, 2 channels, 2 frames
    np.testing.assert_allclose(utterance_statistics(frames), [[2.0, 2.0, 1.0, 0.0]])
    pooled = np.ones((3, 5))
    assert utterance_statistics(pooled) is pooled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernels": ["poly"]}, r"classic.kernels=\['poly'\] must be a non-empty subset of \['rbf', 'linear'\]"),
        ({"C": [0.0]}, r"classic.C=\[0.0\] must be a non-empty list of positive values"),
        ({"inner_folds": 1}, r"classic.inner_folds=1 must be at least 2"),
        ({"train_on": "test"}, r"classic.train_on='test' must be one of train_val, train"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_option(kwargs, message):
    with pytest.raises(SERError, match=message):
        SVMConfig(**kwargs)


def test_a_class_with_a_single_training_utterance_is_a_clear_error():
    parts = _parts()
    x, y = parts["train"]
    keep = np.r_[np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:1]]
    parts = {"train": (x[keep], y[keep]), "val": (parts["val"][0][:8], parts["val"][1][:8]), "test": parts["test"]}
    with pytest.raises(SERError, match="a class has fewer than 2 training utterances"):
        _fit(SVMConfig(), parts)
