"""The quantization steps, each a function of a ``Session`` and its own config: the fixed-width
sweep, the LAQ search, recovery, the legacy QAT fine-tuning and the sensitivity-greedy baseline.

``LayerwiseAdaptiveQuantization`` (callback.py) takes the configs (``ser.quant.config``), calls
these in order on a copy of the best checkpoint, logs and saves; the steps themselves need no
Trainer, so tests drive each one on a small network. A step leaves the module holding the last
model it scored (the search and recovery: the model they report); the caller restores it with
``session.weights.restore()``.

The training split (fidelity to the full-precision model, bias-correction statistics, recovery
training) and the validation split (accuracy, recovery's epoch choice) drive every choice; the
test split is only scored, so test numbers never influence a choice.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ser.quant import quantizer
from ser.quant.config import LAQConfig, QATConfig, QuantizerConfig, RecoveryConfig, SearchConfig
from ser.quant.evaluation import SplitTensors, accuracy, logits, predict, scores
from ser.quant.importance import layer_importance
from ser.quant.quantizer import QuantizedTensor, QuantizedWeights
from ser.quant.search import budget_search, greedy_search, laq_search
from ser.results import (
    LAQ,
    QAT,
    Budget,
    BudgetStep,
    CurvePoint,
    FixedRow,
    Greedy,
    LayerRecord,
    QuantizerRecord,
    Recovery,
    Scores,
    Signal,
    Tried,
)

log = logging.getLogger(__name__)


# -- the shared state ---------------------------------------------------------------------


@dataclass
class Session:
    """One module being quantized: its splits, the quantizer, and each scored model's test predictions
    (``predictions[name]``, pooled by ``ser report``)."""

    module: nn.Module
    weights: QuantizedWeights
    val: SplitTensors
    test: SplitTensors
    train: SplitTensors | None
    quantizer: QuantizerConfig
    n_classes: int
    baseline_val: float  # the full-precision model's validation accuracy
    predictions: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        module: nn.Module,
        val: SplitTensors,
        test: SplitTensors,
        train_loader: Callable[[], Iterable] | None,
        config: QuantizerConfig,
        needs_train: bool,
    ) -> Session:
        """Collect the training split only when a step needs it (``needs_train``); bias correction's input
        means come from it, or from validation when there is no training loader."""
        n_classes = int(torch.cat([val.targets, test.targets]).max()) + 1
        train = (
            SplitTensors.collect(train_loader(), val.inputs.device)
            if train_loader is not None and needs_train
            else None
        )
        means = (
            quantizer.mean_inputs(module, train.inputs if train is not None else val.inputs)
            if config.bias_correction
            else None
        )
        weights = QuantizedWeights(module, config, means)
        return cls(module, weights, val, test, train, config, n_classes, accuracy(module, val))

    @property
    def quantizer_record(self) -> QuantizerRecord:
        return QuantizerRecord(**self.quantizer.as_dict())

    def scores(self, allocation: dict[str, int], name: str) -> Scores:
        """The module as it is now (holding ``allocation``), scored; its test predictions kept as ``name``."""
        preds = predict(self.module, self.test)
        self.predictions[name] = preds.cpu().tolist()
        test_acc, test_uar = scores(preds, self.test.targets, self.n_classes)
        return Scores(
            val_acc=accuracy(self.module, self.val),
            test_acc=test_acc,
            test_uar=test_uar,
            size_kb=quantizer.model_size_kb(self.module, allocation, self.quantizer),
            avg_bits=quantizer.average_bits(self.module, allocation),
        )


# -- fixed widths -------------------------------------------------------------------------


def fixed_sweep(session: Session, bits: Iterable[int]) -> list[FixedRow]:
    """Every layer at each width of ``bits`` (the paper's fixed 8…1 rows)."""
    rows = []
    for b in bits:
        allocation = {name: b for name in session.weights.layers}
        session.weights.apply(allocation)
        rows.append(FixedRow(bits=b, scores=session.scores(allocation, f"fixed/{b}")))
    return rows


# -- the LAQ search -----------------------------------------------------------------------


class Scorer:
    """The search's quality of an allocation, memoised.

    quality = (1 − λ)·validation accuracy + λ·agreement with the full-precision model's
    predictions on the training and validation utterances (λ = ``fidelity_weight``; 0 is the
    paper). The full-precision model scores (1 − λ)·val acc + λ.
    """

    def __init__(
        self,
        module: nn.Module,
        weights: QuantizedWeights,
        val: SplitTensors,
        fidelity: SplitTensors | None,
        fidelity_weight: float,
    ):
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


def _evaluator(session: Session):
    """Validation accuracy with a {layer: bits} allocation swapped in, measured every time (the paper's
    search and greedy, so evaluation counts stay comparable)."""

    def evaluate(allocation: dict[str, int]) -> float:
        session.weights.apply(allocation)
        return accuracy(session.module, session.val)

    return evaluate


def _budget_search(session: Session, config: LAQConfig, importance, scorer: Scorer):
    """Eq. 5 at the T_margin that fits the size budget best, and what the budget came to."""
    module, bit_range = session.module, config.bit_range

    def fits(allocation: dict[str, int]) -> float:  # ≤ 1 when every budget is met
        ratios = [0.0]
        if config.target_kb is not None:
            ratios.append(quantizer.file_size_kb(module, allocation, session.quantizer) / config.target_kb)
        if config.target_bits is not None:
            ratios.append(quantizer.average_bits(module, allocation) / config.target_bits)
        return max(ratios)

    search, met = budget_search(
        importance, scorer, scorer.baseline, fits, 1.0, bit_range, config.fallback, refine=config.budget_refine
    )
    file_kb = quantizer.file_size_kb(module, search.bits, session.quantizer)
    steps = [
        BudgetStep(bits=bits, quality=quality, file_kb=quantizer.file_size_kb(module, bits, session.quantizer))
        for bits, quality in search.refinement
    ]
    if len(steps) > 1:
        log.info(
            "LAQ: budget refinement %s (score %.4f) -> %s (score %.4f) in %d step(s)",
            steps[0].bits,
            steps[0].quality,
            steps[-1].bits,
            steps[-1].quality,
            len(steps) - 1,
        )
    if not met:
        log.warning(
            "LAQ: the size budget (target_kb=%s, target_bits=%s) cannot be met with %s-bit layers; "
            "shipping the smallest allocation found: a file of about %.1f KB, %.2f bits%s",
            config.target_kb,
            config.target_bits,
            min(bit_range),
            file_kb,
            quantizer.average_bits(module, search.bits),
            _narrower(session, search.bits, config),
        )
    return search, Budget(
        target_kb=config.target_kb,
        target_bits=config.target_bits,
        met=met,
        t_margin=search.t_margin,
        file_kb=file_kb,
        refinement=steps or None,
    )


def _narrower(session: Session, allocation: dict[str, int], config: LAQConfig) -> str:
    """The way out of a missed file budget when biases or statistics are stored at 32 bits."""
    if config.target_kb is None or (session.quantizer.bias_bits < 32 and session.quantizer.stats_bits < 32):
        return ""
    narrow = replace(
        session.quantizer,
        bias_bits=min(8, session.quantizer.bias_bits),
        stats_bits=min(16, session.quantizer.stats_bits),
    )
    kb = quantizer.file_size_kb(session.module, allocation, narrow)
    return (
        f" (with quant.quantizer.bias_bits={narrow.bias_bits} quant.quantizer.stats_bits={narrow.stats_bits} it would be about "
        f"{kb:.1f} KB)"
    )


def laq(session: Session, config: LAQConfig) -> tuple[LAQ, dict[str, QuantizedTensor]]:
    """Importance (Eq. 1–4) and the search (Eq. 5): the LAQ row and each layer's quantized tensor.
    Leaves the module holding the allocation."""
    session.weights.restore()
    importance = layer_importance(session.module, config.weights, config.entropy_bins)
    t_margin, bit_range = config.t_margin, config.bit_range
    start = time.perf_counter()
    budget = None
    if config.fidelity_weight > 0:
        train, val = session.train, session.val
        fidelity = (
            val
            if train is None
            else SplitTensors(torch.cat([train.inputs, val.inputs]), torch.cat([train.targets, val.targets]))
        )
        scorer = Scorer(session.module, session.weights, val, fidelity, config.fidelity_weight)
    elif not config.budgeted and not session.quantizer.bias_correction and config.fallback == "max":
        scorer = None  # the paper's search, evaluation for evaluation (no memoisation: counts stay comparable)
    else:
        scorer = Scorer(session.module, session.weights, session.val, None, 0.0)
    if scorer is None:
        search = laq_search(importance, _evaluator(session), session.baseline_val, t_margin, bit_range)
    elif config.budgeted:
        search, budget = _budget_search(session, config, importance, scorer)
    else:
        search = laq_search(importance, scorer, scorer.baseline, t_margin, bit_range, config.fallback)
    search_s = time.perf_counter() - start
    session.weights.apply(search.bits)
    row = session.scores(search.bits, "laq")
    by_name = {c.layer.name: c for c in search.choices}
    record = LAQ(
        scores=row,
        t_margin=search.t_margin if search.t_margin is not None else t_margin,
        weights=config.weights.as_dict(),
        evaluations=search.evaluations,
        search_s=search_s,
        quantizer=session.quantizer_record,
        signal=Signal(fidelity_weight=config.fidelity_weight, fallback=config.fallback),
        layers=[
            LayerRecord(
                name=l.name,
                params=l.params,
                n_p=l.n_p,
                n_e=l.n_e,
                n_v=l.n_v,
                importance=l.importance,
                rank=by_name[l.name].rank,
                margin=by_name[l.name].margin,
                bits=by_name[l.name].bits,
                drop=by_name[l.name].drop,
                fallback=by_name[l.name].fallback,
                tried=[Tried(bits=b, drop=d) for b, d in by_name[l.name].tried],
            )
            for l in importance
        ],
        budget=budget,
    )
    log.info(
        "LAQ: bits %s, average %.2f bits, %.1f KB, val %.4f (full precision %.4f), test %.4f; %d evaluations in %.2f s",
        search.bits,
        row.avg_bits,
        row.size_kb,
        row.val_acc,
        session.baseline_val,
        row.test_acc,
        search.evaluations,
        search_s,
    )
    return record, {n: session.weights.tensor(n, b) for n, b in search.bits.items()}


# -- recovery -----------------------------------------------------------------------------


class _FixedScaleSTE(nn.Module):
    """Recovery: the grid at the scales the search chose, straight-through gradient."""

    def __init__(self, bits: int, grid: str, scales: torch.Tensor, per_channel: bool):
        super().__init__()
        self.bits, self.grid, self.per_channel = bits, grid, per_channel
        self.register_buffer("scales", scales.detach().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return quantizer.fake_quantize(weight, self.bits, self.grid, self.scales, self.per_channel)


class _StoredBiasSTE(nn.Module):
    """Recovery: the bias as the file stores it (``bias_bits``), straight-through gradient."""

    def __init__(self, config: QuantizerConfig):
        super().__init__()
        self.config = config

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        return bias + (quantizer.store_bias(bias, self.config) - bias).detach()


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean KL(teacher ‖ student) of softened class distributions."""
    return F.kl_div(
        F.log_softmax(student / temperature, 1),
        F.log_softmax(teacher / temperature, 1),
        log_target=True,
        reduction="batchmean",
    )


def recover(session: Session, found: LAQ, config: RecoveryConfig) -> tuple[LAQ, dict[str, QuantizedTensor]]:
    """QAT at the chosen bits and scales on the training split, distilled from the full-precision model;
    the epoch (0 = none) with the lowest validation KL to full precision is kept. The model trains as
    it will be stored: weights on their grid, biases at ``bias_bits`` (both straight-through) and
    statistics at ``stats_bits``.

    The recovered model IS the LAQ model: the returned row scores it (the search's numbers move to
    ``before_recovery``, its predictions to ``laq_before_recovery``), the module holds it (dequantized
    weights, trained biases) and the returned tensors are its codes.
    """
    module, train, val, allocation = session.module, session.train, session.val, found.bits
    assert train is not None, "recovery trains on the training split"
    session.predictions["laq_before_recovery"] = session.predictions["laq"]
    start = time.perf_counter()
    layers = quantizer.quantizable_layers(module)
    tensors = {name: session.weights.tensor(name, bits) for name, bits in allocation.items()}
    session.weights.restore()
    teacher_val, teacher_train = logits(module, val), logits(module, train)  # the full-precision model
    with torch.no_grad():  # start: full-precision latent weights, bias-corrected biases, statistics as stored
        for name, bits in allocation.items():
            if getattr(layers[name], "bias", None) is not None:
                layers[name].bias.copy_(session.weights.bias(name, bits))
    session.weights.hold_statistics(stored=True)
    stored_bias = session.quantizer.bias_bits < 32
    for name, bits in allocation.items():
        t = tensors[name]
        parametrize.register_parametrization(
            layers[name], "weight", _FixedScaleSTE(bits, t.grid, t.scales, session.quantizer.per_channel)
        )
        if stored_bias and getattr(layers[name], "bias", None) is not None:
            parametrize.register_parametrization(layers[name], "bias", _StoredBiasSTE(session.quantizer))
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    T, d = config.temperature, config.distill

    def val_kl() -> float:
        with torch.no_grad():
            return float(_kl(logits(module, val), teacher_val))

    curve = [CurvePoint(epoch=0, val_kl=val_kl(), val_acc=accuracy(module, val))]
    best_epoch, best_kl = 0, curve[0].val_kl
    best_state = copy.deepcopy(module.state_dict())
    device = val.inputs.device
    generator = torch.Generator().manual_seed(config.seed)
    try:
        for epoch in range(1, config.epochs + 1):
            module.train()
            order = torch.randperm(len(train.inputs), generator=generator).to(device)
            for i in range(0, len(order), config.batch_size):
                idx = order[i : i + config.batch_size]
                x, y, target = train.inputs[idx], train.targets[idx], teacher_train[idx]
                out = module(x)
                loss = (
                    (1 - d) * F.cross_entropy(out, y) + d * T * T * _kl(out, target, T)
                    if d > 0
                    else F.cross_entropy(out, y)
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            module.eval()
            kl = val_kl()
            curve.append(CurvePoint(epoch=epoch, val_kl=kl, val_acc=accuracy(module, val)))
            if kl < best_kl - 1e-9:
                best_epoch, best_kl, best_state = epoch, kl, copy.deepcopy(module.state_dict())
        module.load_state_dict(best_state)
    finally:  # bake the quantized weights (and stored biases, below) in, so the model is plain again
        for name in allocation:
            for tensor in ("weight", "bias"):
                if parametrize.is_parametrized(layers[name], tensor):
                    parametrize.remove_parametrizations(layers[name], tensor, leave_parametrized=False)
    module.eval()
    shipped = quantizer.quantize_(
        module, allocation, session.quantizer, {name: t.scales for name, t in tensors.items()}
    )
    recovery = Recovery(
        epochs=config.epochs,
        chosen_epoch=best_epoch,
        lr=config.lr,
        distill=d,
        temperature=T,
        seconds=time.perf_counter() - start,
        curve=curve,
    )
    row = session.scores(allocation, "laq")
    log.info(
        "LAQ after %d/%d recovery epochs: val %.4f, test %.4f (before: val %.4f, test %.4f); %.2f s",
        best_epoch,
        config.epochs,
        row.val_acc,
        row.test_acc,
        found.scores.val_acc,
        found.scores.test_acc,
        recovery.seconds,
    )
    return replace(found, scores=row, before_recovery=found.scores, recovery=recovery), shipped


# -- legacy QAT fine-tuning ---------------------------------------------------------------


class _StraightThrough(nn.Module):
    """Quantized weight in the forward pass, identity gradient in the backward pass (scales re-fit each step)."""

    def __init__(self, bits: int, config: QuantizerConfig):
        super().__init__()
        self.bits, self.config = bits, config

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (quantizer.quantize(weight, self.bits, self.config)[0] - weight).detach()


def fine_tune(session: Session, allocation: dict[str, int], loader: Iterable, config: QATConfig) -> QAT:
    """A few epochs of QAT from the module as it is, reported next to LAQ as ``laq_qat`` and not
    shipped: the module is put back as it was."""
    module, device = session.module, session.val.inputs.device
    layers = quantizer.quantizable_layers(module)
    original = {k: v.clone() for k, v in module.state_dict().items()}
    for name, bits in allocation.items():
        parametrize.register_parametrization(layers[name], "weight", _StraightThrough(bits, session.quantizer))
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    try:
        for _ in range(config.epochs):
            module.train()
            for batch in loader:
                x, y = batch[0].to(device), batch[1].to(device)
                optimizer.zero_grad()
                F.cross_entropy(module(x), y).backward()
                optimizer.step()
    finally:
        for name in allocation:
            parametrize.remove_parametrizations(layers[name], "weight", leave_parametrized=True)
    module.eval()
    result = QAT(scores=session.scores(allocation, "laq_qat"), epochs=config.epochs)
    module.load_state_dict(original)
    log.info(
        "LAQ + %d epochs of QAT: val %.4f, test %.4f", config.epochs, result.scores.val_acc, result.scores.test_acc
    )
    return result


# -- the sensitivity-greedy baseline ------------------------------------------------------


def greedy(session: Session, config: SearchConfig) -> Greedy:
    """Take one bit at a time from the layer that loses least, within ``t_margin``: a comparison
    baseline at LAQ's margin, for the same report."""
    session.weights.restore()
    layers = layer_importance(session.module, config.weights, config.entropy_bins)
    search = greedy_search(layers, _evaluator(session), session.baseline_val, config.t_margin, config.bit_range)
    session.weights.apply(search.bits)
    result = Greedy(
        bits=search.bits,
        scores=session.scores(search.bits, "greedy"),
        evaluations=search.evaluations,
        search_s=search.seconds,
    )
    log.info(
        "sensitivity greedy: bits %s, average %.2f bits, val %.4f, test %.4f; %d evaluations",
        search.bits,
        result.scores.avg_bits,
        result.scores.val_acc,
        result.scores.test_acc,
        search.evaluations,
    )
    return result
