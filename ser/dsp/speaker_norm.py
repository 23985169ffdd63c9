"""Speaker normalisation: z-score each feature with statistics of the speaker's own recordings.

A voice shifts every feature (pitch moves chroma, vocal-tract length moves formants and so
the MFCCs, loudness moves the mel energies) by far more than an emotion does, so a model sees
emotion more clearly relative to how that speaker usually sounds. The statistics need no
labels, only several recordings of the speaker, which is why SER papers commonly use them
(it is transductive: a test utterance is normalised with the other test utterances of its
speaker).

After deployment the same estimator runs from a few enrolment recordings or as a running
estimate. With few recordings the plain estimate is noisy, so ``prior_weight`` pseudo-
recordings of the training population's statistics are mixed in (a conjugate-style
shrinkage); with fewer than two recordings and no prior there is no spread to measure, and
the population statistics are used as they are. Only numpy: the on-device runtime uses this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NORMALIZE = ("global", "speaker")
SPEAKER_STATISTICS = ("enrolled", "part")
STD_FLOOR = 1e-10  # relative to each block's largest value; see SERDataModule.standardization


@dataclass(frozen=True)
class SpeakerStats:
    """Mean and std of features, shaped to broadcast over one utterance's features.

    ``(dim,)`` for pooled vectors; ``(channels, 1)`` for (channels, frames) sequences, whose
    statistics run over utterances and time. ``count`` is how many recordings they came from.
    """

    mean: np.ndarray
    std: np.ndarray
    count: float

    def apply(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)


def _samples(features: np.ndarray) -> tuple[np.ndarray, int]:
    """Features as (samples, dim) rows, and how many samples one utterance contributes."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim == 2:
        return features, 1
    if features.ndim == 3:  # (utterances, channels, frames): every frame is a sample
        return features.transpose(0, 2, 1).reshape(-1, features.shape[1]), features.shape[2]
    raise ValueError(f"expected (utterances, dim) or (utterances, channels, frames), got shape {features.shape}")


def _shaped(values: np.ndarray, sequence: bool) -> np.ndarray:
    return (values[:, None] if sequence else values).astype(np.float32)


def floored_std(std: np.ndarray, scale: np.ndarray, blocks: list[slice] | None) -> np.ndarray:
    """``std`` raised to ``STD_FLOOR`` of its block's largest |value| (``scale`` per feature), 1 where 0.

    A feature that varies by less than that (e.g. mel bands above the Nyquist frequency of
    audio upsampled from a lower rate) holds only float32 rounding noise; dividing by its own
    tiny std would blow that noise up to unit variance.
    """
    std = std.copy()
    for block in blocks or [slice(None)]:
        std[block] = np.maximum(std[block], STD_FLOOR * scale[block].max(initial=0.0))
    std[std == 0] = 1.0
    return std


@dataclass
class _Sums:
    """Sufficient statistics of a speaker's samples, in float64: enough to update one recording at a time."""

    utterances: int
    samples: int
    total: np.ndarray
    squares: np.ndarray
    peak: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> _Sums:
        rows, _ = _samples(features)
        return cls(
            len(features), len(rows), rows.sum(axis=0), (rows**2).sum(axis=0), np.abs(rows).max(axis=0, initial=0.0)
        )

    def __add__(self, other: _Sums) -> _Sums:
        return _Sums(
            self.utterances + other.utterances,
            self.samples + other.samples,
            self.total + other.total,
            self.squares + other.squares,
            np.maximum(self.peak, other.peak),
        )


def _estimate(
    sums: _Sums, sequence: bool, prior: SpeakerStats | None, prior_weight: float, blocks: list[slice] | None
) -> SpeakerStats:
    if prior is not None and (sums.utterances == 0 or (prior_weight <= 0 and sums.utterances < 2)):
        return prior
    if sums.utterances == 0:
        raise ValueError("no recordings to compute speaker statistics from")
    per_utterance = sums.samples // sums.utterances
    w = prior_weight * per_utterance if prior is not None else 0.0
    n = sums.samples
    if w > 0:
        mu0 = np.asarray(prior.mean, dtype=np.float64).reshape(-1)
        var0 = np.asarray(prior.std, dtype=np.float64).reshape(-1) ** 2
    else:
        mu0 = var0 = np.zeros_like(sums.total)
    mean = (w * mu0 + sums.total) / (w + n)
    spread = sums.squares - 2 * mean * sums.total + n * mean**2  # Σ(x − mean)²
    var = np.maximum(w * (var0 + (mu0 - mean) ** 2) + spread, 0.0) / (w + n)
    std = floored_std(np.sqrt(var), sums.peak, blocks)
    count = sums.utterances + (prior_weight if prior is not None else 0.0)
    return SpeakerStats(_shaped(mean, sequence), _shaped(std, sequence), float(count))


def statistics(
    features: np.ndarray,
    prior: SpeakerStats | None = None,
    prior_weight: float = 0.0,
    blocks: list[slice] | None = None,
) -> SpeakerStats:
    """Statistics of one speaker's recordings ``features`` (utterances first), shrunk toward ``prior``.

    mean = (w·μ₀ + Σx) / (w + n) and var = (w·(σ₀² + (μ₀ − mean)²) + Σ(x − mean)²) / (w + n),
    with n the samples and w = ``prior_weight`` recordings' worth of samples. With w = 0 this is
    the speaker's own mean and (population) std; with fewer than two recordings and w = 0 it
    is ``prior``. ``blocks`` floors each feature block's std (``floored_std``).
    """
    features = np.asarray(features)
    return _estimate(_Sums.of(features), features.ndim == 3, prior, prior_weight, blocks)


def normalize_by_speaker(
    features: np.ndarray,
    speakers: np.ndarray,
    groups: list[np.ndarray],
    prior: SpeakerStats | None = None,
    prior_weight: float = 0.0,
    blocks: list[slice] | None = None,
    enrolled: np.ndarray | None = None,
) -> np.ndarray:
    """Each utterance z-scored with its speaker's statistics within its own group of indices.

    ``groups`` are the parts of a split (train, val, test): a test utterance is normalised
    only with its speaker's test utterances, so no part borrows statistics from another.
    ``enrolled`` (the training part's indices) changes that for the speakers it holds: their
    statistics come from their ``enrolled`` utterances alone and serve every part, as a known
    speaker's enrolment recordings would after deployment. A few test utterances of one
    speaker (about 6 in a 10-fold test fold) are a noisy estimate whose mean also moves with
    the emotions they happen to show; the speakers ``enrolled`` lacks keep their own part's.
    """
    out = np.empty(features.shape, dtype=np.float32)
    speakers = np.asarray(speakers)
    known = (
        {}
        if enrolled is None
        else {
            speaker: statistics(features[enrolled[speakers[enrolled] == speaker]], prior, prior_weight, blocks)
            for speaker in np.unique(speakers[enrolled])
        }
    )
    for group in groups:
        for speaker in np.unique(speakers[group]):
            members = group[speakers[group] == speaker]
            stats = known.get(speaker) or statistics(features[members], prior, prior_weight, blocks)
            out[members] = stats.apply(features[members])
    return out


class RunningSpeakerStats:
    """A speaker's statistics updated one recording at a time (constant memory), for live use."""

    def __init__(self, prior: SpeakerStats, prior_weight: float = 0.0, blocks: list[slice] | None = None) -> None:
        self.prior, self.prior_weight, self.blocks = prior, prior_weight, blocks
        self._sums: _Sums | None = None
        self._sequence = False

    def update(self, features: np.ndarray) -> SpeakerStats:
        """Add one recording's features and return the statistics of everything seen so far."""
        one = np.asarray(features)[None]
        self._sequence = one.ndim == 3
        self._sums = _Sums.of(one) if self._sums is None else self._sums + _Sums.of(one)
        return self.current

    @property
    def current(self) -> SpeakerStats:
        if self._sums is None:
            return self.prior
        return _estimate(self._sums, self._sequence, self.prior, self.prior_weight, self.blocks)
