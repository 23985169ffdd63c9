"""Run a ``.serq`` model with numpy: dequantize once (``ser.dsp.grid``, each layer's own grid), then
[speaker z-score →] standardise → network → softmax.

The network is the MLP of the file's ``layers`` (in order), or, when the header has a
``network`` graph (Light-SERNet), its list of operations on named tensors (``ser.runtime.graph``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.dsp import speaker_norm
from ser.dsp.feature_config import FeatureConfig
from ser.dsp.speaker_norm import RunningSpeakerStats, SpeakerStats
from ser.errors import SERError
from ser.runtime.graph import Graph
from ser.runtime.serq import SerqHeader, SerqModel

NORMALIZE = speaker_norm.NORMALIZE


@dataclass
class Layer:
    weight: np.ndarray
    bias: np.ndarray | None
    relu: bool


@dataclass
class QuantizedModel:
    """Everything needed to go from a feature vector to class probabilities.

    ``normalize`` is how the model was trained: ``"global"`` (features go straight into the
    standardisation) or ``"speaker"`` (each utterance is first z-scored with its speaker's
    ``SpeakerStats``; ``population`` and ``prior_weight`` are the training population's
    statistics and the shrinkage toward them that a speaker's own estimate gets).
    """

    classes: list[str]
    features: FeatureConfig
    mean: np.ndarray
    std: np.ndarray
    layers: list[Layer]
    header: SerqHeader
    normalize: str = "global"
    population: SpeakerStats | None = None
    prior_weight: float = 0.0
    graph: Graph | None = None  # a convolutional network (the header's ``network``); None: the MLP of ``layers``

    @classmethod
    def load(cls, path: str | Path) -> QuantizedModel:
        return cls.from_serq(SerqModel.read(path), path)

    @classmethod
    def from_serq(cls, serq: SerqModel, path: str | Path = "<memory>") -> QuantizedModel:
        """The model of a ``.serq`` file's contents, read from disk or built in memory by the exporter."""
        header, arrays = serq.header, serq.arrays
        layers = [
            Layer(serq.weight(spec), arrays.get(f"{spec.name}.bias"), spec.activation == "relu")
            for spec in header.layers
        ]
        graph = None
        if header.network is not None:
            weights = {spec.name: layer.weight for spec, layer in zip(header.layers, layers)}
            graph = Graph.load(path, header.network, weights, arrays)
        population = None
        if header.normalize == "speaker":
            population = SpeakerStats(arrays["population_mean"], arrays["population_std"], 0.0)
        return cls(
            list(header.classes),
            header.features,
            arrays["feature_mean"],
            arrays["feature_std"],
            layers,
            header,
            header.normalize,
            population,
            header.prior_weight,
            graph,
        )

    @property
    def speaker_normalized(self) -> bool:
        return self.normalize == "speaker"

    # -- speaker statistics (speaker-normalised models) ------------------------------------

    def _require_speaker(self) -> None:
        if not self.speaker_normalized:
            raise SERError(
                "this model was trained with global normalisation (data.normalize=global) and takes no "
                "speaker statistics"
            )

    def _batch(self, features: np.ndarray) -> np.ndarray:
        """Features as a batch: ``(n, dim)`` for the MLP, ``(n, channels, frames)`` for a graph; one utterance
        may come without its batch axis."""
        x = np.asarray(features, dtype=np.float32)
        if self.graph is None:
            return np.atleast_2d(x)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1] != self.graph.input[0]:
            raise SERError(
                f"this model takes frame sequences ({self.graph.input[0]}, frames) or a batch of them, "
                f"got shape {x.shape}"
            )
        return x

    def enrol(self, features: np.ndarray) -> SpeakerStats:
        """A speaker's statistics from the features ``(recordings, dim)`` (or ``(recordings, channels, frames)``)
        of several of their recordings.

        The training estimator: shrunk toward the population by ``prior_weight`` recordings;
        with one recording and no prior weight it is the population's statistics.
        """
        self._require_speaker()
        features = np.asarray(features, dtype=np.float32)
        want = 2 if self.graph is None else 3
        if features.ndim != want or features.shape[1] != self.mean.shape[0]:
            shape = (
                f"(recordings, {self.mean.size})"
                if self.graph is None
                else f"(recordings, {self.mean.shape[0]}, frames)"
            )
            raise SERError(f"enrolment features must have shape {shape}, got {features.shape}")
        return speaker_norm.statistics(features, self.population, self.prior_weight, self.features.block_slices())

    def running(self) -> RunningSpeakerStats:
        """An estimate to update one recording at a time (``.update(features)`` returns the current one)."""
        self._require_speaker()
        return RunningSpeakerStats(self.population, self.prior_weight, self.features.block_slices())

    def check_speaker(self, speaker: SpeakerStats | None) -> None:
        """Raise ``SERError`` unless ``speaker`` fits this model (given iff it is speaker-normalised)."""
        if speaker is not None:
            self._require_speaker()
            if np.shape(speaker.mean) != self.mean.shape or np.shape(speaker.std) != self.mean.shape:
                raise SERError(
                    f"speaker statistics have shape {np.shape(speaker.mean)}, the model's features {self.mean.shape}"
                )
        elif self.speaker_normalized:
            raise SERError(
                "this model was trained with speaker normalisation (data.normalize=speaker) and needs "
                "the speaker's statistics (or model.population for none)"
            )

    # -- inference ---------------------------------------------------------------------------

    def logits(self, features: np.ndarray, speaker: SpeakerStats | None = None) -> np.ndarray:
        self.check_speaker(speaker)
        x = self._batch(features)
        if speaker is not None:
            x = speaker.apply(x)
        x = (x - self.mean) / self.std
        if self.graph is not None:  # one utterance at a time keeps the convolutions' buffers small
            return (
                np.concatenate([self.graph(row[None]) for row in x])
                if len(x)
                else np.zeros((0, len(self.classes)), np.float32)
            )
        for layer in self.layers:
            x = x @ layer.weight.T
            if layer.bias is not None:
                x = x + layer.bias
            if layer.relu:
                x = np.maximum(x, 0.0)
        return x

    def probabilities(self, features: np.ndarray, speaker: SpeakerStats | None = None) -> np.ndarray:
        """Class probabilities ``(n, classes)`` of features ``(dim,)`` or ``(n, dim)`` (a graph model:
        ``(channels, frames)`` or ``(n, channels, frames)``).

        A speaker-normalised model needs ``speaker`` (from ``enrol``, ``running`` or a file
        written by ``ser enroll``; ``self.population`` when nothing of the speaker is known);
        a global model refuses one.
        """
        logits = self.logits(features, speaker).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
