"""Run a ``.serq`` model with numpy: dequantize once (``ser.quant.grid``, each layer's own grid), then
[speaker z-score →] standardise → MLP → softmax."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.data import speaker_norm
from ser.data.feature_config import FeatureConfig
from ser.data.speaker_norm import RunningSpeakerStats, SpeakerStats
from ser.errors import SERError
from ser.quant import grid as grids  # numpy only (ser.quant's __init__ imports nothing)
from ser.runtime import model_file

NORMALIZE = speaker_norm.NORMALIZE


def dequantize(codes: np.ndarray, scales: np.ndarray, bits: int, grid: str = "symmetric") -> np.ndarray:
    """Weights (float32) from unsigned codes: level(code) · scale of the row (or of the layer).

    The levels are ``ser.quant.grid``'s, the quantizer's own definition: ``symmetric``
    (1 bit → ±α; b bits → (code − (2^(b−1)−1)) · scale) or ``full`` (code − (2^b − 1)/2) · scale.
    """
    return grids.dequantize(codes, scales, bits, grid)


def _layer_weight(path, spec: dict, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """One layer's weight, refusing a grid, width or code this runtime does not know (absent grid: symmetric)."""
    name, bits, grid = spec["name"], int(spec["bits"]), spec.get("grid", "symmetric")
    if grid not in grids.GRIDS:
        raise model_file.ModelFileError(f"{path}: layer {name} uses the quantization grid {grid!r}, this runtime knows "
                                        f"{', '.join(grids.GRIDS)}; upgrade ser")
    if not grids.MIN_BITS <= bits <= grids.MAX_BITS:
        raise model_file.ModelFileError(f"{path}: layer {name} has {bits} bits, this runtime reads 1 to 8")
    if codes.size and int(codes.max()) >= grids.n_codes(bits, grid):
        raise model_file.ModelFileError(f"{path}: layer {name} has a code outside its {bits}-bit {grid} grid; "
                                        "the file is not a valid model")
    return dequantize(codes, scales, bits, grid)


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
    header: dict
    normalize: str = "global"
    population: SpeakerStats | None = None
    prior_weight: float = 0.0

    @classmethod
    def load(cls, path: str | Path) -> "QuantizedModel":
        header, arrays = model_file.read(path)
        layers = []
        for spec in header["layers"]:
            name = spec["name"]
            weight = _layer_weight(path, spec, arrays[f"{name}.codes"], arrays[f"{name}.scales"])
            layers.append(Layer(weight, arrays.get(f"{name}.bias"), spec["activation"] == "relu"))
        norm = header.get("normalize", {"kind": "global"})
        if norm.get("kind") not in NORMALIZE:
            raise model_file.ModelFileError(f"{path}: normalisation {norm.get('kind')!r} is not one of "
                                            f"{', '.join(NORMALIZE)}; upgrade ser to run this model")
        population = prior_weight = None
        if norm["kind"] == "speaker":
            population = SpeakerStats(arrays["population_mean"], arrays["population_std"], 0.0)
            prior_weight = float(norm.get("prior_weight", 0.0))
        return cls(list(header["classes"]), FeatureConfig(**header["features"]), arrays["feature_mean"],
                   arrays["feature_std"], layers, header, norm["kind"], population, prior_weight or 0.0)

    @property
    def speaker_normalized(self) -> bool:
        return self.normalize == "speaker"

    # -- speaker statistics (speaker-normalised models) ------------------------------------

    def _blocks(self) -> list[slice]:
        return [block for _, block in self.features.blocks()]

    def _require_speaker(self) -> None:
        if not self.speaker_normalized:
            raise SERError("this model was trained with global normalisation (data.normalize=global) and takes no "
                           "speaker statistics")

    def enrol(self, features: np.ndarray) -> SpeakerStats:
        """A speaker's statistics from the features ``(recordings, dim)`` of several of their recordings.

        The training estimator: shrunk toward the population by ``prior_weight`` recordings;
        with one recording and no prior weight it is the population's statistics.
        """
        self._require_speaker()
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.mean.size:
            raise SERError(f"enrolment features must have shape (recordings, {self.mean.size}), got {features.shape}")
        return speaker_norm.statistics(features, self.population, self.prior_weight, self._blocks())

    def running(self) -> RunningSpeakerStats:
        """An estimate to update one recording at a time (``.update(features)`` returns the current one)."""
        self._require_speaker()
        return RunningSpeakerStats(self.population, self.prior_weight, self._blocks())

    def check_speaker(self, speaker: SpeakerStats | None) -> None:
        """Raise ``SERError`` unless ``speaker`` fits this model (given iff it is speaker-normalised)."""
        if speaker is not None:
            self._require_speaker()
            if np.shape(speaker.mean) != self.mean.shape or np.shape(speaker.std) != self.mean.shape:
                raise SERError(f"speaker statistics have shape {np.shape(speaker.mean)}, the model's features "
                               f"{self.mean.shape}")
        elif self.speaker_normalized:
            raise SERError("this model was trained with speaker normalisation (data.normalize=speaker) and needs "
                           "the speaker's statistics (or model.population for none)")

    # -- inference ---------------------------------------------------------------------------

    def logits(self, features: np.ndarray, speaker: SpeakerStats | None = None) -> np.ndarray:
        self.check_speaker(speaker)
        x = np.atleast_2d(features).astype(np.float32)
        if speaker is not None:
            x = speaker.apply(x)
        x = (x - self.mean) / self.std
        for layer in self.layers:
            x = x @ layer.weight.T
            if layer.bias is not None:
                x = x + layer.bias
            if layer.relu:
                x = np.maximum(x, 0.0)
        return x

    def probabilities(self, features: np.ndarray, speaker: SpeakerStats | None = None) -> np.ndarray:
        """Class probabilities ``(n, classes)`` of features ``(dim,)`` or ``(n, dim)``.

        A speaker-normalised model needs ``speaker`` (from ``enrol``, ``running`` or a file
        written by ``ser enroll``; ``self.population`` when nothing of the speaker is known);
        a global model refuses one.
        """
        logits = self.logits(features, speaker).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
