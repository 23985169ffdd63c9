"""The LightningDataModule: corpus → cached features → split → tensors.

Features go to the model unstandardised; the training split's mean and standard deviation
are exposed so the model can store them as buffers, which keeps the standardisation inside
every checkpoint instead of in a side file that could get lost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from platformdirs import user_cache_path
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ser.data import splits, synthetic
from ser.data.corpora import Utterance, class_order, load_corpus
from ser.data.extraction import load_features
from ser.data.features import FeatureConfig
from ser.data.problems import Problems
from ser.data.splits import SplitConfig
from ser.dsp import speaker_norm
from ser.dsp.audio import AudioChecks
from ser.errors import DataError

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return user_cache_path("ser")


def _as(cls, value):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    return cls(**dict(value))


@dataclass
class Prepared:
    """What ``setup`` produced; kept together so it is computed exactly once.

    ``features`` are as extracted; ``inputs`` are what the model sees (the same array, or
    z-scored per speaker with ``data.normalize=speaker``).
    """

    utterances: list[Utterance]
    features: np.ndarray
    labels: np.ndarray
    classes: list[str]
    split: splits.Split
    problems: list[str] = field(default_factory=list)
    feature_seconds: float = 0.0
    inputs: np.ndarray | None = None
    population: speaker_norm.SpeakerStats | None = None

    def __post_init__(self) -> None:
        if self.inputs is None:
            self.inputs = self.features


class SERDataModule(L.LightningDataModule):
    """Any supported corpus as pooled feature vectors (or frame sequences) with a train/val/test split."""

    def __init__(
        self,
        corpus: str = "synthetic",
        root: str | None = None,
        manifest: str | None = None,
        cache_dir: str | None = None,
        on_error: str = "raise",
        features: FeatureConfig | Mapping[str, Any] | None = None,
        split: SplitConfig | Mapping[str, Any] | None = None,
        synthetic_spec: synthetic.SyntheticSpec | Mapping[str, Any] | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        min_duration_s: float = 0.1,
        extract_device: str = "auto",
        extract_batch_size: int = 8,
        normalize: str = "global",
        speaker_prior_weight: float = 0.0,
        speaker_statistics: str = "part",
        speakers: int | None = None,
    ) -> None:
        super().__init__()
        if normalize not in speaker_norm.NORMALIZE:
            raise DataError(f"data.normalize={normalize!r} is not one of {', '.join(speaker_norm.NORMALIZE)}")
        if speaker_statistics not in speaker_norm.SPEAKER_STATISTICS:
            raise DataError(
                f"data.speaker_statistics={speaker_statistics!r} is not one of "
                f"{', '.join(speaker_norm.SPEAKER_STATISTICS)}"
            )
        if speaker_prior_weight < 0:
            raise DataError(f"data.speaker_prior_weight={speaker_prior_weight} must be >= 0")
        self.corpus = corpus
        self.root = root
        self.manifest = manifest
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.problems = Problems(on_error)
        self.feature_config = _as(FeatureConfig, features)
        self.split_config = _as(SplitConfig, split)
        self.synthetic_spec = _as(synthetic.SyntheticSpec, synthetic_spec)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.checks = AudioChecks(min_duration_s=min_duration_s)
        self.extract_device = extract_device
        self.extract_batch_size = extract_batch_size
        self.normalize = normalize
        self.speaker_prior_weight = float(speaker_prior_weight)
        self.speaker_statistics = speaker_statistics
        self.speakers = speakers
        self.data: Prepared | None = None

    def _load(self, corpus: str, root: str | None, manifest: str | None) -> list[Utterance]:
        if corpus == "synthetic":
            where = Path(root).expanduser() if root else self.cache_dir / "corpora" / "synthetic"
            return load_corpus(
                "manifest", manifest=synthetic.generate(where, self.synthetic_spec), problems=self.problems
            )
        return load_corpus(corpus, root=root, manifest=manifest, problems=self.problems)

    def _utterances(self) -> tuple[list[Utterance], int]:
        """The corpus' utterances and, for a cross-corpus split, the test corpus' after them.

        Returns the list and how many of it come from the training corpus. Across corpora
        only the emotions both have are kept, matched by their canonical names.
        """
        utterances = self._load(self.corpus, self.root, self.manifest)
        c = self.split_config
        if c.kind != "cross_corpus":
            return utterances, len(utterances)
        root = c.test_root or (
            os.environ.get(f"SER_{c.test_corpus.upper()}_ROOT") if c.test_corpus != "synthetic" else None
        )
        test = self._load(c.test_corpus, root, c.test_manifest)
        shared = {u.label for u in utterances} & {u.label for u in test}
        if not shared:
            raise DataError(
                f"{self.corpus} and data.split.test_corpus={c.test_corpus} share no emotion: "
                f"{sorted({u.label for u in utterances})} against {sorted({u.label for u in test})}"
            )
        source = [u for u in utterances if u.label in shared]
        return source + [u for u in test if u.label in shared], len(source)

    def prepare_data(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        utterances, n_source = self._utterances()
        table = load_features(
            utterances,
            self.feature_config,
            self.problems,
            self.cache_dir,
            self.checks,
            self.extract_device,
            self.extract_batch_size,
        )
        kept = {u.path for u in table.utterances}
        n_source = sum(u.path in kept for u in utterances[:n_source])
        utterances, features = table.utterances, table.features
        if self.split_config.kind in ("stratified", "kfold", "cross_corpus"):
            small = splits.small_classes([u.label for u in utterances[:n_source]], 3, self.problems)
            mask = np.array([u.label not in small for u in utterances], dtype=bool)
            n_source = int(mask[:n_source].sum())
            utterances, features = [u for u, m in zip(utterances, mask) if m], features[mask]
        self._check_speakers(utterances)
        classes = class_order(u.label for u in utterances)
        labels = np.array([classes.index(u.label) for u in utterances], dtype=np.int64)
        split = splits.make_split(self.split_config, utterances, n_source)
        inputs, population = self._normalized(utterances, features, split)
        self.data = Prepared(
            utterances,
            features,
            labels,
            classes,
            split,
            list(self.problems.messages),
            table.seconds,
            inputs,
            population,
        )
        sizes = {name: len(index) for name, index in split.parts().items()}
        log.info(
            "%s: %d utterances, %d classes %s, split %s%s",
            self.corpus,
            len(utterances),
            len(classes),
            classes,
            sizes,
            ", features z-scored per speaker" if population is not None else "",
        )

    def _check_speakers(self, utterances: list[Utterance]) -> None:
        """A leave-one-speaker-out sweep runs ``data.speakers`` folds: with a copy holding other
        speakers, some would be tested twice or never, and the pooled score would not be the corpus'."""
        found = len({u.speaker for u in utterances})
        if self.split_config.kind == "loso" and self.speakers is not None and found != self.speakers:
            raise DataError(
                f"{self.root or self.manifest}: holds {found} speakers, but data.speakers={self.speakers} "
                f"(experiment=loso runs one fold per speaker): use the complete corpus or set data.speakers={found}"
            )

    def _normalized(self, utterances: list[Utterance], features: np.ndarray, split: splits.Split):
        """``data.normalize=speaker``: each part's utterances z-scored per speaker within that part, or
        (``speaker_statistics=enrolled``) with the speaker's training utterances where there are any."""
        if self.normalize == "global":
            return features, None
        nameless = [u.path for u in utterances if not u.speaker]
        if nameless:
            raise DataError(
                f"{nameless[0]}: has no speaker, which data.normalize=speaker needs "
                "(add a speaker column to the manifest, or use data.normalize=global)"
            )
        blocks = self.feature_config.block_slices()
        population = speaker_norm.statistics(features[split.train], blocks=blocks)
        speakers = np.array([u.speaker for u in utterances])
        enrolled = split.train if self.speaker_statistics == "enrolled" else None
        inputs = speaker_norm.normalize_by_speaker(
            features, speakers, list(split.parts().values()), population, self.speaker_prior_weight, blocks, enrolled
        )
        return inputs, population

    @property
    def prepared(self) -> Prepared:
        if self.data is None:
            raise RuntimeError("call setup() before using the data")
        return self.data

    @property
    def classes(self) -> list[str]:
        return self.prepared.classes

    @property
    def n_features(self) -> int | tuple[int, ...]:
        """Features per utterance: the pooled vector's length, or (channels, frames)."""
        shape = self.prepared.features.shape[1:]
        return int(shape[0]) if len(shape) == 1 else tuple(int(n) for n in shape)

    def standardization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the training split's inputs, each std floored (``speaker_norm.floored_std``).

        Frame sequences get one mean and std per channel (over utterances and time), shaped
        (channels, 1) so they broadcast over frames. Constant features get std 1.
        """
        train = self.prepared.inputs[self.prepared.split.train].astype(np.float64)
        axes = (0,) if train.ndim == 2 else (0, 2)
        mean, std = train.mean(axis=axes), train.std(axis=axes)
        blocks = self.feature_config.block_slices()
        std = speaker_norm.floored_std(std, np.abs(train).max(axis=axes), blocks)
        if train.ndim == 3:
            mean, std = mean[:, None], std[:, None]
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)

    def tensors(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        index = getattr(self.prepared.split, part)
        return torch.from_numpy(self.prepared.inputs[index]), torch.from_numpy(self.prepared.labels[index])

    def save_splits(self, directory: str | Path) -> None:
        splits.save_split(self.prepared.split, self.prepared.utterances, directory)

    def loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        """A DataLoader with this datamodule's batch size and workers (``ser.transfer`` builds its own datasets)."""
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self.loader(TensorDataset(*self.tensors("train")), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(TensorDataset(*self.tensors("val")), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(TensorDataset(*self.tensors("test")), shuffle=False)
