"""An ``ExportSource`` as a ``.serq`` model: the typed contents (``to_serq``), the file, and its size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ser.dsp import storage
from ser.export.source import ExportSource
from ser.runtime.serq import STATISTICS, LayerSpec, SerqHeader, SerqModel


def to_serq(source: ExportSource) -> SerqModel:
    """The ``.serq`` model of ``source``, in memory: header and values in the file's section order (statistics,
    then each layer's scales, codes and, for the MLP, bias, then a graph's per-channel arrays)."""
    graph = source.graph
    last = len(source.layers) - 1
    specs = [
        LayerSpec(
            layer.name,
            layer.shape,
            layer.bits,
            layer.grid,
            None if graph is not None else ("relu" if i < last else "none"),
        )
        for i, layer in enumerate(source.layers.values())
    ]
    header = SerqHeader(
        list(source.classes),
        source.features,
        specs,
        source.quantizer.per_channel,
        None if graph is None else graph.spec,
        source.normalize,
        source.prior_weight,
    )
    arrays = {}
    for mean, std in STATISTICS[: 2 if source.normalize == "speaker" else 1]:
        arrays[mean], arrays[std] = (source.state[name].float().numpy() for name in (mean, std))
    for layer in source.layers.values():
        arrays[f"{layer.name}.scales"], arrays[f"{layer.name}.codes"] = layer.scales, layer.codes
        if graph is None and layer.bias is not None:  # a graph's biases and batch norm live in its arrays
            arrays[f"{layer.name}.bias"] = np.asarray(layer.bias, dtype=np.float32)
    if graph is not None:
        arrays.update(graph.arrays)
    return SerqModel(header, arrays, source.quantizer.bias_bits, source.quantizer.stats_bits)


def write_serq(source: ExportSource, path: str | Path) -> int:
    """Write ``source`` as a ``.serq`` file; returns its size in bytes."""
    return to_serq(source).write(path)


def theoretical_bytes(source: ExportSource) -> float:
    """What the model must store (``ser.dsp.storage``'s size rule): weights at their bits, biases at ``bias_bits``,
    scales, and the standardisation at ``stats_bits`` (and, for a speaker-normalised model, the population's
    statistics at 32). A graph's conv biases are folded into its float32 per-channel arrays."""
    if source.graph is None:
        total = sum(
            storage.layer_bits(
                l.codes.size, l.bits, l.scales.size, None if l.bias is None else l.bias.size, l.bias_bits
            )
            for l in source.layers.values()
        )
    else:
        total = sum(storage.layer_bits(l.codes.size, l.bits, l.scales.size) for l in source.layers.values())
        total += storage.FLOAT_BITS * sum(a.size for a in source.graph.arrays.values())
    dim = source.state["feature_mean"].numel()
    population = dim * 2 if source.normalize == "speaker" else 0
    return (total + storage.statistics_bits(2 * dim, population, source.quantizer.stats_bits)) / 8
