"""The LightningDataModule: corpus → cached features → split → tensors.

Features go to the model unstandardised; the training split's mean and standard deviation
are exposed so the model can store them as buffers, which keeps the standardisation inside
every checkpoint instead of in a side file that could get lost.
"""

from __future__ import annotations

import logging
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
from ser.data.audio import AudioChecks
from ser.data.corpora import Utterance, class_order, load_corpus
from ser.data.extraction import load_features
from ser.data.features import FeatureConfig
from ser.data.problems import Problems
from ser.errors import DataError
from ser.transfer.graph import Graph

log = logging.getLogger(__name__)

SPLIT_KINDS = ("stratified", "speaker", "loso")
STD_FLOOR = 1e-10


@dataclass(frozen=True)
class SplitConfig:
    """How utterances are divided; ``kind`` picks which of the other fields matter."""

    kind: str = "stratified"
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    test_speakers: tuple[str, ...] = ()
    val_speakers: tuple[str, ...] = ()
    fold: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise DataError(f"data.split.kind={self.kind!r} is not one of {', '.join(SPLIT_KINDS)}")
        object.__setattr__(self, "test_speakers", tuple(str(s) for s in self.test_speakers))
        object.__setattr__(self, "val_speakers", tuple(str(s) for s in self.val_speakers))


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
    """What ``setup`` produced; kept together so it is computed exactly once."""

    utterances: list[Utterance]
    features: np.ndarray
    labels: np.ndarray
    classes: list[str]
    split: splits.Split
    problems: list[str] = field(default_factory=list)
    feature_seconds: float = 0.0


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
    ) -> None:
        super().__init__()
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
        self.data: Prepared | None = None
        # Set by knowledge transfer (ser.transfer): training batches then carry each
        # utterance's graph neighbours and edge weights.
        self.graph: Graph | None = None

    def _utterances(self) -> list[Utterance]:
        if self.corpus == "synthetic":
            root = Path(self.root).expanduser() if self.root else self.cache_dir / "corpora" / "synthetic"
            manifest = synthetic.generate(root, self.synthetic_spec)
            return load_corpus("manifest", manifest=manifest, problems=self.problems)
        return load_corpus(self.corpus, root=self.root, manifest=self.manifest, problems=self.problems)

    def _split(self, utterances: list[Utterance]) -> splits.Split:
        c = self.split_config
        if c.kind == "stratified":
            return splits.stratified_split([u.label for u in utterances], c.val, c.test, c.seed)
        speakers = [u.speaker for u in utterances]
        if c.kind == "loso":
            return splits.loso_split(speakers, c.fold)
        return splits.speaker_split(speakers, c.test_speakers, c.val_speakers)

    def prepare_data(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        table = load_features(
            self._utterances(),
            self.feature_config,
            self.problems,
            self.cache_dir,
            self.checks,
            self.extract_device,
            self.extract_batch_size,
        )
        utterances, features = table.utterances, table.features
        if self.split_config.kind == "stratified":
            small = splits.small_classes([u.label for u in utterances], 3, self.problems)
            mask = np.array([u.label not in small for u in utterances], dtype=bool)
            utterances, features = [u for u, m in zip(utterances, mask) if m], features[mask]
        classes = class_order(u.label for u in utterances)
        labels = np.array([classes.index(u.label) for u in utterances], dtype=np.int64)
        split = self._split(utterances)
        self.data = Prepared(utterances, features, labels, classes, split, list(self.problems.messages), table.seconds)
        sizes = {name: len(index) for name, index in split.parts().items()}
        log.info("%s: %d utterances, %d classes %s, split %s", self.corpus, len(utterances), len(classes), classes, sizes)

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
        """Mean and std of the training split, with each std floored at STD_FLOOR of its block's scale.

        Frame sequences get one mean and std per channel (over utterances and time), shaped
        (channels, 1) so they broadcast over frames. A feature that varies by less than 1e-10
        of its block's largest value (e.g. mel bands above 8 kHz of 16 kHz audio resampled to
        22.05 kHz, about 1e-13 here) holds only float32 rounding noise; dividing by its own
        tiny std would blow that noise up to unit variance and make the model depend on it.
        Constant features get std 1.
        """
        train = self.prepared.features[self.prepared.split.train].astype(np.float64)
        axes = (0,) if train.ndim == 2 else (0, 2)
        mean, std = train.mean(axis=axes), train.std(axis=axes)
        for _, block in self.feature_config.blocks():
            std[block] = np.maximum(std[block], STD_FLOOR * np.abs(train[:, block]).max())
        std[std == 0] = 1.0
        if train.ndim == 3:
            mean, std = mean[:, None], std[:, None]
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)

    def tensors(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        index = getattr(self.prepared.split, part)
        return torch.from_numpy(self.prepared.features[index]), torch.from_numpy(self.prepared.labels[index])

    def save_splits(self, directory: str | Path) -> None:
        splits.save_split(self.prepared.split, self.prepared.utterances, directory)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        x, y = self.tensors("train")
        if self.graph is None:
            return self._loader(TensorDataset(x, y), shuffle=True)
        if len(self.graph.neighbors) != len(x):
            raise DataError(f"the graph has {len(self.graph.neighbors)} rows for {len(x)} training utterances")
        return self._loader(WithNeighbours(x, y, self.graph), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(TensorDataset(*self.tensors("val")), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(TensorDataset(*self.tensors("test")), shuffle=False)


class WithNeighbours(Dataset):
    """(features, label, neighbours' features (k, ...), edge weights (k,)) per training utterance.

    Neighbours are looked up per item rather than copied k times up front, so memory stays
    that of the features. A missing edge (index -1) points at row 0 with weight 0.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, graph: Graph) -> None:
        self.x, self.y = x, y
        self.neighbors = torch.from_numpy(graph.neighbors).clamp_min(0)
        self.weights = torch.from_numpy(graph.weights)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.x[i], self.y[i], self.x[self.neighbors[i]], self.weights[i]
