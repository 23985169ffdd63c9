"""Quantize the best checkpoint after training: the Lightning side of ``ser.quant.workflows``.

The callback takes one config per step (``ser.quant.config``), and at the end of ``fit`` loads
the best checkpoint into a copy of the model, calls the steps (fixed-width sweep, LAQ search,
recovery, legacy QAT, sensitivity greedy), logs them to TensorBoard and saves the LAQ model as
``quantized.pt``. It works with any ``LightningModule`` whose Linear/Conv layers are the ones to
quantize and any ``LightningDataModule`` with train/val/test loaders (docs/quantization-api.md).
Pipeline of the LAQ model (``quant=laq_paper`` switches every addition off):

1. quantizer (``quant.quantizer``): grid, scale rule, per-channel scales, bias correction, and
   how biases and statistics are stored (``quantizer.py``);
2. importance (Eq. 1–4) and the importance-ordered search (Eq. 5, ``quant.search``) with a
   score that mixes validation accuracy with agreement with the full-precision model on
   training + validation utterances (``fidelity_weight``), the fallback rule, or a size budget
   (``target_kb``, ``target_bits``);
3. recovery (``quant.recovery``): a few epochs of quantization-aware training distilled from the
   full-precision model; the recovered model IS the LAQ model (results.json's ``laq`` row,
   ``quantized.pt``); the numbers before recovery stay in ``laq.before_recovery``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from ser.quant import workflows
from ser.quant.artifact import FILENAME, ArtifactLayer, ArtifactMetadata, QuantizedArtifact
from ser.quant.config import (
    DEFAULTS,
    LAQConfig,
    QATConfig,
    QuantizationConfig,
    QuantizerConfig,
    RecoveryConfig,
    with_flat,
)
from ser.quant.evaluation import SplitTensors
from ser.quant.quantizer import QuantizedTensor
from ser.quant.workflows import Session
from ser.results import LAQ, Quantization


def _metadata(module: nn.Module, datamodule: Any, net_config: dict[str, Any] | None) -> ArtifactMetadata:
    """What a deployment needs besides the weights, so the artifact stands alone (no results.json,
    no .hydra/): class names, input shape, normalisation, feature settings and the network type."""
    hparams = dict(getattr(module, "hparams", {}))
    net = getattr(module, "net", module)
    classes = hparams.get("classes")  # ser's class names; another module's "classes" may be a count
    return ArtifactMetadata(
        classes=list(classes) if isinstance(classes, (list, tuple)) else [],
        n_features=hparams.get("n_features"),
        normalize=hparams.get("normalize", "global"),
        speaker_prior_weight=float(hparams.get("speaker_prior_weight", 0.0)),
        features=getattr(datamodule, "feature_config", None),
        network=f"{type(net).__module__}.{type(net).__qualname__}",
        net_config=net_config,
    )


class LayerwiseAdaptiveQuantization(L.Callback):
    """Fixed-bit sweep and/or LAQ search (and recovery) on the best checkpoint, at the end of ``fit``.

    The keyword arguments are ``QuantizationConfig``'s (``ser.quant.config``, where every default
    lives), nested as ``conf/quant`` nests them: ``quantizer=QuantizerConfig(...)`` is
    ``quant.quantizer.*``, ``search=LAQConfig(...)`` is ``quant.search.*``, and so on. The flat
    names of the release before (``t_margin=``, ``recovery_epochs=`` ...) are accepted with a
    deprecation message until the next release.

    Results land in ``self.results`` (results.json's ``fixed``, ``laq`` and ``greedy``), each
    quantized model's test predictions in ``self.predictions`` (so that ``ser report`` can pool
    folds exactly), the LAQ model in ``<save_dir>/quantized.pt`` (default: the Trainer's
    ``default_root_dir``), and tables and plots in TensorBoard.
    """

    def __init__(
        self,
        fixed_bits: Sequence[int] = DEFAULTS.fixed_bits,
        laq: bool = DEFAULTS.laq,
        greedy: bool = DEFAULTS.greedy,
        quantizer: QuantizerConfig = DEFAULTS.quantizer,
        search: LAQConfig = DEFAULTS.search,
        recovery: RecoveryConfig = DEFAULTS.recovery,
        qat: QATConfig = DEFAULTS.qat,
        save_dir: str | None = None,
        **flat: Any,
    ) -> None:
        config = QuantizationConfig(
            fixed_bits=fixed_bits,
            laq=laq,
            greedy=greedy,
            quantizer=quantizer,
            search=search,
            recovery=recovery,
            qat=qat,
        )
        self.config = with_flat(config, flat)
        self.save_dir = save_dir
        self.results = Quantization()
        # The network's config (model.net), set by the pipeline so that quantized.pt can be exported alone.
        self.net_config: dict[str, Any] | None = None
        self.predictions: dict[str, list[int]] = {}
        self.artifact: QuantizedArtifact | None = None
        self._fitted = False  # set when fit ends normally; teardown then quantizes

    # -- Lightning hook -------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fitted = True  # fit finished normally; the work waits for teardown (below)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Quantize once fit has ended and the progress bar has closed (its teardown runs before
        this one), so the LAQ lines are not printed into a live bar; on rank 0 only under DDP."""
        if stage != "fit" or not self._fitted or not trainer.is_global_zero:
            return
        self._fitted = False
        self._quantize(trainer, pl_module)

    def _quantize(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Work on a detached copy of the trained module, so nothing the search, the fixed-width
        sweep or recovery does can leak into the model the Trainer validates and tests next."""
        trained = pl_module
        trained.trainer = None  # a deep copy must not copy the Trainer
        try:
            pl_module = copy.deepcopy(trained)
        finally:
            trained.trainer = trainer
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if best:
            state = torch.load(best, map_location=pl_module.device, weights_only=True)["state_dict"]
            pl_module.load_state_dict(state)
        datamodule = trainer.datamodule
        device = pl_module.device
        val = SplitTensors.collect(datamodule.val_dataloader(), device)
        test = SplitTensors.collect(datamodule.test_dataloader(), device)
        self.results = self.run(pl_module, val, test, datamodule.train_dataloader)
        self._log(trainer)
        save_dir = Path(self.save_dir or trainer.default_root_dir)
        if self.results.laq is not None and self.artifact is not None:
            self.artifact.metadata = _metadata(pl_module, datamodule, self.net_config)
            self.save(save_dir / FILENAME)

    # -- the work, usable without a Trainer ----------------------------------------------
    def run(
        self, module: nn.Module, val: SplitTensors, test: SplitTensors, train_loader: Callable | None = None
    ) -> Quantization:
        """Every configured step on ``module``, which is left as it was."""
        config = self.config
        needs_train = (
            config.laq
            and (config.search.fidelity_weight > 0 or config.recovery.epochs > 0)
            or config.quantizer.bias_correction
        )
        session = Session.open(module, val, test, train_loader, config.quantizer, needs_train)
        self.predictions = session.predictions
        self.artifact = None
        try:
            fixed = workflows.fixed_sweep(session, config.fixed_bits)
            found = self._laq(session, train_loader) if config.laq else None
            greedy = workflows.greedy(session, config.search) if config.greedy else None
        finally:
            session.weights.restore()
        return Quantization(fixed=fixed, laq=found, greedy=greedy)

    def _laq(self, session: Session, train_loader: Callable | None) -> LAQ:
        """Search, then recovery (which replaces the shipped model) and the report-only QAT."""
        config = self.config
        found, tensors = workflows.laq(session, config.search)
        self.artifact = self._artifact(session.module, found.bits, tensors)
        if config.recovery.epochs > 0 and session.train is not None:
            found, tensors = workflows.recover(session, found, config.recovery)
            self.artifact = self._artifact(session.module, found.bits, tensors)
        if config.qat.epochs > 0 and train_loader is not None:
            session.weights.restore()
            found = replace(found, qat=workflows.fine_tune(session, found.bits, train_loader(), config.qat))
        return found

    # -- outputs --------------------------------------------------------------------------
    def _artifact(
        self, module: nn.Module, allocation: dict[str, int], tensors: dict[str, QuantizedTensor]
    ) -> QuantizedArtifact:
        """The shipped LAQ model, self-contained (see ``save``); taken while ``module`` holds it."""
        params = dict(module.named_parameters())
        layers = {}
        for name, bits in allocation.items():
            t = tensors[name]
            bias = params.get(f"{name}.bias")
            layers[name] = ArtifactLayer(
                bits,
                t.grid,
                self.config.quantizer.per_channel,
                t.codes.cpu().clone(),
                t.scales.detach().float().cpu().clone(),
                None if bias is None else bias.detach().cpu().clone(),
                t.weight.detach().cpu().clone(),
            )
        state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        for name, layer in layers.items():
            state[f"{name}.weight"] = layer.weight
        return QuantizedArtifact(layers, state, self.config.quantizer)

    def save(self, path: Path) -> None:
        """``quantized.pt`` (``ser.quant.artifact``): format, quantizer settings, per-layer bits/grid/codes/scales/
        biases, the full state dict and the deployment metadata."""
        if self.artifact is not None:
            self.artifact.save(path)

    def _log(self, trainer: L.Trainer) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if not hasattr(experiment, "add_scalar"):
            return
        for row in sorted(self.results.fixed, key=lambda r: r.bits):  # increasing steps
            experiment.add_scalar("quant/fixed/val_acc", row.scores.val_acc, row.bits)
            experiment.add_scalar("quant/fixed/test_acc", row.scores.test_acc, row.bits)
            experiment.add_scalar("quant/fixed/size_kb", row.scores.size_kb, row.bits)
        laq = self.results.laq
        if laq is None:
            return
        for key in ("val_acc", "test_acc", "test_uar", "avg_bits", "size_kb"):
            experiment.add_scalar(f"quant/laq/{key}", getattr(laq.scores, key), 0)
        if laq.before_recovery is not None and laq.recovery is not None:
            for key in ("val_acc", "test_acc", "test_uar"):
                experiment.add_scalar(f"quant/laq_before_recovery/{key}", getattr(laq.before_recovery, key), 0)
            for point in laq.recovery.curve:
                experiment.add_scalar("quant/recovery/val_kl", point.val_kl, point.epoch)
                experiment.add_scalar("quant/recovery/val_acc", point.val_acc, point.epoch)
        if laq.budget is not None:
            experiment.add_scalar("quant/laq/budget_met", float(laq.budget.met), 0)
            for step, point in enumerate(laq.budget.refinement or []):
                experiment.add_scalar("quant/laq/budget_refinement_score", point.quality, step)
        for layer in laq.layers:
            for key in ("importance", "margin", "bits"):
                experiment.add_scalar(f"laq/{key}/{layer.name}", getattr(layer, key), 0)
            experiment.add_scalar(f"laq/fallback/{layer.name}", float(bool(layer.fallback)), 0)
            for t in sorted(layer.tried or [], key=lambda t: t.bits):
                experiment.add_scalar(
                    f"laq/drop/{layer.name}", t.drop if math.isfinite(t.drop) else float("nan"), t.bits
                )
