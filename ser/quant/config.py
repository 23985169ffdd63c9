"""Every setting of the quantization callback, its default, and how Hydra and older names reach it.

One frozen dataclass per step: ``QuantizerConfig`` (weights to codes, and how the file stores
the rest), ``LAQConfig`` (the search, a ``SearchConfig`` plus its signal, fallback and budget),
``RecoveryConfig`` and ``QATConfig``, and ``QuantizationConfig`` around them (which steps run).
Their defaults are the shipped ones, here and nowhere else: ``LayerwiseAdaptiveQuantization()``
in Python and ``python train.py`` (``quant=laq``) both get them, because Hydra's ``quant/_base``
is ``hydra_node()``, built from these dataclasses (``register``), and conf/quant/*.yaml extend it.
``quant=laq_paper`` (conf/quant/laq_paper.yaml) is the paper's procedure, section 3.2.

The options nest as the dataclasses do: ``quant.quantizer.grid``, ``quant.search.t_margin``,
``quant.recovery.epochs``, ``quant.qat.lr``. The flat names of the release before
(``quant.t_margin``, ``quant.recovery_epochs``: ``FLAT``) are still accepted, each with a
one-line deprecation message, until the next release.

No torch here: train.py registers the node before Hydra composes, and export reads a finished
run's quantizer (``recorded_quantizer``) without the training stack.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any

from hydra.core.config_store import ConfigStore

from ser.dsp import grid as grids
from ser.dsp import storage
from ser.errors import SERError

log = logging.getLogger(__name__)

SCALES = ("max", "mse")
FALLBACKS = ("max", "best")
CALLBACK = "ser.quant.callback.LayerwiseAdaptiveQuantization"
_CASTS = {"float": float, "float | None": float, "int": int, "bool": bool}


def _typed(settings: Any) -> None:
    """Store every number as its field's type: Hydra and the command line give ``30`` for ``30.0``,
    and results.json should write the same number either way."""
    for f in fields(settings):
        cast, value = _CASTS.get(f.type), getattr(settings, f.name)
        if cast is not None and value is not None and type(value) is not cast:
            object.__setattr__(settings, f.name, cast(value))


@dataclass(frozen=True)
class ImportanceWeights:
    """(w_P, w_E, w_V) of Eq. 4; the default is the paper's best row of Table 3 (conf/quant/weights/).
    Kept as written (``0``, not ``0.0``): results.json and report.md show the rows as the paper does."""

    w_p: float = 0.11
    w_e: float = 0.01
    w_v: float = 0.88

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class QuantizerConfig:
    """How a weight becomes codes and a scale, and how a quantized model's file stores the rest
    (``ser.quant.quantizer``, ``ser.dsp.storage``)."""

    per_channel: bool = False  # one scale per output channel instead of per layer
    mse_clip: bool = False  # legacy clipping-ratio search on the symmetric grid (overrides ``scale``)
    grid: str = "full"  # full: all 2^b codes, levels (k - (2^b-1)/2)*s | symmetric: 2^b-1 levels with zero (paper)
    scale: str = "mse"  # mse: the scale of minimum reconstruction error | max: max|w| on the top level (paper)
    bias_bits: int = (
        8  # a quantized layer's bias in the file: 2..8 = codes, one power-of-two scale | 32 = float32 (paper)
    )
    stats_bits: int = (
        16  # standardisation statistics: 16 = bfloat16 std + float16 mean in std units | 32 = float32 (paper)
    )
    bias_correction: bool = False  # b <- b + (W - W_q) E[x], E[x] the layer's mean input on the training split

    def __post_init__(self) -> None:
        _typed(self)
        if self.grid not in grids.GRIDS:
            raise SERError(f"quant.quantizer.grid={self.grid!r} is not one of {', '.join(grids.GRIDS)}")
        if self.scale not in SCALES:
            raise SERError(f"quant.quantizer.scale={self.scale!r} is not one of {', '.join(SCALES)}")
        if self.bias_bits not in storage.BIAS_BITS:
            raise SERError(f"quant.quantizer.bias_bits={self.bias_bits} must be 2..8 (integer codes) or 32 (float32)")
        if self.stats_bits not in storage.STATS_BITS:
            raise SERError(f"quant.quantizer.stats_bits={self.stats_bits} must be 16 (float16) or 32 (float32)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# What a finished run meant by a quantizer option it does not name: the value ser used before the
# option existed, which is the paper's (a quantized.pt from before narrow storage names no
# bias_bits/stats_bits; a config from before the full grid names no grid or scale).
UNRECORDED = QuantizerConfig(grid="symmetric", scale="max", bias_bits=storage.FLOAT_BITS, stats_bits=storage.FLOAT_BITS)


@dataclass(frozen=True)
class SearchConfig:
    """What any importance-ordered allocation needs (LAQ and the sensitivity-greedy baseline)."""

    t_margin: float = 4.0  # allowed drop, in percentage points, of the most important layer (Eq. 5)
    weights: ImportanceWeights = field(default_factory=ImportanceWeights)  # Eq. 4
    min_bits: int = 1  # bit range searched, lowest first
    max_bits: int = 8
    entropy_bins: int = 256  # histogram bins of the weight-entropy estimate N_E (Eq. 2)

    def __post_init__(self) -> None:
        _typed(self)
        if isinstance(self.weights, Mapping):  # a plain {w_p, w_e, w_v}
            object.__setattr__(self, "weights", ImportanceWeights(**self.weights))
        if not grids.MIN_BITS <= self.min_bits <= self.max_bits <= grids.MAX_BITS:
            raise SERError(
                f"quant.search.min_bits..quant.search.max_bits = {self.min_bits}..{self.max_bits} "
                f"must lie within {grids.MIN_BITS}..{grids.MAX_BITS}"
            )

    @property
    def bit_range(self) -> tuple[int, ...]:
        return tuple(range(self.min_bits, self.max_bits + 1))


@dataclass(frozen=True)
class LAQConfig(SearchConfig):
    """The LAQ search: Eq. 5 with a signal (``fidelity_weight``), a fallback and an optional size budget."""

    fidelity_weight: float = 0.5  # score = (1-w) val accuracy + w agreement with full precision on train+val (0: paper)
    fallback: str = "best"  # no width within the margin: best = lowest width reaching the best score | max = paper
    target_kb: float | None = None  # size budget in KB (1000 bytes) of the .serq file: the T_margin that fits it best
    target_bits: float | None = None  # average-bit budget (Eq. 6), the same way
    budget_refine: bool = (
        True  # under a budget: uniform widths are candidates too, then one-width moves (search.budget_search)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.fidelity_weight <= 1.0:
            raise SERError(f"quant.search.fidelity_weight must be in [0, 1], got {self.fidelity_weight}")
        if self.fallback not in FALLBACKS:
            raise SERError(f"quant.search.fallback must be 'max' or 'best', got {self.fallback!r}")

    @property
    def budgeted(self) -> bool:
        return self.target_kb is not None or self.target_bits is not None


@dataclass(frozen=True)
class RecoveryConfig:
    """Quantization-aware training at the chosen bits and scales, distilled from full precision;
    the recovered model is the LAQ model (0 epochs: off, the paper)."""

    epochs: int = 20
    lr: float = 1e-3
    distill: float = 0.5  # weight of distillation from the full-precision model; the rest is cross-entropy on labels
    temperature: float = 2.0
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        _typed(self)
        if not 0.0 <= self.distill <= 1.0:
            raise SERError(f"quant.recovery.distill must be in [0, 1], got {self.distill}")


@dataclass(frozen=True)
class QATConfig:
    """Legacy report-only fine-tuning at the LAQ bits (straight-through, scales re-fit each step); 0 epochs: off."""

    epochs: int = 0
    lr: float = 1e-4

    def __post_init__(self) -> None:
        _typed(self)


@dataclass(frozen=True)
class QuantizationConfig:
    """Which steps the callback runs, and each step's settings (the callback's keyword arguments)."""

    fixed_bits: tuple[int, ...] = (8, 7, 6, 5, 4, 3, 2, 1)  # uniform widths to report, widest first (() for none)
    laq: bool = True  # run the LAQ search (then recovery and QAT); validated either way
    greedy: bool = False  # also run the sensitivity-greedy allocation at the same margin (a comparison baseline)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    search: LAQConfig = field(default_factory=LAQConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    qat: QATConfig = field(default_factory=QATConfig)

    def __post_init__(self) -> None:
        _typed(self)
        object.__setattr__(self, "fixed_bits", tuple(sorted((int(b) for b in self.fixed_bits), reverse=True)))


DEFAULTS = QuantizationConfig()

# The flat names of the release before the nested config, and the option each one is now.
FLAT: dict[str, str] = {
    **{
        name: f"quantizer.{name}"
        for name in ("per_channel", "mse_clip", "grid", "scale", "bias_bits", "stats_bits", "bias_correction")
    },
    **{
        name: f"search.{name}"
        for name in (
            "t_margin",
            "weights",
            "min_bits",
            "max_bits",
            "entropy_bins",
            "fidelity_weight",
            "fallback",
            "target_kb",
            "target_bits",
            "budget_refine",
        )
    },
    **{
        f"recovery_{name}": f"recovery.{name}"
        for name in ("epochs", "lr", "distill", "temperature", "batch_size", "seed")
    },
    **{f"qat_{name}": f"qat.{name}" for name in ("epochs", "lr")},
}


def with_flat(config: QuantizationConfig, flat: Mapping[str, Any]) -> QuantizationConfig:
    """``config`` with the options given by their flat names (``FLAT``; ``None``: not given), each
    announced with a one-line deprecation message naming the new option. The flat name wins, as
    the one the user typed."""
    unknown = sorted(set(flat) - set(FLAT))
    if unknown:
        raise SERError(
            f"quant.{unknown[0]} is not a quantization option; the options are quant.fixed_bits, quant.laq, "
            "quant.greedy, quant.save_dir and quant.{quantizer,search,recovery,qat}.* (ser/quant/config.py)"
        )
    changes: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        if value is None:
            continue
        group, option = FLAT[name].split(".")
        log.warning(
            "quant.%s is deprecated and goes in the next release: use quant.%s (in Python: %s=%s(%s=...))",
            name,
            FLAT[name],
            group,
            type(getattr(config, group)).__name__,
            option,
        )
        changes.setdefault(group, {})[option] = value
    return replace(config, **{group: replace(getattr(config, group), **values) for group, values in changes.items()})


def recorded_quantizer(section: Mapping[str, Any] | None) -> QuantizerConfig:
    """The quantizer a finished run used, from what it recorded: its config's ``quant`` section
    (nested; or flat, before this release) or its ``quantized.pt``'s ``quantizer``. An option the
    record does not name (a run from before the option, or with ``quant=none``) gets the value
    from before the option existed (``UNRECORDED``), so such runs export as they always did; a
    nested section comes from this release on and names every option. A flat name beside the
    nested ones wins, as it did in the callback."""
    section = dict(section or {})
    nested = section.get("quantizer")
    options = {f.name for f in fields(QuantizerConfig)}
    values = {k: v for k, v in nested.items() if k in options} if isinstance(nested, Mapping) else {}
    values.update({name: value for name, value in section.items() if name in options and value is not None})
    return replace(QuantizerConfig() if isinstance(nested, Mapping) else UNRECORDED, **values)


def _node(value: Any) -> Any:
    if is_dataclass(value):
        return {
            "_target_": f"{type(value).__module__}.{type(value).__qualname__}",
            **{f.name: _node(getattr(value, f.name)) for f in fields(value)},
        }
    return list(value) if isinstance(value, tuple) else value


def hydra_node() -> dict[str, Any]:
    """``quant/_base``: the callback with every option at its default (``DEFAULTS``, each step a
    ``_target_`` that instantiates its dataclass) and the deprecated flat names unset (``null``),
    so that ``quant.t_margin=3`` still parses."""
    return {**_node(DEFAULTS), "_target_": CALLBACK, "save_dir": None, **dict.fromkeys(FLAT)}


def register() -> None:
    """Store ``hydra_node()`` as ``quant/_base`` in Hydra's config store, which conf/quant/laq.yaml
    starts from; train.py calls this before Hydra composes (and so must any other composer)."""
    ConfigStore.instance().store(group="quant", name="_base", node=hydra_node())
