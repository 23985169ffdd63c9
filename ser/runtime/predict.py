"""``ser predict model.serq a.wav dir/ …``: one JSON line per audio file, numpy only.

Directories are walked for audio files; a file that cannot be used gets an error line and
the others go on. The exit status is 1 if any file failed, so scripts can notice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ser.data.audio import load_audio
from ser.errors import SERError
from ser.runtime.features import Extractor
from ser.runtime.model import QuantizedModel

AUDIO_SUFFIXES = {".wav", ".flac", ".aif", ".aiff", ".ogg"}


def audio_files(inputs: Iterable[Path]) -> Iterator[Path]:
    for path in inputs:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield path


def predict(model: QuantizedModel, files: Iterable[Path]) -> Iterator[dict]:
    extractor = Extractor(model.features)
    for path in files:
        start = time.perf_counter()
        try:
            features = extractor(load_audio(path, model.features.sample_rate))
        except SERError as exc:
            yield {"file": str(path), "error": str(exc)}
            continue
        probabilities = model.probabilities(features)[0]
        best = int(probabilities.argmax())
        yield {
            "file": str(path),
            "emotion": model.classes[best],
            "probabilities": {c: round(float(p), 6) for c, p in zip(model.classes, probabilities)},
            "time_ms": round(1000 * (time.perf_counter() - start), 3),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ser predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a .serq file written by `ser export`")
    parser.add_argument("inputs", type=Path, nargs="+", help="audio files or directories")
    args = parser.parse_args(argv)
    try:
        model = QuantizedModel.load(args.model)
    except SERError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for line in predict(model, audio_files(args.inputs)):
        failed += "error" in line
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
