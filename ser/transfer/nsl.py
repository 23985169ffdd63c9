"""The teacher side of knowledge transfer with neural structured learning (NSL).

Chang, Ren, Nguyen, Qian and Schuller, "Knowledge transfer for on-device speech emotion
recognition with neural structured learning" (ICASSP 2023, arXiv:2210.14977): a model trained
on a *source* corpus embeds the *target* corpus' training utterances, a similarity graph is
built over those embeddings, and a lightweight student is trained on the target with a graph
regulariser (``ser.transfer.student``). The teacher never sees a target label, so the graph
carries only what the source taught it.

The teacher keeps its own features (``transfer.source.features``): the target utterances are
extracted a second time with them (and cached like any features), so a Light-SERNet student on
MFCC frames can learn from an MLP teacher on pooled vectors. Corpora are matched through the
canonical English labels only to report how the teacher does on the target directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from ser.data.datamodule import SERDataModule
from ser.data.extraction import load_features
from ser.data.problems import Problems
from ser.errors import DataError
from ser.models.module import SERClassifier
from ser.results import GraphStats, Teacher, Transfer, ZeroShot
from ser.transfer.graph import Graph, chance_agreement, knn_graph

log = logging.getLogger(__name__)


def _teacher_inputs(target: SERDataModule, source: SERDataModule) -> dict[str, torch.Tensor]:
    """The target's train and test utterances under the teacher's feature settings."""
    prepared = target.prepared
    table = load_features(
        prepared.utterances,
        source.feature_config,
        Problems("raise"),
        source.cache_dir,
        target.checks,
        source.extract_device,
        source.extract_batch_size,
    )
    rows = {u.path: i for i, u in enumerate(table.utterances)}
    inputs = {}
    for part in ("train", "test"):
        paths = [prepared.utterances[i].path for i in getattr(prepared.split, part)]
        missing = [str(p) for p in paths if p not in rows]
        if missing:
            raise DataError(f"{missing[0]}: could not be read with the teacher's feature settings")
        inputs[part] = torch.from_numpy(table.features[[rows[p] for p in paths]])
    return inputs


def _zero_shot(teacher: SERClassifier, inputs: torch.Tensor, target: SERDataModule) -> ZeroShot:
    """The teacher's accuracy on the target test utterances whose emotion it knows."""
    prepared = target.prepared
    truth = [prepared.classes[i] for i in prepared.labels[prepared.split.test]]
    known = np.array([t in teacher.classes for t in truth], dtype=bool)
    with torch.no_grad():
        predicted = [teacher.classes[i] for i in teacher(inputs).argmax(dim=1).tolist()]
    hits = [p == t for p, t, k in zip(predicted, truth, known) if k]
    return ZeroShot(
        test_acc=float(np.mean(hits)) if hits else None,
        n=int(known.sum()),
        shared_classes=sorted(set(teacher.classes) & set(prepared.classes)),
    )


def teach(
    cfg: DictConfig,
    target: SERDataModule,
    fit: Callable[[SERClassifier, SERDataModule], Any],
) -> tuple[Graph, Transfer]:
    """Train the teacher on ``cfg.source`` and build the graph over ``target``'s training split;
    return the graph (``batches.GraphDataModule`` trains the student with it) and what happened,
    for results.json.

    ``fit(model, datamodule)`` trains and leaves the best checkpoint loaded (``pipeline.fit``).
    """
    source: SERDataModule = hydra.utils.instantiate(cfg.source)
    source.setup("fit")
    mean, std = source.standardization()
    teacher: SERClassifier = hydra.utils.instantiate(
        cfg.teacher, n_features=source.n_features, classes=source.classes, feature_mean=mean, feature_std=std
    )
    log.info("training the teacher on %s (%s)", source.corpus, ", ".join(source.classes))
    fitted = fit(teacher, source)
    teacher = teacher.cpu().eval()
    inputs = _teacher_inputs(target, source)
    with torch.no_grad():
        embeddings = teacher.embed(inputs["train"]).numpy()
    graph = knn_graph(embeddings, int(cfg.k), cfg.get("threshold"))
    labels = target.prepared.labels[target.prepared.split.train]
    summary = Transfer(
        source=source.corpus,
        teacher=Teacher(
            model=type(teacher.net).__name__,
            n_params=teacher.n_params(),
            classes=teacher.classes,
            source_val_acc=float(fitted.val["val/acc"]),
            source_test_acc=float(fitted.test["test/acc"]),
        ),
        zero_shot=_zero_shot(teacher, inputs["test"], target),
        graph=GraphStats(
            k=int(cfg.k),
            threshold=cfg.get("threshold"),
            nodes=len(labels),
            edges=graph.n_edges,
            mean_weight=float(graph.weights[graph.neighbors >= 0].mean()) if graph.n_edges else 0.0,
            label_agreement=graph.label_agreement(labels),
            chance_agreement=chance_agreement(labels),
        ),
    )
    log.info(
        "teacher: %.4f test accuracy on %s; graph over %d %s training utterances: %d edges, %.3f of them join "
        "the same emotion (chance %.3f)",
        summary.teacher.source_test_acc,
        source.corpus,
        len(labels),
        target.corpus,
        graph.n_edges,
        summary.graph.label_agreement,
        summary.graph.chance_agreement,
    )
    return graph, summary
