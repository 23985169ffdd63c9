"""Quantize the best checkpoint after training: fixed bit-widths and the LAQ search.

Works on any LightningModule whose forward maps a batch's first element to class logits and
whose network contains Linear/Conv layers; the datamodule's val split drives the search and
its test split is only used for the report, so test numbers never influence a choice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ser.io import atomic_path
from ser.quant import quantizer
from ser.quant.evaluation import SplitTensors, accuracy, predict, scores
from ser.quant.importance import ImportanceWeights, layer_importance
from ser.quant.quantizer import QuantizedWeights, QuantizerConfig
from ser.quant.search import greedy_search, laq_search

log = logging.getLogger(__name__)


class _StraightThrough(nn.Module):
    """Quantized weight in the forward pass, identity gradient in the backward pass."""

    def __init__(self, bits: int, config: QuantizerConfig):
        super().__init__()
        self.bits, self.config = bits, config

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (quantizer.quantize(weight, self.bits, self.config)[0] - weight).detach()


def _evaluator(module: nn.Module, weights: QuantizedWeights, val: SplitTensors):
    """Validation accuracy of ``module`` with a {layer: bits} allocation swapped in."""

    def evaluate(allocation: dict[str, int]) -> float:
        weights.apply(allocation)
        return accuracy(module, val)

    return evaluate


class LayerwiseAdaptiveQuantization(L.Callback):
    """Fixed-bit sweep and/or LAQ search on the best checkpoint, at the end of ``fit``.

    Results land in ``self.results`` (``fixed`` and ``laq`` entries of results.json), each
    quantized model's test predictions in ``self.predictions`` (so that ``ser report`` can pool
    folds exactly), the quantized model in ``<save_dir>/quantized.pt``, and tables and plots
    in TensorBoard.
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
        qat_epochs: int = 0,
        qat_lr: float = 1e-4,
        greedy: bool = False,
        save_dir: str | None = None,
    ) -> None:
        if not quantizer.MIN_BITS <= min_bits <= max_bits <= quantizer.MAX_BITS:
            raise ValueError(f"quant bit range {min_bits}..{max_bits} must lie within 1..8")
        self.fixed_bits = [int(b) for b in fixed_bits]
        self.laq = laq
        self.t_margin = float(t_margin)
        self.weights = weights if isinstance(weights, ImportanceWeights) else ImportanceWeights(**dict(weights or {}))
        self.bit_range = tuple(range(min_bits, max_bits + 1))
        self.entropy_bins = entropy_bins
        self.config = QuantizerConfig(per_channel=per_channel, mse_clip=mse_clip)
        self.qat_epochs = qat_epochs
        self.qat_lr = qat_lr
        self.greedy = greedy
        self.save_dir = save_dir
        self.results: dict[str, Any] = {}
        self.predictions: dict[str, list[int]] = {}
        self.allocation: dict[str, int] = {}
        self._weights: QuantizedWeights | None = None

    # -- Lightning hook -------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if best:
            state = torch.load(best, map_location=pl_module.device, weights_only=True)["state_dict"]
            pl_module.load_state_dict(state)
        datamodule = trainer.datamodule
        device = pl_module.device
        val = SplitTensors.collect(datamodule.val_dataloader(), device)
        test = SplitTensors.collect(datamodule.test_dataloader(), device)
        self.results = self.run(pl_module, val, test, datamodule.train_dataloader)
        self._log(trainer, pl_module)
        save_dir = Path(self.save_dir or trainer.default_root_dir)
        if self.results.get("laq"):
            self._save(pl_module, save_dir / "quantized.pt")

    # -- the work, usable without a Trainer ----------------------------------------------
    def run(self, module: nn.Module, val: SplitTensors, test: SplitTensors, train_loader=None) -> dict[str, Any]:
        n_classes = int(torch.cat([val.targets, test.targets]).max()) + 1
        weights = QuantizedWeights(module, self.config)
        self._weights = weights
        baseline_val = accuracy(module, val)
        results: dict[str, Any] = {"fixed": []}
        self.predictions = {}
        try:
            for bits in self.fixed_bits:
                allocation = {name: bits for name in weights.layers}
                weights.apply(allocation)
                results["fixed"].append(self._summary(module, allocation, val, test, n_classes, f"fixed/{bits}", bits=bits))
            if self.laq:
                results["laq"] = self._laq(module, weights, baseline_val, val, test, n_classes, train_loader)
            if self.greedy:
                results["greedy"] = self._greedy(module, weights, baseline_val, val, test, n_classes)
        finally:
            weights.restore()
        return results

    def _summary(self, module, allocation, val, test, n_classes, name: str, **extra) -> dict[str, Any]:
        """The row of one quantized model; its test predictions go to ``self.predictions[name]``."""
        preds = predict(module, test)
        self.predictions[name] = preds.cpu().tolist()
        test_acc, test_uar = scores(preds, test.targets, n_classes)
        return {
            **extra,
            "val_acc": accuracy(module, val),
            "test_acc": test_acc,
            "test_uar": test_uar,
            "size_kb": quantizer.model_size_kb(module, allocation, self.config),
            "avg_bits": quantizer.average_bits(module, allocation),
        }

    def _laq(self, module, weights, baseline_val, val, test, n_classes, train_loader) -> dict[str, Any]:
        weights.restore()
        importance = layer_importance(module, self.weights, self.entropy_bins)
        search = laq_search(importance, _evaluator(module, weights, val), baseline_val, self.t_margin, self.bit_range)
        self.allocation = search.bits
        weights.apply(search.bits)
        summary = self._summary(module, search.bits, val, test, n_classes, "laq")
        by_name = {c.layer.name: c for c in search.choices}
        summary.update(
            t_margin=self.t_margin,
            weights=self.weights.as_dict(),
            evaluations=search.evaluations,
            search_s=search.seconds,
            layers=[
                {
                    "name": l.name, "params": l.params, "n_p": l.n_p, "n_e": l.n_e, "n_v": l.n_v,
                    "importance": l.importance, "rank": by_name[l.name].rank,
                    "margin": by_name[l.name].margin, "bits": by_name[l.name].bits,
                }
                for l in importance
            ],
        )
        log.info(
            "LAQ: bits %s, average %.2f bits, %.1f KB, val %.4f (full precision %.4f), test %.4f; %d evaluations in %.2f s",
            search.bits, summary["avg_bits"], summary["size_kb"], summary["val_acc"], baseline_val,
            summary["test_acc"], search.evaluations, search.seconds,
        )
        if self.qat_epochs > 0 and train_loader is not None:
            weights.restore()
            summary["qat"] = self._fine_tune(module, search.bits, train_loader(), val, test, n_classes)
        return summary

    def _greedy(self, module, weights, baseline_val, val, test, n_classes) -> dict[str, Any]:
        """The sensitivity-greedy baseline at the same margin, for the same report."""
        weights.restore()
        layers = layer_importance(module, self.weights, self.entropy_bins)
        search = greedy_search(layers, _evaluator(module, weights, val), baseline_val, self.t_margin, self.bit_range)
        weights.apply(search.bits)
        summary = self._summary(module, search.bits, val, test, n_classes, "greedy")
        summary.update(bits=search.bits, evaluations=search.evaluations, search_s=search.seconds)
        log.info("sensitivity greedy: bits %s, average %.2f bits, val %.4f, test %.4f; %d evaluations",
                 search.bits, summary["avg_bits"], summary["val_acc"], summary["test_acc"], search.evaluations)
        return summary

    def _fine_tune(self, module, allocation, loader, val, test, n_classes) -> dict[str, Any]:
        """A few epochs of quantization-aware training at the chosen bits (straight-through estimator)."""
        layers = quantizer.quantizable_layers(module)
        original = {k: v.clone() for k, v in module.state_dict().items()}
        for name, bits in allocation.items():
            parametrize.register_parametrization(layers[name], "weight", _StraightThrough(bits, self.config))
        optimizer = torch.optim.Adam(module.parameters(), lr=self.qat_lr)
        try:
            for _ in range(self.qat_epochs):
                module.train()
                for batch in loader:
                    x, y = batch[0].to(val.inputs.device), batch[1].to(val.inputs.device)
                    optimizer.zero_grad()
                    F.cross_entropy(module(x), y).backward()
                    optimizer.step()
        finally:  # bake the quantized weights in, so the model is plain again
            for name in allocation:
                parametrize.remove_parametrizations(layers[name], "weight", leave_parametrized=True)
        module.eval()
        result = {**self._summary(module, allocation, val, test, n_classes, "laq_qat"), "epochs": self.qat_epochs}
        module.load_state_dict(original)
        log.info("LAQ + %d epochs of QAT: val %.4f, test %.4f", self.qat_epochs, result["val_acc"], result["test_acc"])
        return result

    # -- outputs --------------------------------------------------------------------------
    def _save(self, module: nn.Module, path: Path) -> None:
        """Per-layer bits, integer codes' scales and the dequantized weights of the LAQ model."""
        layers = {}
        for name, bits in self.allocation.items():
            q, scales = self._weights.quantized(name, bits)
            layers[name] = {"bits": bits, "scales": scales.cpu(), "weight": q.cpu()}
        state = {k: v.cpu() for k, v in module.state_dict().items()}
        for name, layer in layers.items():
            state[f"{name}.weight"] = layer["weight"]
        with atomic_path(path) as tmp:
            torch.save({"format": "ser-fakequant-v1", "layers": layers, "state_dict": state,
                        "quantizer": {"per_channel": self.config.per_channel, "mse_clip": self.config.mse_clip}}, tmp)

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if not hasattr(experiment, "add_scalar"):
            return
        for row in self.results["fixed"]:
            experiment.add_scalar("quant/fixed/val_acc", row["val_acc"], row["bits"])
            experiment.add_scalar("quant/fixed/test_acc", row["test_acc"], row["bits"])
            experiment.add_scalar("quant/fixed/size_kb", row["size_kb"], row["bits"])
        laq = self.results.get("laq")
        if laq:
            for key in ("val_acc", "test_acc", "test_uar", "avg_bits", "size_kb"):
                experiment.add_scalar(f"quant/laq/{key}", laq[key], 0)
            for layer in laq["layers"]:
                for key in ("importance", "margin", "bits"):
                    experiment.add_scalar(f"laq/{key}/{layer['name']}", layer[key], 0)

