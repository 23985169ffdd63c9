"""``ser export``: a run directory (or its best checkpoint) to a ``.serq`` file, ONNX and/or a C library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ser.errors import SERError
from ser.export.c import write_c
from ser.export.onnx_model import write_onnx
from ser.export.serq import theoretical_bytes, write_serq
from ser.export.source import ExportSource


def _grids(source: ExportSource) -> str:
    names = sorted({layer.grid for layer in source.layers.values()})
    return names[0] if len(names) == 1 else "/".join(names)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ser export", description="Export a trained run as a bit-packed .serq file and/or ONNX."
    )
    parser.add_argument("source", type=Path, help="run directory written by train.py, or its checkpoints/best.ckpt")
    parser.add_argument("-o", "--output", type=Path, help="the .serq file to write")
    parser.add_argument(
        "--onnx",
        type=Path,
        help="also (or only) write an ONNX model: features in (and, for a speaker-normalised run, "
        "the speaker's mean and std), probabilities out",
    )
    parser.add_argument("--bits", type=int, help="fixed bit-width for every layer instead of the run's LAQ allocation")
    parser.add_argument(
        "--c",
        type=Path,
        metavar="DIR",
        dest="c_dir",
        help="also (or only) write a self-contained C99 library of the model (ser_predict, no heap, "
        "libm only) and its CLI into DIR (docs/deploying.md)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=2.0,
        help="with --c: seconds per decision of the streaming API, as `ser listen --window` (default 2)",
    )
    parser.add_argument(
        "--hop",
        type=float,
        default=0.5,
        help="with --c: seconds between decisions, rounded to whole feature frames as `ser listen --hop` (default 0.5)",
    )
    args = parser.parse_args(argv)
    if args.output is None and args.onnx is None and args.c_dir is None:
        parser.error("give -o model.serq, --onnx model.onnx and/or --c DIR")
    if args.window <= 0 or args.hop <= 0:
        parser.error("--window and --hop must be positive")
    try:
        source = ExportSource.load(args.source, args.bits)
        if args.c_dir is not None and source.graph is not None:
            raise SERError(
                f"{args.source}: the C runtime runs the MLP only, this run is {source.network.rsplit('.', 1)[-1]}; "
                "export it with -o model.serq (numpy runtime) or --onnx"
            )
        if args.output is not None:
            size = write_serq(source, args.output)
            print(
                f"wrote {args.output}: {size} bytes ({size / 1000:.1f} KB; weights, biases, scales and "
                f"standardisation need {theoretical_bytes(source) / 1000:.1f} KB); bits {source.bits}, "
                f"grid {_grids(source)}, from {source.origin}"
            )
        if args.onnx is not None:
            write_onnx(source, args.onnx)
            print(f"wrote {args.onnx}")
        if args.c_dir is not None:
            summary = write_c(source, args.c_dir, args.window, args.hop)
            print(
                f"wrote {args.c_dir}/: the C library (ser.h, ser.c, ser_model.[ch]) and its CLI (main.c; make)"
                + (
                    f"; streaming, a decision every {summary['hop']} samples over {summary['window']}, and a project for "
                    "the B-L475E-IOT01A board (stm32l4/)"
                    if summary["streaming"]
                    else "; whole clips only (dB floors below each clip's peak: data.features.db_floor=peak)"
                )
            )
    except SERError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
