"""An ``ExportSource`` from a run directory written by train.py.

Without ``bits`` the source is the run's LAQ model exactly as the callback evaluated and saved
it (``<run>/quantized.pt``, ``ser.quant.artifact``): codes copied, never recomputed from float
weights. ``bits`` quantizes the best checkpoint at one width for every layer with the run's
quantizer settings (the artifact's, else the ``quant`` section of ``.hydra/config.yaml``). Runs
without an artifact (``quant=none``/``fixed``, or runs from before it) fall back to that path
with results.json's LAQ allocation, unless their LAQ model was recovered or bias-corrected (then
only ``quantized.pt`` holds it, and export refuses to guess).

The artifact's own metadata (classes, feature settings, normalisation) describes it; a run whose
artifact lacks it, or that has none, is described by its checkpoint and config.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from ser.dsp import storage
from ser.dsp.feature_config import FeatureConfig
from ser.errors import SERError
from ser.export.layer import ExportLayer
from ser.export.source import (
    LIGHTSERNET_TARGET,
    MLP_TARGET,
    TARGETS,
    ExportSource,
    artifact_layers,
    layer_names,
)
from ser.quant.artifact import (
    FILENAME,
    ArtifactMetadata,
    QuantizedArtifact,
    check_bits,
    quantizer_config,
)
from ser.quant.quantizer import QuantizerConfig, quantize_tensor
from ser.results import FILENAME as RESULTS
from ser.results import RunResults

log = logging.getLogger(__name__)


def load_run(source: str | Path, bits: int | None = None) -> ExportSource:
    source = Path(source)
    if source.is_file():
        run_dir, checkpoint = source.parent.parent, source
    else:
        run_dir, checkpoint = source, source / "checkpoints" / "best.ckpt"
    if bits is not None:
        check_bits(bits, "--bits")
    config_file = run_dir / ".hydra" / "config.yaml"
    results = RunResults.load(run_dir / RESULTS) if (run_dir / RESULTS).is_file() else None
    artifact = QuantizedArtifact.load(run_dir / FILENAME)
    use_artifact = artifact is not None and bits is None
    if use_artifact and source.is_file() and not _is_best(checkpoint, run_dir, results):
        raise SERError(
            f"{source}: the run's LAQ model ({run_dir / FILENAME}) is quantized from its best checkpoint; "
            "pass the run directory, or --bits N to quantize this checkpoint"
        )
    metadata = artifact.metadata if artifact is not None else None
    standalone = use_artifact and metadata is not None and bool(metadata.net_config)  # quantized.pt describes itself
    if not standalone and (not config_file.is_file() or not (checkpoint.is_file() or use_artifact)):
        raise SERError(
            f"{source}: not a training run (expected {checkpoint} and {config_file}); pass a run "
            "directory written by train.py or its checkpoints/best.ckpt"
        )
    cfg = OmegaConf.load(config_file) if config_file.is_file() else _config_of(artifact)
    target = cfg.model.net.get("_target_")
    if target not in TARGETS:
        raise SERError(
            f"{source}: export supports the MLP ({MLP_TARGET}) and Light-SERNet ({LIGHTSERNET_TARGET}); "
            f"this run used {target}"
        )

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True) if checkpoint.is_file() else None
    state = artifact.state_dict if use_artifact else ckpt["state_dict"]
    if not (use_artifact and metadata is not None and metadata.features is not None):
        metadata = _run_metadata(ckpt, checkpoint, state, results, cfg, run_dir, target)
    net = None if target == MLP_TARGET else _network(cfg, metadata, state, run_dir)
    names = layer_names(state, net)
    if artifact is not None:
        quantizer = artifact.quantizer
    else:
        quantizer = quantizer_config(
            OmegaConf.to_container(cfg.quant, resolve=False) if cfg.get("quant") else {},
            run_dir / ".hydra" / "config.yaml",
        )

    if use_artifact:
        layers = artifact_layers(artifact, names, run_dir / FILENAME)
        laq = results.laq if results is not None else None
        if laq and laq.bits != {n: l.bits for n, l in layers.items()}:
            raise SERError(
                f"{run_dir}: {FILENAME} and results.json disagree on the LAQ bits; the run is "
                "inconsistent, train it again"
            )
    else:
        allocation = _allocation(run_dir, results, names, bits)
        if bits is not None and artifact is not None and artifact.quantizer.bias_correction:
            log.warning(
                "%s: the run's quantizer corrects biases with training statistics; a --bits export keeps "
                "the checkpoint's biases",
                run_dir,
            )
        layers = {name: _quantize(name, state, allocation[name], quantizer) for name in names}
    return ExportSource.assemble(
        layers,
        state,
        metadata,
        quantizer,
        net,
        origin=FILENAME if use_artifact else "checkpoint",
        stored=use_artifact,
        run_dir=run_dir,
        checkpoint=checkpoint if checkpoint.is_file() else None,
    )


def _allocation(run_dir: Path, results: RunResults | None, names: list[str], bits: int | None) -> dict[str, int]:
    """Every layer at ``bits``, else results.json's LAQ bits (for a run without an artifact)."""
    if bits is not None:
        return {name: int(bits) for name in names}
    laq = results.laq if results is not None else None
    if not laq:
        raise SERError(
            f"{run_dir}: has no LAQ result (trained with quant=none or fixed?); pass --bits N for a fixed bit-width"
        )
    if laq.recovery or (laq.quantizer is not None and laq.quantizer.bias_correction):
        raise SERError(
            f"{run_dir}: the LAQ model was fine-tuned (recovery) or bias-corrected after "
            f"quantization and only {FILENAME} holds it, which is missing or from an older ser; "
            "train the run again, or pass --bits N for a fixed bit-width"
        )
    if set(laq.bits) != set(names):
        raise SERError(f"{run_dir}: results.json's LAQ layers {sorted(laq.bits)} are not the network's {names}")
    return {name: check_bits(int(b), f"{run_dir}: results.json's LAQ layer {name}") for name, b in laq.bits.items()}


def _is_best(checkpoint: Path, run_dir: Path, results: RunResults | None) -> bool:
    best = [run_dir / "checkpoints" / "best.ckpt"]
    if results is not None and results.best_checkpoint:
        best.append(Path(results.best_checkpoint))
    return any(b.is_file() and b.resolve() == checkpoint.resolve() for b in best)


def _network(cfg, metadata: ArtifactMetadata, state: dict[str, torch.Tensor], run_dir: Path) -> nn.Module:
    """The run's network (``model.net`` of its config) holding ``state``'s weights, in eval mode."""
    import hydra

    n_features = metadata.n_features or list(metadata.features.shape)
    try:
        net = hydra.utils.instantiate(cfg.model.net)(n_features, len(metadata.classes))
        net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    except (RuntimeError, TypeError, ValueError, SERError) as exc:
        raise SERError(
            f"{run_dir}: the network of its config does not hold its weights "
            f"({str(exc).splitlines()[0]}); train the run again"
        ) from exc
    return net.eval()


def _config_of(artifact: QuantizedArtifact):
    """The parts of a run's config that export reads, from a self-describing quantized.pt."""
    metadata = artifact.metadata
    return OmegaConf.create(
        {
            "model": {"net": metadata.net_config},
            "data": {"features": metadata.features.to_dict(), "speaker_prior_weight": metadata.speaker_prior_weight},
        }
    )


def _run_metadata(
    ckpt: dict | None,
    checkpoint: Path,
    state: dict[str, torch.Tensor],
    results: RunResults | None,
    cfg,
    run_dir: Path,
    target: str,
) -> ArtifactMetadata:
    """Classes, normalisation and prior weight of a run without a self-describing artifact: the checkpoint's
    hyper-parameters, else results.json, the state's statistics and the config; features from the config."""
    if ckpt is not None:
        hparams = ckpt["hyper_parameters"]
        classes = list(hparams["classes"])
        normalize = hparams.get("normalize", "global")  # older checkpoints predate speaker normalisation
        prior_weight = float(hparams.get("speaker_prior_weight", 0.0))
        n_features = hparams.get("n_features")
    else:
        if results is None:
            raise SERError(f"{run_dir}: neither {checkpoint} nor results.json to read the class names from")
        classes = list(results.classes)
        normalize = "speaker" if "population_mean" in state else "global"
        prior_weight = float(cfg.data.get("speaker_prior_weight", 0.0) or 0.0)
        n_features = None
    features = FeatureConfig(**OmegaConf.to_container(cfg.data.features, resolve=True))
    return ArtifactMetadata(classes, n_features, normalize, prior_weight, features, target)


def _quantize(name: str, state: dict[str, torch.Tensor], bits: int, config: QuantizerConfig) -> ExportLayer:
    t = quantize_tensor(state[f"{name}.weight"].float(), bits, config)
    bias = state.get(f"{name}.bias")
    return ExportLayer(
        name,
        bits,
        t.grid,
        t.codes.numpy().astype(np.uint8),
        t.scales.float().numpy(),
        None if bias is None else storage.round_bias(bias.double().numpy(), config.bias_bits),
        config.bias_bits,
    )
