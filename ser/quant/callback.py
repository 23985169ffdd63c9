"""Quantize the best checkpoint after training: fixed bit-widths, the LAQ search, and recovery.

Works on any LightningModule whose forward maps a batch's first element to class logits and
whose network contains Linear/Conv layers. The training split (fidelity to the full-precision
model, bias-correction statistics, recovery training) and the validation split (accuracy,
recovery's epoch choice) drive every choice; the test split is only used for the report, so
test numbers never influence a choice.

Pipeline of the LAQ model (each step configurable, ``conf/quant/laq.yaml``; ``quant=laq_paper``
switches every addition off):

1. quantizer: grid, scale rule, per-channel scales, bias correction (``quantizer.py``);
2. importance (Eq. 1–4) and the importance-ordered search (Eq. 5) with a score that mixes
   validation accuracy with agreement with the full-precision model on training + validation
   utterances (``fidelity_weight``), the fallback rule, or a size budget (``target_kb``,
   ``target_bits``);
3. recovery: a few epochs of quantization-aware training (straight-through estimator, scales
   fixed) distilled from the full-precision model on the training split; the epoch (0 = none)
   with the lowest validation KL divergence to the full-precision model is kept. The recovered
   model IS the LAQ model (results.json's ``laq`` row, ``quantized.pt``); the numbers before
   recovery stay in ``laq["before_recovery"]``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ser.errors import SERError
from ser.io import atomic_path
from ser.quant import quantizer
from ser.quant.evaluation import SplitTensors, accuracy, logits, predict, scores
from ser.quant.importance import ImportanceWeights, layer_importance
from ser.quant.quantizer import QuantizedTensor, QuantizedWeights, QuantizerConfig
from ser.quant.search import budget_search, greedy_search, laq_search

log = logging.getLogger(__name__)

FORMAT = "ser-quant-v2"


class _StraightThrough(nn.Module):
    """Quantized weight in the forward pass, identity gradient in the backward pass (scales re-fit each step)."""

    def __init__(self, bits: int, config: QuantizerConfig):
        super().__init__()
        self.bits, self.config = bits, config

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (quantizer.quantize(weight, self.bits, self.config)[0] - weight).detach()


class _FixedScaleSTE(nn.Module):
    """Recovery: the grid at the scales the search chose, straight-through gradient."""

    def __init__(self, bits: int, grid: str, scales: torch.Tensor, per_channel: bool):
        super().__init__()
        self.bits, self.grid, self.per_channel = bits, grid, per_channel
        self.register_buffer("scales", scales.detach().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return quantizer.fake_quantize(weight, self.bits, self.grid, self.scales, self.per_channel)


class Scorer:
    """The search's quality of an allocation, memoised.

    quality = (1 − λ)·validation accuracy + λ·agreement with the full-precision model's
    predictions on the training and validation utterances (λ = ``fidelity_weight``; 0 is the
    paper). The full-precision model scores (1 − λ)·val acc + λ.
    """

    def __init__(self, module: nn.Module, weights: QuantizedWeights, val: SplitTensors,
                 fidelity: SplitTensors | None, fidelity_weight: float):
        self.module, self.weights, self.val = module, weights, val
        self.fidelity, self.lam = fidelity, fidelity_weight
        weights.restore()
        self.reference = predict(module, fidelity) if fidelity is not None and fidelity_weight > 0 else None
        self.cache: dict[tuple, float] = {}
        self.baseline = self._measure()
        self.calls = 0

    def _measure(self) -> float:
        acc = accuracy(self.module, self.val)
        if self.reference is None:
            return acc
        agree = float((predict(self.module, self.fidelity) == self.reference).float().mean())
        return (1 - self.lam) * acc + self.lam * agree

    def __call__(self, allocation: dict[str, int]) -> float:
        key = tuple(sorted(allocation.items()))
        if key not in self.cache:
            self.weights.apply(allocation)
            self.cache[key] = self._measure()
        self.calls += 1
        return self.cache[key]


def _evaluator(module: nn.Module, weights: QuantizedWeights, val: SplitTensors):
    """Validation accuracy of ``module`` with a {layer: bits} allocation swapped in."""

    def evaluate(allocation: dict[str, int]) -> float:
        weights.apply(allocation)
        return accuracy(module, val)

    return evaluate


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean KL(teacher ‖ student) of softened class distributions."""
    return F.kl_div(F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1),
                    log_target=True, reduction="batchmean")


def _metadata(module: nn.Module, datamodule: Any, net_config: dict[str, Any] | None) -> dict[str, Any]:
    """What a deployment needs besides the weights, so the artifact stands alone (no results.json,
    no .hydra/): class names, input shape, normalisation, feature settings and the network type."""
    hparams = dict(getattr(module, "hparams", {}))
    features = getattr(datamodule, "feature_config", None)
    net = getattr(module, "net", module)
    return {
        "classes": list(hparams.get("classes", [])),
        "n_features": hparams.get("n_features"),
        "normalize": hparams.get("normalize", "global"),
        "speaker_prior_weight": float(hparams.get("speaker_prior_weight", 0.0)),
        "features": features.to_dict() if features is not None else None,
        "network": f"{type(net).__module__}.{type(net).__qualname__}",
        "net_config": net_config,  # the network's constructor settings (model.net), to rebuild it
    }


class LayerwiseAdaptiveQuantization(L.Callback):
    """Fixed-bit sweep and/or LAQ search (and recovery) on the best checkpoint, at the end of ``fit``.

    Results land in ``self.results`` (``fixed``, ``laq`` and ``greedy`` entries of results.json),
    each quantized model's test predictions in ``self.predictions`` (so that ``ser report`` can
    pool folds exactly), the LAQ model in ``<save_dir>/quantized.pt``, and tables and plots in
    TensorBoard.
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
        bias_correction: bool = False,
        fidelity_weight: float = 0.0,
        fallback: str = "max",
        target_kb: float | None = None,
        target_bits: float | None = None,
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
        if not quantizer.MIN_BITS <= min_bits <= max_bits <= quantizer.MAX_BITS:
            raise SERError(f"quant.min_bits..quant.max_bits = {min_bits}..{max_bits} must lie within 1..8")
        if not 0.0 <= fidelity_weight <= 1.0:
            raise SERError(f"quant.fidelity_weight must be in [0, 1], got {fidelity_weight}")
        if fallback not in ("max", "best"):
            raise SERError(f"quant.fallback must be 'max' or 'best', got {fallback!r}")
        if not 0.0 <= recovery_distill <= 1.0:
            raise SERError(f"quant.recovery_distill must be in [0, 1], got {recovery_distill}")
        self.fixed_bits = sorted((int(b) for b in fixed_bits), reverse=True)
        self.laq = laq
        self.t_margin = float(t_margin)
        self.weights = weights if isinstance(weights, ImportanceWeights) else ImportanceWeights(**dict(weights or {}))
        self.bit_range = tuple(range(min_bits, max_bits + 1))
        self.entropy_bins = entropy_bins
        self.config = QuantizerConfig(per_channel=per_channel, mse_clip=mse_clip, grid=grid, scale=scale)
        self.bias_correction = bias_correction
        self.fidelity_weight = float(fidelity_weight)
        self.fallback = fallback
        self.target_kb = None if target_kb is None else float(target_kb)
        self.target_bits = None if target_bits is None else float(target_bits)
        self.recovery_epochs = int(recovery_epochs)
        self.recovery_lr = recovery_lr
        self.recovery_distill = recovery_distill
        self.recovery_temperature = recovery_temperature
        self.recovery_batch_size = int(recovery_batch_size)
        self.recovery_seed = int(recovery_seed)
        self.qat_epochs = qat_epochs
        self.qat_lr = qat_lr
        self.greedy = greedy
        self.save_dir = save_dir
        self.results: dict[str, Any] = {}
        # The network's config (model.net), set by the pipeline so that quantized.pt can be exported alone.
        self.net_config: dict[str, Any] | None = None
        self.predictions: dict[str, list[int]] = {}
        self.allocation: dict[str, int] = {}
        self.artifact: dict[str, Any] | None = None
        self._weights: QuantizedWeights | None = None
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
        self._log(trainer, pl_module)
        save_dir = Path(self.save_dir or trainer.default_root_dir)
        if self.results.get("laq") and self.artifact is not None:
            self.artifact["metadata"] = _metadata(pl_module, datamodule, self.net_config)
            self.save(save_dir / "quantized.pt")

    # -- the work, usable without a Trainer ----------------------------------------------
    def run(self, module: nn.Module, val: SplitTensors, test: SplitTensors, train_loader: Callable | None = None) -> dict[str, Any]:
        n_classes = int(torch.cat([val.targets, test.targets]).max()) + 1
        needs_train = self.laq and (self.fidelity_weight > 0 or self.recovery_epochs > 0) or self.bias_correction
        train = SplitTensors.collect(train_loader(), val.inputs.device) if train_loader is not None and needs_train else None
        means = quantizer.mean_inputs(module, train.inputs if train is not None else val.inputs) if self.bias_correction else None
        weights = QuantizedWeights(module, self.config, means)
        self._weights = weights
        baseline_val = accuracy(module, val)
        results: dict[str, Any] = {"fixed": []}
        self.predictions = {}
        self.artifact = None
        try:
            for bits in self.fixed_bits:
                allocation = {name: bits for name in weights.layers}
                weights.apply(allocation)
                results["fixed"].append(self._summary(module, allocation, val, test, n_classes, f"fixed/{bits}", bits=bits))
            if self.laq:
                results["laq"] = self._laq(module, weights, baseline_val, val, test, train, n_classes, train_loader)
            if self.greedy:
                results["greedy"] = self._greedy(module, weights, baseline_val, val, test, n_classes)
        finally:
            weights.restore()
        return results

    def _summary(self, module, allocation, val, test, n_classes, name: str | None, **extra) -> dict[str, Any]:
        """The row of one quantized model; its test predictions go to ``self.predictions[name]``."""
        preds = predict(module, test)
        if name is not None:
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

    def _search(self, module, importance, scorer: Scorer):
        """Eq. 5 at T_margin, or at the T_margin that fits the size budget best."""
        if self.target_kb is None and self.target_bits is None:
            return laq_search(importance, scorer, scorer.baseline, self.t_margin, self.bit_range, self.fallback), None

        def fits(allocation: dict[str, int]) -> float:  # ≤ 1 when every budget is met
            ratios = [0.0]
            if self.target_kb is not None:
                ratios.append(quantizer.file_size_kb(module, allocation, self.config) / self.target_kb)
            if self.target_bits is not None:
                ratios.append(quantizer.average_bits(module, allocation) / self.target_bits)
            return max(ratios)

        search, met = budget_search(importance, scorer, scorer.baseline, fits, 1.0, self.bit_range, self.fallback)
        file_kb = quantizer.file_size_kb(module, search.bits, self.config)
        budget = {"target_kb": self.target_kb, "target_bits": self.target_bits, "met": met, "t_margin": search.t_margin,
                  "file_kb": file_kb}
        if not met:
            log.warning("LAQ: the size budget (target_kb=%s, target_bits=%s) cannot be met with %s-bit layers; "
                        "shipping the smallest allocation found: a file of about %.1f KB, %.2f bits", self.target_kb,
                        self.target_bits, min(self.bit_range), file_kb, quantizer.average_bits(module, search.bits))
        return search, budget

    def _laq(self, module, weights, baseline_val, val, test, train, n_classes, train_loader) -> dict[str, Any]:
        weights.restore()
        importance = layer_importance(module, self.weights, self.entropy_bins)
        start = time.perf_counter()
        if self.fidelity_weight > 0:
            fidelity = val if train is None else SplitTensors(torch.cat([train.inputs, val.inputs]), torch.cat([train.targets, val.targets]))
            scorer = Scorer(module, weights, val, fidelity, self.fidelity_weight)
            search, budget = self._search(module, importance, scorer)
        elif self.target_kb is None and self.target_bits is None and not self.bias_correction and self.fallback == "max":
            # the paper's search, evaluation for evaluation (no memoisation: counts stay comparable)
            search = laq_search(importance, _evaluator(module, weights, val), baseline_val, self.t_margin, self.bit_range)
            budget = None
        else:
            search, budget = self._search(module, importance, Scorer(module, weights, val, None, 0.0))
        search_s = time.perf_counter() - start
        self.allocation = search.bits
        weights.apply(search.bits)
        summary = self._summary(module, search.bits, val, test, n_classes, "laq")
        by_name = {c.layer.name: c for c in search.choices}
        summary.update(
            t_margin=search.t_margin if search.t_margin is not None else self.t_margin,
            weights=self.weights.as_dict(),
            evaluations=search.evaluations,
            search_s=search_s,
            quantizer={**self.config.as_dict(), "bias_correction": self.bias_correction},
            signal={"fidelity_weight": self.fidelity_weight, "fallback": self.fallback},
            layers=[
                {
                    "name": l.name, "params": l.params, "n_p": l.n_p, "n_e": l.n_e, "n_v": l.n_v,
                    "importance": l.importance, "rank": by_name[l.name].rank,
                    "margin": by_name[l.name].margin, "bits": by_name[l.name].bits,
                    "drop": by_name[l.name].drop, "fallback": by_name[l.name].fallback,
                    "tried": [{"bits": b, "drop": d} for b, d in by_name[l.name].tried],
                }
                for l in importance
            ],
        )
        if budget is not None:
            summary["budget"] = budget
        log.info(
            "LAQ: bits %s, average %.2f bits, %.1f KB, val %.4f (full precision %.4f), test %.4f; %d evaluations in %.2f s",
            search.bits, summary["avg_bits"], summary["size_kb"], summary["val_acc"], baseline_val,
            summary["test_acc"], search.evaluations, search_s,
        )
        self.artifact = self._artifact(module, search.bits, {n: weights.tensor(n, b) for n, b in search.bits.items()})
        if self.recovery_epochs > 0 and train is not None:
            before = {k: summary[k] for k in ("val_acc", "test_acc", "test_uar", "size_kb", "avg_bits")}
            self.predictions["laq_before_recovery"] = self.predictions["laq"]
            recovery = self._recover(module, weights, search.bits, train, val)
            row = self._summary(module, search.bits, val, test, n_classes, "laq")
            summary.update(row, before_recovery=before, recovery=recovery)
            log.info("LAQ after %d/%d recovery epochs: val %.4f, test %.4f (before: val %.4f, test %.4f); %.2f s",
                     recovery["chosen_epoch"], self.recovery_epochs, row["val_acc"], row["test_acc"],
                     before["val_acc"], before["test_acc"], recovery["seconds"])
        if self.qat_epochs > 0 and train_loader is not None:  # legacy, report-only fine-tuning
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

    def _recover(self, module, weights: QuantizedWeights, allocation, train: SplitTensors, val: SplitTensors) -> dict[str, Any]:
        """QAT at the chosen bits and scales, distilled from the full-precision model; keeps the best epoch on val.

        Leaves ``module`` holding the recovered model (dequantized weights, trained biases) and
        ``self.artifact`` its codes.
        """
        start = time.perf_counter()
        layers = quantizer.quantizable_layers(module)
        tensors = {name: weights.tensor(name, bits) for name, bits in allocation.items()}
        weights.restore()
        teacher_val, teacher_train = logits(module, val), logits(module, train)  # the full-precision model
        with torch.no_grad():  # start: full-precision latent weights, bias-corrected biases
            for name, bits in allocation.items():
                if getattr(layers[name], "bias", None) is not None:
                    layers[name].bias.copy_(weights.bias(name, bits))
        for name, bits in allocation.items():
            t = tensors[name]
            parametrize.register_parametrization(layers[name], "weight", _FixedScaleSTE(bits, t.grid, t.scales, self.config.per_channel))
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.recovery_lr)
        T, d = self.recovery_temperature, self.recovery_distill

        def val_kl() -> float:
            with torch.no_grad():
                return float(_kl(logits(module, val), teacher_val))

        curve = [{"epoch": 0, "val_kl": val_kl(), "val_acc": accuracy(module, val)}]
        best_epoch, best_kl = 0, curve[0]["val_kl"]
        best_state = copy.deepcopy(module.state_dict())
        device = val.inputs.device
        generator = torch.Generator().manual_seed(self.recovery_seed)
        try:
            for epoch in range(1, self.recovery_epochs + 1):
                module.train()
                order = torch.randperm(len(train.inputs), generator=generator).to(device)
                for i in range(0, len(order), self.recovery_batch_size):
                    idx = order[i : i + self.recovery_batch_size]
                    x, y, target = train.inputs[idx], train.targets[idx], teacher_train[idx]
                    out = module(x)
                    loss = (1 - d) * F.cross_entropy(out, y) + d * T * T * _kl(out, target, T) if d > 0 else F.cross_entropy(out, y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                module.eval()
                kl = val_kl()
                curve.append({"epoch": epoch, "val_kl": kl, "val_acc": accuracy(module, val)})
                if kl < best_kl - 1e-9:
                    best_epoch, best_kl, best_state = epoch, kl, copy.deepcopy(module.state_dict())
            module.load_state_dict(best_state)
        finally:  # bake the quantized weights in, so the model is plain again
            for name in allocation:
                parametrize.remove_parametrizations(layers[name], "weight", leave_parametrized=False)
        module.eval()
        shipped = quantizer.quantize_(module, allocation, self.config, {name: t.scales for name, t in tensors.items()})
        self.artifact = self._artifact(module, allocation, shipped)
        return {"epochs": self.recovery_epochs, "chosen_epoch": best_epoch, "lr": self.recovery_lr,
                "distill": d, "temperature": T, "seconds": time.perf_counter() - start, "curve": curve}

    def _fine_tune(self, module, allocation, loader, val, test, n_classes) -> dict[str, Any]:
        """Legacy: a few epochs of quantization-aware training at the chosen bits, reported next to LAQ, not shipped."""
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
        finally:
            for name in allocation:
                parametrize.remove_parametrizations(layers[name], "weight", leave_parametrized=True)
        module.eval()
        result = {**self._summary(module, allocation, val, test, n_classes, "laq_qat"), "epochs": self.qat_epochs}
        module.load_state_dict(original)
        log.info("LAQ + %d epochs of QAT: val %.4f, test %.4f", self.qat_epochs, result["val_acc"], result["test_acc"])
        return result

    # -- outputs --------------------------------------------------------------------------
    def _artifact(self, module: nn.Module, allocation: dict[str, int], tensors: dict[str, QuantizedTensor]) -> dict[str, Any]:
        """The shipped LAQ model, self-contained (see ``save``); taken while ``module`` holds it."""
        params = dict(module.named_parameters())
        layers = {}
        for name, bits in allocation.items():
            t = tensors[name]
            bias = params.get(f"{name}.bias")
            layers[name] = {"bits": bits, "grid": t.grid, "per_channel": self.config.per_channel,
                            "shape": list(t.codes.shape), "codes": t.codes.cpu().clone(),
                            "scales": t.scales.detach().float().cpu().clone(),
                            "bias": None if bias is None else bias.detach().cpu().clone(),
                            "weight": t.weight.detach().cpu().clone()}
        state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        for name, layer in layers.items():
            state[f"{name}.weight"] = layer["weight"]
        return {"format": FORMAT, "layers": layers, "state_dict": state,
                "quantizer": {**self.config.as_dict(), "bias_correction": self.bias_correction}}

    def save(self, path: Path) -> None:
        """``quantized.pt``: format, quantizer settings, per-layer bits/grid/codes/scales/biases, and the full state dict."""
        if self.artifact is None:
            return
        with atomic_path(path) as tmp:
            torch.save(self.artifact, tmp)

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if not hasattr(experiment, "add_scalar"):
            return
        for row in sorted(self.results["fixed"], key=lambda r: r["bits"]):  # increasing steps
            experiment.add_scalar("quant/fixed/val_acc", row["val_acc"], row["bits"])
            experiment.add_scalar("quant/fixed/test_acc", row["test_acc"], row["bits"])
            experiment.add_scalar("quant/fixed/size_kb", row["size_kb"], row["bits"])
        laq = self.results.get("laq")
        if laq:
            for key in ("val_acc", "test_acc", "test_uar", "avg_bits", "size_kb"):
                experiment.add_scalar(f"quant/laq/{key}", laq[key], 0)
            if laq.get("before_recovery"):
                for key in ("val_acc", "test_acc", "test_uar"):
                    experiment.add_scalar(f"quant/laq_before_recovery/{key}", laq["before_recovery"][key], 0)
                for point in laq["recovery"]["curve"]:
                    experiment.add_scalar("quant/recovery/val_kl", point["val_kl"], point["epoch"])
                    experiment.add_scalar("quant/recovery/val_acc", point["val_acc"], point["epoch"])
            if laq.get("budget"):
                experiment.add_scalar("quant/laq/budget_met", float(laq["budget"]["met"]), 0)
            for layer in laq["layers"]:
                for key in ("importance", "margin", "bits"):
                    experiment.add_scalar(f"laq/{key}/{layer['name']}", layer[key], 0)
                experiment.add_scalar(f"laq/fallback/{layer['name']}", float(layer.get("fallback", False)), 0)
                for t in sorted(layer.get("tried", []), key=lambda t: t["bits"]):
                    drop = t["drop"] if math.isfinite(t["drop"]) else float("nan")
                    experiment.add_scalar(f"laq/drop/{layer['name']}", drop, t["bits"])
