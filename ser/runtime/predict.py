"""``ser predict model.serq a.wav dir/ …``: one JSON line per audio file, numpy only.

Directories are walked for audio files; a file that cannot be used (missing, empty, cut
short, not audio) gets an error line and the others go on. The exit status is 1 if any file
failed, so scripts can notice, and 2 with a one-line error if the inputs hold no audio at all.

A model trained with ``data.normalize=speaker`` needs the speaker's statistics, from one of
``--speaker speaker.json`` (written by ``ser enroll``), ``--enroll FILES`` (the same, computed
on the fly) or ``--adapt`` (a running estimate over the inputs in the order given: each file
updates it, then is predicted with it). All inputs are then taken to be of that one speaker.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ser.dsp.audio import AUDIO_SUFFIXES, load_audio
from ser.dsp.speaker_norm import SpeakerStats
from ser.errors import SERError
from ser.runtime import enroll
from ser.runtime.features import Extractor
from ser.runtime.model import QuantizedModel

SPEAKER_OPTIONS = "--speaker speaker.json (from `ser enroll`), --enroll FILES (recordings of the speaker) or --adapt"


def audio_files(inputs: Iterable[Path]) -> Iterator[Path]:
    for path in inputs:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield path


def predict(
    model: QuantizedModel, files: Iterable[Path], speaker: SpeakerStats | None = None, adapt: bool = False
) -> Iterator[dict]:
    """One result per file. ``speaker``: fixed statistics; ``adapt``: a running estimate over ``files``.

    With ``adapt`` each usable file first updates the estimate and is then predicted with it,
    and its line says how many recordings the estimate holds (``speaker_recordings``).
    """
    if adapt and speaker is not None:
        raise ValueError("give either fixed speaker statistics or adapt, not both")
    model.check_speaker(speaker if not adapt else model.population)
    running = model.running() if adapt else None
    extractor = Extractor(model.features)
    seen = 0
    for path in files:
        start = time.perf_counter()
        try:
            features = extractor(load_audio(path, model.features.sample_rate))
        except SERError as exc:
            yield {"file": str(path), "error": str(exc)}
            continue
        if running is not None:
            speaker, seen = running.update(features), seen + 1
        probabilities = model.probabilities(features, speaker)[0]
        best = int(probabilities.argmax())
        yield {
            "file": str(path),
            "emotion": model.classes[best],
            "probabilities": {c: round(float(p), 6) for c, p in zip(model.classes, probabilities)},
            "time_ms": round(1000 * (time.perf_counter() - start), 3),
            **({"speaker_recordings": seen} if running is not None else {}),
        }


def _speaker(model: QuantizedModel, args: argparse.Namespace) -> SpeakerStats | None:
    """The fixed statistics the options ask for; refuses a combination that does not fit the model."""
    given = args.speaker is not None or args.enroll is not None or args.adapt
    if model.speaker_normalized and not given:
        raise SERError(
            f"{args.model}: trained with speaker normalisation (data.normalize=speaker); pass {SPEAKER_OPTIONS}"
        )
    if not model.speaker_normalized and given:
        option = "--speaker" if args.speaker is not None else "--enroll" if args.enroll is not None else "--adapt"
        raise SERError(
            f"{args.model}: trained with global normalisation (data.normalize=global) and takes no speaker "
            f"statistics; drop {option}"
        )
    if args.speaker is not None:
        return enroll.load(args.speaker, model)
    if args.enroll is not None:
        return enroll.enrol_files(model, audio_files(args.enroll))[0]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ser predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a .serq file written by `ser export`")
    parser.add_argument("inputs", type=Path, nargs="+", help="audio files or directories")
    speaker = parser.add_mutually_exclusive_group()
    speaker.add_argument(
        "--speaker",
        type=Path,
        metavar="SPEAKER.json",
        help="speaker statistics written by `ser enroll` (speaker-normalised models)",
    )
    speaker.add_argument(
        "--enroll",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="recordings (files or directories) of the speaker to compute the statistics from; "
        "put it after the inputs, or end its list with --",
    )
    speaker.add_argument(
        "--adapt",
        action="store_true",
        help="a running estimate of the speaker's statistics over the inputs, in the order given",
    )
    args = parser.parse_args(argv)
    try:
        model = QuantizedModel.load(args.model)
        stats = _speaker(model, args)
    except SERError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = list(audio_files(args.inputs))
    if not files:
        suffixes = " ".join(sorted(AUDIO_SUFFIXES))
        print(f"error: no audio files ({suffixes}) in {', '.join(str(p) for p in args.inputs)}", file=sys.stderr)
        return 2
    failed = 0
    for line in predict(model, files, stats, args.adapt):
        failed += "error" in line
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
