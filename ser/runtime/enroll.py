"""``ser enroll model.serq rec1.wav rec2.wav dir/ -o speaker.json``: a speaker's statistics, numpy only.

A model trained with ``data.normalize=speaker`` z-scores every utterance with statistics of
its speaker's recordings. This computes them once from a few recordings of the speaker
(no labels needed), with the model's own estimator (shrunk toward the training population
by the model's ``speaker_prior_weight``), and writes them for ``ser predict --speaker``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ser.dsp.audio import load_audio
from ser.dsp.feature_config import FeatureConfig
from ser.dsp.speaker_norm import SpeakerStats
from ser.errors import SERError
from ser.runtime.features import Extractor
from ser.runtime.model import QuantizedModel

FORMAT = "ser-speaker"
VERSION = 1


def population_fingerprint(model: QuantizedModel) -> str:
    """Identifies the prior a speaker's statistics were shrunk toward (population and its weight)."""
    digest = hashlib.sha256(np.ascontiguousarray(model.population.mean, "<f4").tobytes())
    digest.update(np.ascontiguousarray(model.population.std, "<f4").tobytes())
    digest.update(repr(float(model.prior_weight)).encode())
    return digest.hexdigest()[:16]


def recording_features(model: QuantizedModel, files: Iterable[Path]) -> np.ndarray:
    """Features ``(recordings, dim)`` of the enrolment recordings; a bad one stops with its one-line error."""
    extractor = Extractor(model.features)
    rows = []
    for path in files:
        try:
            rows.append(extractor(load_audio(path, model.features.sample_rate)))
        except SERError as exc:
            raise SERError(f"{exc} (an enrolment recording: fix it or leave it out)") from exc
    if not rows:
        raise SERError(
            "no enrolment recordings found (give audio files or directories with .wav/.flac/.aif/.ogg files)"
        )
    return np.stack(rows)


def enrol_files(model: QuantizedModel, files: Iterable[Path]) -> tuple[SpeakerStats, int]:
    """The speaker's statistics from audio files, and how many recordings they came from."""
    if not model.speaker_normalized:
        raise SERError(
            "the model was trained with global normalisation (data.normalize=global); it takes no speaker "
            "statistics, so there is nothing to enrol"
        )
    features = recording_features(model, files)
    return model.enrol(features), len(features)


def save(path: str | Path, stats: SpeakerStats, recordings: int, model: QuantizedModel) -> None:
    """Write the statistics atomically as JSON, with what is needed to refuse a mismatching model."""
    from ser.io import write_json

    write_json(
        path,
        {
            "format": FORMAT,
            "version": VERSION,
            "recordings": int(recordings),
            "count": float(stats.count),  # recordings + the prior's pseudo-recordings
            "prior_weight": float(model.prior_weight),
            "population": population_fingerprint(model),
            "features": model.features.to_dict(),
            # float32 values: Python's repr of each reads back to exactly the same float32.
            "mean": [float(v) for v in np.asarray(stats.mean, np.float32).ravel()],
            "std": [float(v) for v in np.asarray(stats.std, np.float32).ravel()],
        },
    )


def load(path: str | Path, model: QuantizedModel) -> SpeakerStats:
    """Statistics written by ``save``, checked against ``model``; raises ``SERError`` (one line) if they do not fit."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SERError(f"{path}: cannot read speaker file ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SERError(f"{path}: not a speaker file (expected JSON written by `ser enroll`)") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SERError(f"{path}: not a speaker file (expected JSON written by `ser enroll`)")
    if data.get("version") != VERSION:
        raise SERError(f"{path}: speaker file version {data.get('version')}, this ser reads version {VERSION}")
    if not model.speaker_normalized:
        raise SERError(
            "the model was trained with global normalisation (data.normalize=global) and takes no speaker "
            "statistics; drop --speaker"
        )
    try:
        features = FeatureConfig(**data["features"])
        mean, std = np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32)
        recordings, count = int(data["recordings"]), float(data["count"])
    except (KeyError, TypeError, ValueError, SERError) as exc:
        raise SERError(f"{path}: damaged speaker file ({type(exc).__name__}: {exc}); run `ser enroll` again") from exc
    if features != model.features:
        differ = sorted(k for k, v in features.to_dict().items() if model.features.to_dict().get(k) != v)
        raise SERError(
            f"{path}: enrolled for other feature settings than the model's (differ: {', '.join(differ)}); "
            "run `ser enroll` with this model"
        )
    if mean.size != model.mean.size or std.size != model.mean.size or not (np.isfinite(mean).all() and (std > 0).all()):
        raise SERError(
            f"{path}: damaged speaker file (expected {model.mean.size} finite means and positive stds); "
            "run `ser enroll` again"
        )
    # The file stores flat lists; a frame-sequence model keeps one statistic per channel, shaped (channels, 1).
    mean, std = mean.reshape(model.mean.shape), std.reshape(model.mean.shape)
    # Statistics that lean on the prior (shrinkage, or the population itself for < 2 recordings) belong to that model.
    if (data.get("prior_weight", 0.0) > 0 or recordings < 2) and data.get("population") != population_fingerprint(
        model
    ):
        raise SERError(
            f"{path}: enrolled with another model (its statistics are shrunk toward that model's training "
            "population); run `ser enroll` with this model"
        )
    return SpeakerStats(mean, std, count)


def main(argv: Sequence[str] | None = None) -> int:
    from ser.runtime.predict import audio_files

    parser = argparse.ArgumentParser(
        prog="ser enroll", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a .serq file of a speaker-normalised run, written by `ser export`")
    parser.add_argument("recordings", type=Path, nargs="+", help="audio files or directories of one speaker")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the speaker file to write (JSON)")
    args = parser.parse_args(argv)
    try:
        model = QuantizedModel.load(args.model)
        stats, n = enrol_files(model, audio_files(args.recordings))
        save(args.output, stats, n, model)
    except SERError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    note = ""
    if n < 2 and model.prior_weight <= 0:
        note = " (one recording has no spread: these are the training population's statistics; enrol 2 or more)"
    print(
        f"wrote {args.output}: statistics of {n} recording{'s' * (n != 1)}, prior weight {model.prior_weight:g}{note}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
