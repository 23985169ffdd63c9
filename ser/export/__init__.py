"""Turn a quantized model into a deployable one: a bit-packed ``.serq`` file, ONNX and/or a C library.

Without ``--bits`` the exported model is the run's LAQ model exactly as the callback evaluated
and saved it (``quantized.pt``, ``ser.quant.artifact``): each layer's bits, grid, integer codes,
scales and shipped bias, and the rest of the state. Codes are copied, never recomputed from
float weights, and every weight the ``.serq`` file, the ONNX graph and the C library hold is
``ser.dsp.grid.dequantize`` of them, so the deployed model predicts what ``results.json``'s
``laq`` row measured.

One module per job:

* ``source``: ``ExportSource``, what every writer reads; built in memory from a typed artifact
  (``ExportSource.from_artifact``) or from a run directory (``ExportSource.load``, ``run``);
* ``run``: reading a run directory (its artifact, or its checkpoint quantized at ``--bits``);
* ``layer``: one quantized layer as shipped (``ExportLayer``);
* ``fold`` and ``graph``: batch norm folding and a network other than the MLP (Light-SERNet) as
  ``ser.runtime.graph`` operations;
* ``serq``: the typed ``.serq`` model of a source (``to_serq``), the file, and its theoretical size;
* ``onnx_model``: the same model in torch for ONNX (the graph's ops from ``ser.runtime.graph``);
* ``c``: the C library (``ser.runtime.c_export``), from the same typed ``.serq`` model;
* ``cli``: ``ser export``.
"""

from ser.export.c import write_c
from ser.export.cli import main
from ser.export.graph import ExportGraph
from ser.export.layer import ExportLayer
from ser.export.onnx_model import Deployed, onnx_inputs, write_onnx
from ser.export.serq import theoretical_bytes, to_serq, write_serq
from ser.export.source import LIGHTSERNET_TARGET, MLP_TARGET, TARGETS, ExportSource

__all__ = [
    "LIGHTSERNET_TARGET",
    "MLP_TARGET",
    "TARGETS",
    "Deployed",
    "ExportGraph",
    "ExportLayer",
    "ExportSource",
    "main",
    "onnx_inputs",
    "theoretical_bytes",
    "to_serq",
    "write_c",
    "write_onnx",
    "write_serq",
]
