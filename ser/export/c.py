"""An ``ExportSource`` as a C library (``ser.runtime.c_export``), generated from its ``.serq`` model in memory."""

from __future__ import annotations

from pathlib import Path

from ser.errors import SERError
from ser.export.serq import to_serq
from ser.export.source import ExportSource


def write_c(source: ExportSource, out_dir: str | Path, window_s: float = 2.0, hop_s: float = 0.5) -> dict:
    """The C library of the model: generated from the same typed ``.serq`` model the file writer writes, so that
    the C constants are exactly the file's; streaming windows as ``ser listen``'s. The MLP only."""
    from ser.runtime import c_export

    if source.graph is not None:
        raise SERError(
            f"the C runtime runs the MLP only, this model is {source.network.rsplit('.', 1)[-1]}; "
            "export it with -o model.serq (numpy runtime) or --onnx"
        )
    return c_export.generate(to_serq(source), out_dir, window_s=window_s, hop_s=hop_s)
