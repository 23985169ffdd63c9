"""The ``ser`` command. Training itself is ``python train.py``; this runs what comes after it.

ser report <multirun dir>               aggregate a sweep (summary.md/csv, plots)
ser export <run dir> -o m.serq          bit-packed quantized model (and --onnx m.onnx)
ser enroll m.serq rec.wav … -o s.json   a speaker's statistics, for speaker-normalised models
ser predict m.serq a.wav dir/ …         emotions as JSON lines (numpy + soundfile only);
                                        speaker-normalised models also take one of
                                        --speaker s.json | --enroll FILES | --adapt
ser listen m.serq [-|a.wav]             live: a JSON line per sliding window (16-bit PCM on stdin)
ser cache [--clear]                     where the feature cache is and its size, or clear it
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# Imported on demand: `ser predict` must run on a device without torch or matplotlib.
COMMANDS = {
    "report": "ser.report",
    "export": "ser.export",
    "predict": "ser.runtime.predict",
    "enroll": "ser.runtime.enroll",
    "cache": "ser.data.cache",
    "listen": "ser.runtime.listen",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        asked = not argv or argv[0] in ("-h", "--help")
        print(__doc__.strip(), file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
