"""What an export writes from: a model's quantized layers, its statistics and its metadata (``ExportSource``).

A source is built in memory from a typed artifact (``ExportSource.from_artifact``: the LAQ
callback's ``QuantizedArtifact`` and, for a graph network, the network itself) or from a run
directory (``ExportSource.load``, ``ser.export.run``). Either way ``ExportSource.assemble``
makes it: it checks the statistics are stored as the quantizer says, checks the normalisation,
and turns a network other than the MLP into a graph of operations (``ser.export.graph``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ser.dsp.feature_config import FeatureConfig
from ser.errors import SERError
from ser.export.graph import ExportGraph, lightsernet_graph
from ser.export.layer import ExportLayer
from ser.quant.artifact import FILENAME, ArtifactMetadata, QuantizedArtifact
from ser.quant.quantizer import QuantizerConfig, quantizable_layers, store_statistics

MLP_TARGET = "ser.models.mlp.MLP"
LIGHTSERNET_TARGET = "ser.models.lightsernet.LightSERNet"
TARGETS = (MLP_TARGET, LIGHTSERNET_TARGET)


@dataclass
class ExportSource:
    """A quantized model, ready to export: its metadata, statistics and quantized layers.

    ``origin`` says where the layers come from: ``"quantized.pt"`` (the LAQ artifact) or
    ``"checkpoint"`` (quantized by export from the checkpoint's weights).
    """

    run_dir: Path | None  # None: built in memory
    checkpoint: Path | None
    state: dict[str, torch.Tensor]  # the model's state: statistics (feature_*, population_*) and net.*
    classes: list[str]
    features: FeatureConfig
    layers: dict[str, ExportLayer]  # in network order
    quantizer: QuantizerConfig
    normalize: str = "global"  # "speaker": inputs are z-scored per speaker first (data.normalize=speaker)
    prior_weight: float = 0.0  # speaker only: pseudo-recordings of the population in a speaker's estimate
    origin: str = "checkpoint"
    graph: ExportGraph | None = None  # None: the MLP of ``layers``
    network: str = MLP_TARGET

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    @property
    def bits(self) -> dict[str, int]:
        return {name: layer.bits for name, layer in self.layers.items()}

    @classmethod
    def load(cls, source: str | Path, bits: int | None = None) -> ExportSource:
        """A run directory written by train.py (or its checkpoints/best.ckpt): its LAQ artifact, or with ``bits``
        its best checkpoint quantized at that width (``ser.export.run``)."""
        from ser.export.run import load_run

        return load_run(source, bits)

    @classmethod
    def from_artifact(cls, artifact: QuantizedArtifact, net: nn.Module | None = None) -> ExportSource:
        """The artifact's LAQ model, from memory: its metadata says the rest. A graph network (Light-SERNet) needs
        ``net``, the network holding the artifact's state (the MLP is read from the state alone)."""
        metadata = artifact.metadata
        if metadata is None or metadata.features is None:
            raise SERError(
                "the quantized model has no metadata (classes, feature settings); save it with the LAQ "
                "callback after fit"
            )
        if metadata.network not in TARGETS:
            raise SERError(
                f"export supports the MLP ({MLP_TARGET}) and Light-SERNet ({LIGHTSERNET_TARGET}); this "
                f"model is {metadata.network}"
            )
        if metadata.network != MLP_TARGET and net is None:
            raise SERError(f"a {metadata.network.rsplit('.', 1)[-1]} exports from its network: pass net")
        names = layer_names(artifact.state_dict, None if metadata.network == MLP_TARGET else net)
        return cls.assemble(
            artifact_layers(artifact, names, FILENAME),
            artifact.state_dict,
            metadata,
            artifact.quantizer,
            net,
            origin=FILENAME,
            stored=True,
        )

    @classmethod
    def assemble(
        cls,
        layers: dict[str, ExportLayer],
        state: dict[str, torch.Tensor],
        metadata: ArtifactMetadata,
        quantizer: QuantizerConfig,
        net: nn.Module | None = None,
        *,
        origin: str,
        stored: bool,
        run_dir: Path | None = None,
        checkpoint: Path | None = None,
    ) -> ExportSource:
        """The source of quantized ``layers`` and ``state``: its statistics as the file stores them (``stored``:
        they must be so already, as the quantizer scored them; else rounded here), and for a graph network
        (``net`` given) its ops."""
        where = run_dir if run_dir is not None else "the quantized model"
        if metadata.normalize not in ("global", "speaker"):
            raise SERError(f"{where}: normalisation {metadata.normalize!r} cannot be exported (global or speaker)")
        if metadata.normalize == "speaker" and not {"population_mean", "population_std"} <= state.keys():
            raise SERError(f"{where}: a speaker-normalised run without population_mean/population_std; train it again")
        state = _stored_statistics(state, quantizer, run_dir, stored)
        graph = None if net is None else lightsernet_graph(net, layers, metadata.features)
        return cls(
            run_dir,
            checkpoint,
            state,
            list(metadata.classes),
            metadata.features,
            layers,
            quantizer,
            metadata.normalize,
            float(metadata.speaker_prior_weight),
            origin,
            graph,
            MLP_TARGET if net is None else metadata.network,
        )


def layer_names(state: dict[str, torch.Tensor], net: nn.Module | None) -> list[str]:
    """The quantized layers in network order: the MLP's ``net.<i>`` of ``state``, else ``net``'s Linear/Conv layers."""
    if net is not None:
        return [f"net.{name}" for name in quantizable_layers(net)]
    return sorted(
        {k[: -len(".weight")] for k in state if k.startswith("net.") and k.endswith(".weight")},
        key=lambda n: int(n.split(".")[1]),
    )


def artifact_layers(artifact: QuantizedArtifact, names: list[str], where) -> dict[str, ExportLayer]:
    """The artifact's layers in network order, after checking them against the network (``validate``)."""
    artifact.validate(names, where)
    layers = {}
    for name in names:
        layer = artifact.layers[name]
        layers[name] = ExportLayer(
            name,
            layer.bits,
            layer.grid,
            layer.codes.numpy(),
            layer.scales.float().numpy().reshape(-1),
            None if layer.bias is None else layer.bias.float().numpy(),
            artifact.quantizer.bias_bits,
        )
    return layers


def _stored_statistics(
    state: dict[str, torch.Tensor], config: QuantizerConfig, run_dir: Path | None, stored: bool
) -> dict[str, torch.Tensor]:
    """``state`` with its statistics as the file stores them (``stats_bits``): the rounding the fixed-width
    rows measured, for a ``--bits`` export of the checkpoint; a LAQ artifact's (``stored``) must be so
    already, as the quantizer scored them."""
    try:
        out = store_statistics(state, config)
    except SERError as exc:
        raise SERError(f"{run_dir or 'the quantized model'}: {exc}") from None
    changed = [k for k in out if out[k] is not state[k] and not torch.equal(out[k], state[k])]
    if stored and changed:
        raise SERError(
            f"{FILENAME if run_dir is None else run_dir / FILENAME}: its {'/'.join(changed)} are not stored at {config.stats_bits} bits as "
            "its quantizer says; train the run again"
        )
    return out
