"""Quantize the best checkpoint after training: the Lightning side of ``ser.quant.workflows``.

The callback turns ``conf/quant`` into one config per step, and at the end of ``fit`` loads the
best checkpoint into a copy of the model, calls the steps (fixed-width sweep, LAQ search,
recovery, legacy QAT, sensitivity greedy), logs them to TensorBoard and saves the LAQ model as
``quantized.pt``. Pipeline of the LAQ model (each step configurable, ``conf/quant/laq.yaml``;
``quant=laq_paper`` switches every addition off):

1. quantizer: grid, scale rule, per-channel scales, bias correction, and how biases and
   statistics are stored (``quantizer.py``);
2. importance (Eq. 1–4) and the importance-ordered search (Eq. 5) with a score that mixes
   validation accuracy with agreement with the full-precision model on training + validation
   utterances (``fidelity_weight``), the fallback rule, or a size budget (``target_kb``,
   ``target_bits``);
3. recovery: a few epochs of quantization-aware training distilled from the full-precision
   model; the recovered model IS the LAQ model (results.json's ``laq`` row, ``quantized.pt``);
   the numbers before recovery stay in ``laq.before_recovery``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import torch
from torch import nn

from ser.quant import workflows
from ser.quant.artifact import FILENAME, ArtifactLayer, ArtifactMetadata, QuantizedArtifact
from ser.quant.evaluation import SplitTensors
from ser.quant.importance import ImportanceWeights
from ser.quant.quantizer import QuantizedTensor, QuantizerConfig
from ser.quant.workflows import LAQConfig, QATConfig, RecoveryConfig, SearchConfig, Session
from ser.results import LAQ, Quantization


def _metadata(module: nn.Module, datamodule: Any, net_config: dict[str, Any] | None) -> ArtifactMetadata:
    """What a deployment needs besides the weights, so the artifact stands alone (no results.json,
    no .hydra/): class names, input shape, normalisation, feature settings and the network type."""
    hparams = dict(getattr(module, "hparams", {}))
    net = getattr(module, "net", module)
    return ArtifactMetadata(classes=list(hparams.get("classes", [])), n_features=hparams.get("n_features"),
                            normalize=hparams.get("normalize", "global"),
                            speaker_prior_weight=float(hparams.get("speaker_prior_weight", 0.0)),
                            features=getattr(datamodule, "feature_config", None),
                            network=f"{type(net).__module__}.{type(net).__qualname__}", net_config=net_config)


class LayerwiseAdaptiveQuantization(L.Callback):
    """Fixed-bit sweep and/or LAQ search (and recovery) on the best checkpoint, at the end of ``fit``.

    Results land in ``self.results`` (results.json's ``fixed``, ``laq`` and ``greedy``), each
    quantized model's test predictions in ``self.predictions`` (so that ``ser report`` can pool
    folds exactly), the LAQ model in ``<save_dir>/quantized.pt``, and tables and plots in
    TensorBoard. The flat keyword arguments are ``conf/quant``'s options (``quant.t_margin`` …).
    """

    def __init__(
        self,
        fixed_bits: Sequence[int] = (8, 7, 6, 5, 4, 3, 2, 1),
        laq: bool = True,
        t_margin: float = 4.0,
        weights: dict[str, float] | ImportanceWeights | None = None,
        min_bits: int = 1,
        max_bits: int = 8,
        entropy_bins: int = 256,
        per_channel: bool = False,
        mse_clip: bool = False,
        grid: str = "symmetric",
        scale: str = "max",
        bias_bits: int = 32,
        stats_bits: int = 32,
        bias_correction: bool = False,
        fidelity_weight: float = 0.0,
        fallback: str = "max",
        target_kb: float | None = None,
        target_bits: float | None = None,
        budget_refine: bool = False,
        recovery_epochs: int = 0,
        recovery_lr: float = 1e-4,
        recovery_distill: float = 1.0,
        recovery_temperature: float = 2.0,
        recovery_batch_size: int = 32,
        recovery_seed: int = 0,
        qat_epochs: int = 0,
        qat_lr: float = 1e-4,
        greedy: bool = False,
        save_dir: str | None = None,
    ) -> None:
        self.fixed_bits = sorted((int(b) for b in fixed_bits), reverse=True)
        self.search = SearchConfig(
            t_margin=float(t_margin),
            weights=weights if isinstance(weights, ImportanceWeights) else ImportanceWeights(**dict(weights or {})),
            min_bits=min_bits, max_bits=max_bits, entropy_bins=entropy_bins)
        laq_config = LAQConfig(search=self.search, fidelity_weight=float(fidelity_weight), fallback=fallback,
                               target_kb=None if target_kb is None else float(target_kb),
                               target_bits=None if target_bits is None else float(target_bits),
                               budget_refine=bool(budget_refine))
        self.laq = laq_config if laq else None  # validated either way: a mistake is reported with quant=fixed too
        self.recovery = RecoveryConfig(epochs=int(recovery_epochs), lr=recovery_lr, distill=recovery_distill,
                                       temperature=recovery_temperature, batch_size=int(recovery_batch_size),
                                       seed=int(recovery_seed))
        self.qat = QATConfig(epochs=qat_epochs, lr=qat_lr)
        self.greedy = greedy
        self.quantizer = QuantizerConfig(per_channel=per_channel, mse_clip=mse_clip, grid=grid, scale=scale,
                                         bias_bits=int(bias_bits), stats_bits=int(stats_bits))
        self.bias_correction = bias_correction
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
    def run(self, module: nn.Module, val: SplitTensors, test: SplitTensors,
            train_loader: Callable | None = None) -> Quantization:
        """Every configured step on ``module``, which is left as it was."""
        laq = self.laq
        needs_train = laq is not None and (laq.fidelity_weight > 0 or self.recovery.epochs > 0) or self.bias_correction
        session = Session.open(module, val, test, train_loader, self.quantizer, self.bias_correction, needs_train)
        self.predictions = session.predictions
        self.artifact = None
        try:
            fixed = workflows.fixed_sweep(session, self.fixed_bits)
            found = self._laq(session, train_loader) if laq is not None else None
            greedy = workflows.greedy(session, self.search) if self.greedy else None
        finally:
            session.weights.restore()
        return Quantization(fixed=fixed, laq=found, greedy=greedy)

    def _laq(self, session: Session, train_loader: Callable | None) -> LAQ:
        """Search, then recovery (which replaces the shipped model) and the report-only QAT."""
        found, tensors = workflows.laq(session, self.laq)
        self.artifact = self._artifact(session.module, found.bits, tensors)
        if self.recovery.epochs > 0 and session.train is not None:
            found, tensors = workflows.recover(session, found, self.recovery)
            self.artifact = self._artifact(session.module, found.bits, tensors)
        if self.qat.epochs > 0 and train_loader is not None:
            session.weights.restore()
            found = replace(found, qat=workflows.fine_tune(session, found.bits, train_loader(), self.qat))
        return found

    # -- outputs --------------------------------------------------------------------------
    def _artifact(self, module: nn.Module, allocation: dict[str, int],
                  tensors: dict[str, QuantizedTensor]) -> QuantizedArtifact:
        """The shipped LAQ model, self-contained (see ``save``); taken while ``module`` holds it."""
        params = dict(module.named_parameters())
        layers = {}
        for name, bits in allocation.items():
            t = tensors[name]
            bias = params.get(f"{name}.bias")
            layers[name] = ArtifactLayer(bits, t.grid, self.quantizer.per_channel, t.codes.cpu().clone(),
                                         t.scales.detach().float().cpu().clone(),
                                         None if bias is None else bias.detach().cpu().clone(),
                                         t.weight.detach().cpu().clone())
        state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        for name, layer in layers.items():
            state[f"{name}.weight"] = layer.weight
        return QuantizedArtifact(layers, state, self.quantizer, self.bias_correction)

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
                experiment.add_scalar(f"laq/drop/{layer.name}", t.drop if math.isfinite(t.drop) else float("nan"), t.bits)
