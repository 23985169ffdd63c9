"""One training run, read as build → fit → collect: data [→ teacher → graph] → model → fit →
best checkpoint → validate/test → quantization (a callback) → results.json and report.md.

Kept apart from ``train.py`` so tests and other entry points can run a composed config
without going through the command line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from ser import rundir
from ser.data.datamodule import SERDataModule
from ser.io import write_text
from ser.models.classic import SVMConfig
from ser.models.module import SERClassifier
from ser.quant.evaluation import SplitTensors, predict
from ser.quant.quantizer import model_size_kb
from ser.report.plots import save_figure
from ser.report.run import render_run, run_figure
from ser.results import FILENAME, Baseline, ClassicRecord, RunResults, TestPredictions, Timing, Transfer
from ser.transfer.batches import GraphDataModule
from ser.transfer.nsl import teach

log = logging.getLogger(__name__)

FP32_BITS = 32


def _callbacks(cfg: DictConfig, checkpoint_dir: Path | None = None) -> list[L.Callback]:
    """The configured callbacks; ``checkpoint_dir`` moves checkpoints (the teacher's go elsewhere)."""
    callbacks = []
    for c in (cfg.get("callbacks") or {}).values():
        if c is not None:
            moved = {"dirpath": str(checkpoint_dir)} if checkpoint_dir is not None and "dirpath" in c else {}
            callbacks.append(hydra.utils.instantiate(c, **moved))
    return callbacks


@dataclass
class Fitted:
    """A trained model's best-checkpoint metrics and where that checkpoint is."""

    val: dict[str, float]
    test: dict[str, float]
    seconds: float
    best_checkpoint: str | None
    global_zero: bool = True  # False in the extra processes of a distributed (DDP) run


def fit(
    cfg: DictConfig,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    logger: TensorBoardLogger,
    callbacks: list[L.Callback],
) -> Fitted:
    """Train with the configured Trainer, then validate and test the best checkpoint (loaded into ``model``)."""
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    _announce_stop(trainer)
    best = "best" if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path else None
    (val,) = trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    (test,) = trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    return Fitted(
        val, test, seconds, trainer.checkpoint_callback.best_model_path if best else None, trainer.is_global_zero
    )


def _announce_stop(trainer: L.Trainer) -> None:
    """Say why training ended, so a log ending at "Epoch 10/99" does not look interrupted."""
    stopper = next((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)), None)
    if stopper is not None and stopper.stopped_epoch:
        log.info(
            "early stopping after epoch %d of %d: %s did not improve for %d epochs (best %.4f)",
            stopper.stopped_epoch + 1,
            trainer.max_epochs,
            stopper.monitor,
            stopper.patience,
            float(stopper.best_score),
        )
    else:
        log.info("trained for %d epochs (the maximum)", trainer.current_epoch)


def _logger(cfg: DictConfig, version: str = "") -> TensorBoardLogger:
    """The configured logger (``conf/logger``); the teacher of knowledge transfer logs beside the run as ``version``."""
    return hydra.utils.instantiate(cfg.logger, version=version)


def _hparams(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config, without Hydra's internals, for TensorBoard's HPARAMS tab."""
    keys = [k for k in cfg if k != "hydra"]  # a config composed in-process may carry the hydra node
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)  # type: ignore[return-value]


def objective(results: RunResults, bit_budget: float | None) -> float:
    """What a sweeper maximises: accuracy at a bit budget, so over-budget trials rank last."""
    if bit_budget is None or results.laq is None:
        return results.baseline.val_acc
    laq = results.laq.scores
    return laq.val_acc - max(0.0, laq.avg_bits - bit_budget)


def _report(results: RunResults, output_dir: Path, logger: TensorBoardLogger) -> None:
    """Table 4 for this run: report.md, the console, and TensorBoard (text and Figure-1 plot)."""
    import matplotlib.pyplot as plt

    markdown = render_run(results)
    write_text(output_dir / "report.md", markdown)
    log.info("quantization report (%s):\n%s", output_dir / "report.md", markdown)
    logger.experiment.add_text("quant/report", markdown)
    figure = run_figure(results)
    save_figure(figure, output_dir / "accuracy_vs_bits.png")
    logger.experiment.add_figure("quant/accuracy_vs_bits", figure)
    plt.close(figure)


def _classic(cfg: DictConfig, datamodule: SERDataModule) -> tuple[list[ClassicRecord] | None, dict[str, list[int]]]:
    """The classical reference models (``classic``) on the network's own inputs, split and standardisation."""
    if not cfg.get("classic"):
        return None, {}
    config: SVMConfig = hydra.utils.instantiate(cfg.classic)
    parts = {name: tuple(t.numpy() for t in datamodule.tensors(name)) for name in ("train", "val", "test")}
    mean, std = (t.numpy() for t in datamodule.standardization())
    records, predictions = config.fit_predict(parts, mean, std, int(cfg.seed))
    for r in records:
        log.info(
            "classical reference %s (C=%g, inner-CV UAR %.4f): test accuracy %.4f, UAR %.4f",
            r.name,
            r.C,
            r.inner_uar,
            r.test_acc,
            r.test_uar,
        )
    return records, predictions


def _test_predictions(
    model: SERClassifier, datamodule: SERDataModule, quantization, others: dict[str, list[int]]
) -> TestPredictions:
    """Every test utterance's label and each model's predicted class (indices into ``classes``).

    ``ser report`` pools these over the folds of a k-fold or leave-one-speaker-out sweep, so
    pooled UAR and WA are computed over every utterance exactly, not averaged from folds.
    """
    prepared = datamodule.prepared
    inputs, labels = datamodule.tensors("test")
    baseline = predict(model, SplitTensors(inputs.to(model.device), labels.to(model.device)))
    models = {
        "baseline": baseline.cpu().tolist(),
        **(quantization.predictions if quantization is not None else {}),
        **others,
    }
    return TestPredictions(
        paths=[str(prepared.utterances[i].path) for i in prepared.split.test],
        speakers=[prepared.utterances[i].speaker for i in prepared.split.test],
        labels=labels.tolist(),
        models=models,
    )


@dataclass
class Built:
    """Everything one run trains and evaluates, built from its config."""

    datamodule: SERDataModule
    training_data: L.LightningDataModule  # the datamodule, or (NSL) its graph batches around it
    model: SERClassifier
    logger: TensorBoardLogger
    callbacks: list[L.Callback]
    quantization: Any  # the quantization callback (conf/quant), or None with quant=none
    transfer: Transfer | None  # what knowledge transfer did, for results.json


def build(cfg: DictConfig, output_dir: Path) -> Built:
    """Seed, data (its splits saved), [the NSL teacher and graph], the model, logger and callbacks."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: SERDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    if not rundir.is_worker():  # under srun every rank starts at once, before rank 0 claims the directory
        datamodule.save_splits(output_dir / "splits")
    transfer, training_data = None, datamodule
    if cfg.get("transfer"):
        teacher_fit = partial(
            fit, cfg, logger=_logger(cfg, "teacher"), callbacks=_callbacks(cfg, output_dir / "teacher" / "checkpoints")
        )
        graph, transfer = teach(cfg.transfer, datamodule, teacher_fit)
        training_data = GraphDataModule(datamodule, graph)
    mean, std = datamodule.standardization()
    population = datamodule.prepared.population
    speaker = (
        {}
        if population is None
        else {
            "speaker_population": (population.mean, population.std),
            "speaker_prior_weight": datamodule.speaker_prior_weight,
        }
    )
    model: SERClassifier = hydra.utils.instantiate(
        cfg.model,
        n_features=datamodule.n_features,
        classes=datamodule.classes,
        feature_mean=mean,
        feature_std=std,
        **speaker,
    )
    logger = _logger(cfg)
    quantization = hydra.utils.instantiate(cfg.quant) if cfg.get("quant") else None
    if quantization is not None:
        quantization.net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    callbacks = _callbacks(cfg) + ([quantization] if quantization is not None else [])
    return Built(datamodule, training_data, model, logger, callbacks, quantization, transfer)


def collect(cfg: DictConfig, built: Built, fitted: Fitted, output_dir: Path) -> RunResults:
    """results.json, report.md and the TensorBoard summary of a fitted run."""
    datamodule, model, logger, quantization = built.datamodule, built.model, built.logger, built.quantization
    n_params = model.n_params()
    baseline = Baseline(
        val_acc=float(fitted.val["val/acc"]),
        val_uar=float(fitted.val["val/uar"]),
        test_acc=float(fitted.test["test/acc"]),
        test_uar=float(fitted.test["test/uar"]),
        test_f1=float(fitted.test["test/f1"]),
        size_kb=model_size_kb(model.net, {}),
        avg_bits=FP32_BITS,
        confusion_matrix=model.last_confusion.tolist() if model.last_confusion is not None else None,
    )
    quantized = quantization.results if quantization is not None else None
    classic, classic_predictions = _classic(cfg, datamodule)
    results = RunResults(
        data=datamodule.corpus,
        seed=int(cfg.seed),
        model=type(model.net).__name__,
        n_params=n_params,
        classes=datamodule.classes,
        baseline=baseline,
        timing_s=Timing(features=datamodule.prepared.feature_seconds, train=fitted.seconds),
        n_utterances={name: int(len(i)) for name, i in datamodule.prepared.split.parts().items()},
        skipped_files=len(datamodule.prepared.problems),
        skipped=datamodule.prepared.problems,
        best_checkpoint=fitted.best_checkpoint,
        transfer=built.transfer,
        test_predictions=_test_predictions(model, datamodule, quantization, classic_predictions),
        fixed=quantized.fixed if quantized is not None else None,
        laq=quantized.laq if quantized is not None else None,
        greedy=quantized.greedy if quantized is not None else None,
        classic=classic,
    )
    if quantization is not None:
        _report(results, output_dir, logger)
    results = replace(results, objective=objective(results, cfg.get("bit_budget")))
    metrics = {f"hparams/{k}": getattr(baseline, k) for k in ("val_acc", "test_acc", "test_uar")}
    if results.laq is not None:
        metrics.update({f"hparams/laq_{k}": getattr(results.laq.scores, k) for k in ("test_acc", "avg_bits")})
    for record in classic or []:
        metrics.update({f"hparams/{record.name}_{k}": getattr(record, k) for k in ("test_acc", "test_uar")})
    logger.log_hyperparams(_hparams(cfg), metrics=metrics)
    logger.finalize("success")
    results.save(output_dir / FILENAME)
    log.info(
        "test accuracy %.4f, UAR %.4f (val %.4f) with %d parameters; results in %s",
        baseline.test_acc,
        baseline.test_uar,
        baseline.val_acc,
        n_params,
        output_dir / FILENAME,
    )
    return results


def train(cfg: DictConfig, output_dir: str | Path) -> RunResults | None:
    """Build → fit → collect: run the configured experiment and return (and write) its results;
    None in a DDP worker process (only rank 0 reports and writes)."""
    output_dir = Path(output_dir)
    built = build(cfg, output_dir)
    fitted = fit(cfg, built.model, built.training_data, built.logger, built.callbacks)
    if not fitted.global_zero:
        return None
    return collect(cfg, built, fitted, output_dir)
