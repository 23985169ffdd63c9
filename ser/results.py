"""results.json as typed records: the one definition of what a run's numbers are.

A run writes one ``RunResults`` (``pipeline.collect``); ``ser report``, ``ser export`` and the
tests read it back with ``RunResults.load``. Accuracies are fractions, sizes in KB (1000 bytes).
Records serialise to exactly the keys and values results.json had before it was versioned,
plus ``schema_version`` first; a field marked optional (``_optional``) is left out of the file
when it is None, because older files and some runs lack it (e.g. ``laq.recovery`` without
recovery), whereas a plain ``X | None`` field is written as null. A field added later with the
value older files meant (``_since``, e.g. ``QuantizerRecord.bias_bits`` = 32) is left out while it
holds that value, and read as it from files that lack it, so older files round-trip unchanged.

Version history (``SCHEMA_VERSION``):

1. the layout below; files written before the version was recorded have no ``schema_version``
   and are read as version 1 (their content is the same).

Pure Python (no torch): ``ser report`` reads sweeps on machines without the training stack.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ser.errors import SERError
from ser.io import write_json

SCHEMA_VERSION = 1
FILENAME = "results.json"


def _optional(**kwargs: Any) -> Any:
    """A field that older files (or some runs) lack: None, and then left out of the file."""
    return field(default=None, metadata={"omit_none": True}, **kwargs)


def _since(default: Any) -> Any:
    """A field added later: ``default`` is what files without it meant; written only when it differs."""
    return field(default=default, metadata={"omit_default": True})


def _flat() -> Any:
    """A record whose fields are written inline into the enclosing object, at this position."""
    return field(metadata={"flatten": True})


# -- records -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Scores:
    """One model's accuracy and size: every quantized row has these (written inline)."""

    val_acc: float
    test_acc: float
    test_uar: float  # unweighted average recall (macro recall), the SER field's standard
    size_kb: float  # weights at their bit-width, biases at the quantizer's bias_bits, scales at 32 bits
    avg_bits: float


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """The full-precision model's best checkpoint."""

    val_acc: float
    val_uar: float | None = _optional()  # older runs did not record it
    test_acc: float
    test_uar: float
    test_f1: float
    size_kb: float
    avg_bits: int  # 32
    confusion_matrix: list[list[int]] | None  # test split, rows = true class


@dataclass(frozen=True, kw_only=True)
class FixedRow:
    """Every layer at ``bits``."""

    bits: int
    scores: Scores = _flat()


@dataclass(frozen=True, kw_only=True)
class Tried:
    bits: int
    drop: float  # percentage points below the full-precision score


@dataclass(frozen=True, kw_only=True)
class LayerRecord:
    """One layer's importance (Eq. 1-4) and the search's choice for it (Eq. 5)."""

    name: str
    params: int
    n_p: float
    n_e: float
    n_v: float
    importance: float
    rank: int
    margin: float  # percentage points
    bits: int
    drop: float | None = _optional()
    fallback: bool | None = _optional()  # no width was within the margin
    tried: list[Tried] | None = _optional()  # every width measured, in order


@dataclass(frozen=True, kw_only=True)
class QuantizerRecord:
    per_channel: bool
    mse_clip: bool
    grid: str
    scale: str
    bias_correction: bool
    bias_bits: int = _since(32)  # float32 biases and statistics: the paper's, and every run before narrow storage
    stats_bits: int = _since(32)


@dataclass(frozen=True, kw_only=True)
class Signal:
    fidelity_weight: float
    fallback: str


@dataclass(frozen=True, kw_only=True)
class BudgetStep:
    """One allocation the budget refinement stood on (``quant.search.budget_refine``)."""

    bits: dict[str, int]
    quality: float  # the search's score of it
    file_kb: float


@dataclass(frozen=True, kw_only=True)
class Budget:
    target_kb: float | None
    target_bits: float | None
    met: bool
    t_margin: float  # the margin of the T_margin ladder's allocation
    file_kb: float | None = _optional()  # the model file's estimated size
    # the ladder's allocation, then each one the refinement moved to (the last is kept); absent without refinement
    refinement: list[BudgetStep] | None = _optional()


@dataclass(frozen=True, kw_only=True)
class CurvePoint:
    epoch: int
    val_kl: float
    val_acc: float


@dataclass(frozen=True, kw_only=True)
class Recovery:
    """Quantization-aware fine-tuning after the search; epoch ``chosen_epoch`` (0 = none) ships."""

    epochs: int
    chosen_epoch: int
    lr: float
    distill: float
    temperature: float
    seconds: float
    curve: list[CurvePoint]


@dataclass(frozen=True, kw_only=True)
class QAT:
    """Legacy report-only fine-tuning at the LAQ bits (``quant.qat.epochs``)."""

    scores: Scores = _flat()
    epochs: int


@dataclass(frozen=True, kw_only=True)
class LAQ:
    """The shipped LAQ model (after recovery, when there was one) and how it was found."""

    scores: Scores = _flat()
    t_margin: float
    weights: dict[str, float]  # w_p, w_e, w_v of Eq. 4
    evaluations: int
    search_s: float
    quantizer: QuantizerRecord | None = _optional()
    signal: Signal | None = _optional()
    layers: list[LayerRecord]
    budget: Budget | None = _optional()  # with quant.search.target_kb / quant.search.target_bits
    before_recovery: Scores | None = _optional()
    recovery: Recovery | None = _optional()
    qat: QAT | None = _optional()

    @property
    def bits(self) -> dict[str, int]:
        return {layer.name: layer.bits for layer in self.layers}


@dataclass(frozen=True, kw_only=True)
class Greedy:
    """The sensitivity-greedy allocation (``quant.greedy``), a comparison baseline."""

    scores: Scores = _flat()
    bits: dict[str, int]
    evaluations: int
    search_s: float


@dataclass(frozen=True, kw_only=True)
class ClassicRecord:
    """A classical reference model (``classic=svm``) trained on the run's own inputs and split."""

    name: str  # its key in test_predictions.models: svm (RBF kernel), svm_linear
    kernel: str
    C: float  # chosen by cross-validation inside the training part
    inner_uar: float  # that cross-validation's UAR at the chosen C
    train_utterances: int
    test_acc: float
    test_uar: float
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Teacher:
    model: str
    n_params: int
    classes: list[str]
    source_val_acc: float
    source_test_acc: float


@dataclass(frozen=True, kw_only=True)
class ZeroShot:
    """The teacher on this corpus' test split, over the emotions both share."""

    test_acc: float | None
    n: int
    shared_classes: list[str]


@dataclass(frozen=True, kw_only=True)
class GraphStats:
    k: int
    threshold: float | None
    nodes: int
    edges: int
    mean_weight: float
    label_agreement: float
    chance_agreement: float


@dataclass(frozen=True, kw_only=True)
class Transfer:
    """What NSL knowledge transfer did (``transfer=nsl``)."""

    source: str
    teacher: Teacher
    zero_shot: ZeroShot
    graph: GraphStats


@dataclass(frozen=True, kw_only=True)
class TestPredictions:
    """Every test utterance's label and each model's class (indices into ``classes``); ``ser report``
    pools them over folds. Models: ``baseline``, ``fixed/<bits>``, ``laq``, ``laq_before_recovery``,
    ``laq_qat``, ``greedy``, and the classical references ``svm`` (RBF kernel) and ``svm_linear``."""

    __test__ = False  # not a pytest class

    paths: list[str]
    speakers: list[str | None]
    labels: list[int]
    models: dict[str, list[int]]


@dataclass(frozen=True, kw_only=True)
class Timing:
    features: float
    train: float


@dataclass(frozen=True, kw_only=True)
class Quantization:
    """What the quantization callback adds: ``fixed`` (present, maybe empty, unless quant=none),
    ``laq`` and ``greedy``."""

    fixed: list[FixedRow] = field(default_factory=list)
    laq: LAQ | None = None
    greedy: Greedy | None = None


@dataclass(frozen=True, kw_only=True)
class RunResults:
    """One run's results.json."""

    data: str
    seed: int
    model: str
    n_params: int
    classes: list[str]
    baseline: Baseline
    timing_s: Timing
    n_utterances: dict[str, int]
    skipped_files: int
    skipped: list[str]
    best_checkpoint: str | None
    transfer: Transfer | None = _optional()
    test_predictions: TestPredictions | None = _optional()
    fixed: list[FixedRow] | None = _optional()  # None: trained with quant=none
    laq: LAQ | None = _optional()
    greedy: Greedy | None = _optional()
    classic: list[ClassicRecord] | None = _optional()  # with classic=svm
    objective: float | None = _optional()  # what train.py returns to a sweeper

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **_encode(self)}

    @classmethod
    def from_json(cls, data: Any) -> RunResults:
        """Raise ``ValueError`` naming the field at fault (``load`` adds the file)."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("schema_version", 1)
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise ValueError(f"schema_version {version!r} is not one this ser reads ({SCHEMA_VERSION}); upgrade ser")
        return _decode(cls, data, "")

    def save(self, path: str | Path) -> None:
        """Atomically: a reader (``ser report`` over a running sweep) never sees half a file."""
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> RunResults:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SERError(f"{path}: cannot read results ({str(exc).splitlines()[0]})") from exc
        try:
            return cls.from_json(data)
        except ValueError as exc:
            raise SERError(f"{path}: {exc}") from exc


# -- (de)serialisation ---------------------------------------------------------------------


def _encode(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.metadata.get("flatten"):
            out.update(_encode(value))
        elif not (value is None and f.metadata.get("omit_none")) and not (
            f.metadata.get("omit_default") and value == f.default
        ):
            out[f.name] = _encode_value(value)
    return out


def _encode_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return _encode(value)
    if isinstance(value, (list, tuple)):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode_value(v) for k, v in value.items()}
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _decode(cls: type, data: Any, where: str) -> Any:
    """``cls`` from a JSON object; a flattened field takes its own keys from the same object."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'results'}: expected an object, got {type(data).__name__}")
    hints, values, used = _hints(cls), {}, set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("flatten"):
            sub = hints[f.name]
            keys = {g.name for g in dataclasses.fields(sub)}
            values[f.name] = _decode(sub, {k: v for k, v in data.items() if k in keys}, where)
            used |= keys
        elif f.name in data:
            values[f.name] = _value(hints[f.name], data[f.name], f"{where}{f.name}")
            used.add(f.name)
        elif f.metadata.get("omit_none"):
            values[f.name] = None
        elif f.metadata.get("omit_default"):
            values[f.name] = f.default
        else:
            raise ValueError(f"{where}{f.name} is missing")
    unknown = sorted(set(data) - used)
    if unknown:
        raise ValueError(f"unknown field {where}{unknown[0]}")
    return cls(**values)


def _value(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _value(hint, value, where)
    if dataclasses.is_dataclass(hint):
        return _decode(hint, value, f"{where}.")
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {_kind(value)}")
        return [_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {_kind(value)}")
        return {k: _value(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value  # JSON writes 1.0 as 1.0, but a hand-made file may say 1
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{where}: expected {hint.__name__}, got {_kind(value)}")


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:60]
