"""The ``ser`` command: ``ser report <multirun dir>`` (training itself is ``python train.py``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ser import report

COMMANDS = {"report": report.main}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="ser", description="ser: speech emotion recognition with LAQ")
    parser.add_argument("command", choices=sorted(COMMANDS), help="report: aggregate a multirun directory")
    args, rest = parser.parse_known_args(argv[:1])
    return COMMANDS[args.command](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
