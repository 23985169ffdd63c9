"""Classical reference classifiers, trained beside the network on exactly what it sees.

A support-vector machine on utterance statistics is the result every SER paper is measured
against, and on a few hundred utterances it is hard to beat. A number for the network means
little without the SVM's on the same features, the same split and the same normalisation, so
the run trains one (``classic=svm``) and keeps its test predictions beside the network's;
``ser report`` pools both. Its regularisation ``C`` is chosen by stratified cross-validation
inside the training part, never on the test part.

scikit-learn is imported when a run asks for a classical model, so the runtime never needs it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ser.errors import SERError
from ser.results import ClassicRecord

KERNELS = ("rbf", "linear")
TRAIN_ON = ("train_val", "train")


def utterance_statistics(inputs: np.ndarray) -> np.ndarray:
    """The SVM's input: pooled vectors as they are; frame sequences (utterances, channels, frames)
    as each channel's mean and standard deviation over time, the classical utterance statistics."""
    if inputs.ndim == 2:
        return inputs
    return np.concatenate([inputs.mean(axis=2), inputs.std(axis=2)], axis=1)


@dataclass(frozen=True)
class SVMConfig:
    """``conf/classic/svm.yaml``: which SVMs to train and how to choose their ``C``.

    ``train_on=train_val`` fits on every non-test utterance (an SVM needs no early-stopping
    data, and this is how the literature trains it); ``train`` fits on the network's training
    part only, to measure what the validation part costs the network.
    """

    kernels: Sequence[str] = ("rbf",)
    C: Sequence[float] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    inner_folds: int = 5
    train_on: str = "train_val"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(self.kernels))
        object.__setattr__(self, "C", tuple(float(c) for c in self.C))
        unknown = [k for k in self.kernels if k not in KERNELS]
        if unknown or not self.kernels:
            raise SERError(f"classic.kernels={list(self.kernels)} must be a non-empty subset of {list(KERNELS)}")
        if not self.C or min(self.C) <= 0:
            raise SERError(f"classic.C={list(self.C)} must be a non-empty list of positive values")
        if self.inner_folds < 2:
            raise SERError(f"classic.inner_folds={self.inner_folds} must be at least 2")
        if self.train_on not in TRAIN_ON:
            raise SERError(f"classic.train_on={self.train_on!r} must be one of {', '.join(TRAIN_ON)}")

    def fit_predict(
        self,
        parts: dict[str, tuple[np.ndarray, np.ndarray]],
        mean: np.ndarray,
        std: np.ndarray,
        seed: int,
    ) -> tuple[list[ClassicRecord], dict[str, list[int]]]:
        """Each kernel's record and test predictions (class indices), keyed by its model name.

        ``parts`` maps train/val/test to (inputs, labels) as the network receives them;
        ``mean``/``std`` are the network's standardisation (from the training part).
        """
        from sklearn.metrics import balanced_accuracy_score
        from sklearn.model_selection import GridSearchCV, StratifiedKFold

        def standardized(part: str) -> np.ndarray:
            return utterance_statistics((parts[part][0] - mean) / std)

        names = ("train", "val") if self.train_on == "train_val" else ("train",)
        x = np.concatenate([standardized(p) for p in names])
        y = np.concatenate([parts[p][1] for p in names])
        test_x, test_y = standardized("test"), parts["test"][1]
        folds = min(self.inner_folds, int(np.bincount(y).min()))
        if folds < 2:
            raise SERError(
                f"classic=svm: a class has fewer than 2 training utterances, too few to choose C "
                f"by {self.inner_folds}-fold cross-validation (classic=null skips the SVM)"
            )
        records, predictions = [], {}
        for kernel in self.kernels:
            start = time.perf_counter()
            search = GridSearchCV(
                _estimator(kernel, seed),
                {"C": list(self.C)},
                scoring="balanced_accuracy",
                cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            )
            search.fit(x, y)
            predicted = search.predict(test_x)
            name = "svm" if kernel == "rbf" else f"svm_{kernel}"
            records.append(
                ClassicRecord(
                    name=name,
                    kernel=kernel,
                    C=float(search.best_params_["C"]),
                    inner_uar=float(search.best_score_),
                    train_utterances=int(len(y)),
                    test_acc=float((predicted == test_y).mean()),
                    test_uar=float(balanced_accuracy_score(test_y, predicted)),
                    seconds=time.perf_counter() - start,
                )
            )
            predictions[name] = predicted.astype(int).tolist()
        return records, predictions


def _estimator(kernel: str, seed: int):
    from sklearn.svm import SVC, LinearSVC

    if kernel == "rbf":
        return SVC(kernel="rbf", gamma="scale")
    return LinearSVC(dual="auto", max_iter=20000, random_state=seed)
