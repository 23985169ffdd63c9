"""Turn a training run into a deployable model: a bit-packed ``.serq`` file and/or ONNX.

The weights are quantized with the same quantizer and scales the LAQ callback evaluated, so
the exported model predicts exactly what the fake-quantized model in ``results.json`` did.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from ser.errors import SERError
from ser.models.mlp import MLP
from ser.quant.quantizer import QuantizerConfig, quantize, stored_bits
from ser.runtime import model_file
from ser.runtime.model_file import Section

MLP_TARGET = "ser.models.mlp.MLP"


@dataclass
class ExportSource:
    """A finished run: its config, fp32 weights and the bits of each layer."""

    run_dir: Path
    checkpoint: Path
    state: dict[str, torch.Tensor]
    classes: list[str]
    features: dict
    layer_names: list[str]
    bits: dict[str, int]
    quantizer: QuantizerConfig
    normalize: str = "global"  # "speaker": inputs are z-scored per speaker first (data.normalize=speaker)
    prior_weight: float = 0.0  # speaker only: pseudo-recordings of the population in a speaker's estimate

    @classmethod
    def load(cls, source: str | Path, bits: int | None = None) -> "ExportSource":
        source = Path(source)
        if source.is_file():
            run_dir, checkpoint = source.parent.parent, source
        else:
            run_dir, checkpoint = source, source / "checkpoints" / "best.ckpt"
        config_file = run_dir / ".hydra" / "config.yaml"
        if not checkpoint.is_file() or not config_file.is_file():
            raise SERError(f"{source}: not a training run (expected {checkpoint} and {config_file}); pass a run "
                           "directory written by train.py or its checkpoints/best.ckpt")
        cfg = OmegaConf.load(config_file)
        if cfg.model.net.get("_target_") != MLP_TARGET:
            raise SERError(f"{source}: export supports the MLP ({MLP_TARGET}); this run used {cfg.model.net.get('_target_')}")
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = ckpt["state_dict"]
        names = sorted({k[: -len(".weight")] for k in state if k.startswith("net.") and k.endswith(".weight")},
                       key=lambda n: int(n.split(".")[1]))
        quant = cfg.get("quant") or {}
        quantizer = QuantizerConfig(per_channel=bool(quant.get("per_channel", False)), mse_clip=bool(quant.get("mse_clip", False)))
        if bits is not None:
            allocation = {name: int(bits) for name in names}
        else:
            results_file = run_dir / "results.json"
            laq = json.loads(results_file.read_text()).get("laq") if results_file.exists() else None
            if not laq:
                raise SERError(f"{run_dir}: has no LAQ result (trained with quant=none or fixed?); pass --bits N for a fixed bit-width")
            allocation = {layer["name"]: int(layer["bits"]) for layer in laq["layers"]}
        if not 1 <= min(allocation.values()) <= max(allocation.values()) <= 8:
            raise SERError(f"bit-widths must be 1..8, got {sorted(set(allocation.values()))}")
        features = OmegaConf.to_container(cfg.data.features, resolve=True)
        hparams = ckpt["hyper_parameters"]
        normalize = hparams.get("normalize", "global")  # older checkpoints predate speaker normalisation
        if normalize not in ("global", "speaker"):
            raise SERError(f"{checkpoint}: normalisation {normalize!r} cannot be exported (global or speaker)")
        if normalize == "speaker" and not {"population_mean", "population_std"} <= state.keys():
            raise SERError(f"{checkpoint}: a speaker-normalised run without population_mean/population_std; train it again")
        return cls(run_dir, checkpoint, state, list(hparams["classes"]), features, names, allocation, quantizer,
                   normalize, float(hparams.get("speaker_prior_weight", 0.0)))

    def quantized(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize(self.state[f"{name}.weight"], self.bits[name], self.quantizer)


def codes(weight_q: torch.Tensor, scales: torch.Tensor, bits: int) -> np.ndarray:
    """Unsigned integer codes of an already quantized weight."""
    if bits == 1:
        return (weight_q > 0).to(torch.uint8).numpy()
    rows = scales.reshape(-1, *([1] * (weight_q.dim() - 1)))
    return (torch.round(weight_q / rows) + (2 ** (bits - 1) - 1)).to(torch.uint8).numpy()


def theoretical_bytes(source: ExportSource) -> float:
    """What the model must store: weights at their bits, float32 biases, scales and standardisation
    (and, for a speaker-normalised model, the population's statistics)."""
    total_bits = sum(
        stored_bits(source.state[f"{name}.weight"], source.state.get(f"{name}.bias"), source.bits[name], source.quantizer)
        for name in source.layer_names
    )
    statistics = 2 if source.normalize == "global" else 4  # standardisation (+ population for speaker models)
    return (total_bits + 32 * statistics * source.state["feature_mean"].numel()) / 8


def write_serq(source: ExportSource, path: str | Path) -> int:
    layers, sections = [], [Section("feature_mean", source.state["feature_mean"].numpy()),
                            Section("feature_std", source.state["feature_std"].numpy())]
    if source.normalize == "speaker":
        sections += [Section("population_mean", source.state["population_mean"].numpy()),
                     Section("population_std", source.state["population_std"].numpy())]
    for i, name in enumerate(source.layer_names):
        weight_q, scales = source.quantized(name)
        bits = source.bits[name]
        sections += [Section(f"{name}.scales", scales.numpy()), Section(f"{name}.codes", codes(weight_q, scales, bits), bits)]
        bias = source.state.get(f"{name}.bias")
        if bias is not None:
            sections.append(Section(f"{name}.bias", bias.numpy()))
        layers.append({"name": name, "shape": list(weight_q.shape), "bits": bits,
                       "activation": "relu" if i < len(source.layer_names) - 1 else "none"})
    header = {"classes": source.classes, "features": source.features, "layers": layers,
              "quantizer": {"per_channel": source.quantizer.per_channel}}
    if source.normalize == "speaker":  # global models keep the header they always had
        header["normalize"] = {"kind": "speaker", "prior_weight": source.prior_weight}
    return model_file.write(path, header, sections)


class _Deployed(nn.Module):
    """[Speaker z-score →] standardise → the run's MLP with dequantized weights → softmax, as one graph for ONNX.

    A speaker-normalised model takes the speaker's statistics as two more inputs, one row per
    feature row, so that raw features can never be fed to it by mistake.
    """

    def __init__(self, source: ExportSource):
        super().__init__()
        self.speaker = source.normalize == "speaker"
        self.register_buffer("mean", source.state["feature_mean"].clone())
        self.register_buffer("std", source.state["feature_std"].clone())
        state = {k[len("net."):]: v for k, v in source.state.items() if k.startswith("net.")}
        shapes = [state[f"{name[len('net.'):]}.weight"].shape for name in source.layer_names]
        self.net = MLP(shapes[0][1], shapes[-1][0], hidden=[out for out, _ in shapes[:-1]])
        for name in source.layer_names:
            state[f"{name[len('net.'):]}.weight"] = source.quantized(name)[0]
        self.net.load_state_dict(state)

    def forward(self, features: torch.Tensor, speaker_mean: torch.Tensor | None = None,
                speaker_std: torch.Tensor | None = None) -> torch.Tensor:
        if self.speaker:
            features = (features - speaker_mean) / speaker_std
        return torch.softmax(self.net((features - self.mean) / self.std), dim=1)


def onnx_inputs(source: ExportSource) -> list[str]:
    """The ONNX graph's inputs, each of shape (batch, features)."""
    return ["features", "speaker_mean", "speaker_std"] if source.normalize == "speaker" else ["features"]


def write_onnx(source: ExportSource, path: str | Path) -> None:
    import logging
    import warnings

    from ser.io import atomic_path

    # The exporter logs a warning per torchvision operator it cannot register; we use none.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    # Speaker models: all three inputs share the batch axis, which the exporter remarks on.
    warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used")
    model = _Deployed(source).eval()
    names = onnx_inputs(source)
    dim = source.state["feature_mean"].numel()
    dummy = tuple((torch.ones if name == "speaker_std" else torch.zeros)(2, dim) for name in names)
    batch = torch.export.Dim("batch")
    with atomic_path(path) as tmp:
        torch.onnx.export(model, dummy, str(tmp), input_names=names, output_names=["probabilities"],
                          dynamic_shapes=tuple({0: batch} for _ in names), external_data=False, verbose=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ser export", description="Export a trained run as a bit-packed .serq file and/or ONNX.")
    parser.add_argument("source", type=Path, help="run directory written by train.py, or its checkpoints/best.ckpt")
    parser.add_argument("-o", "--output", type=Path, help="the .serq file to write")
    parser.add_argument("--onnx", type=Path, help="also (or only) write an ONNX model: features in (and, for a speaker-normalised run, "
                        "the speaker's mean and std), probabilities out")
    parser.add_argument("--bits", type=int, help="fixed bit-width for every layer instead of the run's LAQ allocation")
    args = parser.parse_args(argv)
    if args.output is None and args.onnx is None:
        parser.error("give -o model.serq and/or --onnx model.onnx")
    try:
        source = ExportSource.load(args.source, args.bits)
        if args.output is not None:
            size = write_serq(source, args.output)
            print(f"wrote {args.output}: {size} bytes ({size / 1000:.1f} KB; weights, biases, scales and "
                  f"standardisation need {theoretical_bytes(source) / 1000:.1f} KB); bits {source.bits}")
        if args.onnx is not None:
            write_onnx(source, args.onnx)
            print(f"wrote {args.onnx}")
    except SERError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
