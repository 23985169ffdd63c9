"""The quantization settings: one set of defaults for Python and Hydra, the paper one override
away, the flat names of the release before still accepted, and a finished run's quantizer read back."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
from dataclasses import fields

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from ser.errors import SERError
from ser.quant.callback import LayerwiseAdaptiveQuantization
from ser.quant.config import (
    DEFAULTS,
    FLAT,
    UNRECORDED,
    ImportanceWeights,
    LAQConfig,
    QATConfig,
    QuantizationConfig,
    QuantizerConfig,
    RecoveryConfig,
    SearchConfig,
    hydra_node,
    recorded_quantizer,
    with_flat,
)
from tests.conftest import REPO

PAPER_QUANTIZER = QuantizerConfig(grid="symmetric", scale="max", bias_bits=32, stats_bits=32)


@pytest.fixture
def quant():
    """``cfg.quant`` as the command line composes it with ``overrides``, in process (no run)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield lambda *overrides: compose("train", overrides=list(overrides)).quant
    GlobalHydra.instance().clear()


def test_python_train_py_instantiates_the_callback_with_the_python_defaults(quant):
    from_hydra = instantiate(quant(), save_dir=None)
    assert from_hydra.config == LayerwiseAdaptiveQuantization().config == QuantizationConfig()


def test_each_nested_group_instantiates_its_dataclass_at_its_defaults(quant):
    cfg = quant()
    assert instantiate(cfg.quantizer) == QuantizerConfig(grid="full", scale="mse", bias_bits=8, stats_bits=16)
    assert instantiate(cfg.search) == LAQConfig(
        t_margin=4.0,
        weights=ImportanceWeights(0.11, 0.01, 0.88),
        fidelity_weight=0.5,
        fallback="best",
        budget_refine=True,
    )
    assert instantiate(cfg.recovery) == RecoveryConfig(epochs=20, lr=1e-3, distill=0.5)
    assert instantiate(cfg.qat) == QATConfig(epochs=0, lr=1e-4)


def test_the_papers_procedure_is_one_override_away(quant):
    paper = instantiate(quant("quant=laq_paper"), save_dir=None).config
    assert paper.quantizer == PAPER_QUANTIZER
    assert (paper.search.fidelity_weight, paper.search.fallback, paper.recovery.epochs) == (0.0, "max", 0)
    assert paper.search.t_margin == DEFAULTS.search.t_margin and paper.fixed_bits == DEFAULTS.fixed_bits


def test_a_nested_option_on_the_command_line_reaches_its_dataclass(quant):
    config = instantiate(
        quant("quant.search.t_margin=2", "quant.quantizer.grid=symmetric", "quant/weights=p0_e0_v100"), save_dir=None
    ).config
    assert (config.search.t_margin, config.quantizer.grid) == (2.0, "symmetric")
    assert config.search.weights == ImportanceWeights(0, 0, 1)


def test_a_flat_name_on_the_command_line_gives_the_same_value_and_one_deprecation_line(quant, caplog):
    nested = instantiate(quant("quant.search.t_margin=3"), save_dir=None).config
    with caplog.at_level(logging.WARNING, logger="ser.quant.config"):
        flat = instantiate(quant("quant.t_margin=3"), save_dir=None).config
    assert flat == nested and flat.search.t_margin == 3.0
    assert [r.getMessage() for r in caplog.records] == [
        (
            "quant.t_margin is deprecated and goes in the next release: use quant.search.t_margin "
            "(in Python: search=LAQConfig(t_margin=...))"
        )
    ]


OLD_NAMES = [
    ("t_margin", 3.0),
    ("weights", ImportanceWeights(1, 0, 0)),
    ("min_bits", 2),
    ("max_bits", 6),
    ("entropy_bins", 64),
    ("fidelity_weight", 0.25),
    ("fallback", "max"),
    ("target_kb", 30.0),
    ("target_bits", 2.0),
    ("budget_refine", False),
    ("grid", "symmetric"),
    ("scale", "max"),
    ("per_channel", True),
    ("mse_clip", True),
    ("bias_correction", True),
    ("bias_bits", 32),
    ("stats_bits", 32),
    ("recovery_epochs", 0),
    ("recovery_lr", 1e-2),
    ("recovery_distill", 1.0),
    ("recovery_temperature", 4.0),
    ("recovery_batch_size", 16),
    ("recovery_seed", 3),
    ("qat_epochs", 2),
    ("qat_lr", 1e-3),
]


def test_every_flat_name_of_the_release_before_is_still_accepted():
    assert sorted(FLAT) == sorted(name for name, _ in OLD_NAMES)


@pytest.mark.parametrize("name, value", OLD_NAMES)
def test_a_flat_name_sets_its_nested_option_and_names_it(name, value, caplog):
    with caplog.at_level(logging.WARNING, logger="ser.quant.config"):
        config = with_flat(DEFAULTS, {name: value})
    group, option = FLAT[name].split(".")
    assert getattr(getattr(config, group), option) == value != getattr(getattr(DEFAULTS, group), option)
    assert f"quant.{name} is deprecated" in caplog.text and f"use quant.{group}.{option} " in caplog.text


def test_the_old_weights_mapping_becomes_importance_weights():
    assert with_flat(DEFAULTS, {"weights": {"w_p": 0.5, "w_e": 0.25, "w_v": 0.25}}).search.weights == ImportanceWeights(
        0.5, 0.25, 0.25
    )


def test_unset_flat_names_change_nothing_and_say_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="ser.quant.config"):
        assert with_flat(DEFAULTS, dict.fromkeys(FLAT)) == DEFAULTS
    assert caplog.records == []


def test_an_unknown_option_is_an_error_naming_it():
    with pytest.raises(SERError, match=r"quant\.t_marign is not a quantization option"):
        LayerwiseAdaptiveQuantization(t_marign=3.0)


def test_the_hydra_node_targets_the_callback_with_its_keywords_and_every_flat_name_unset():
    node = hydra_node()
    callback = get_class(node["_target_"])
    assert callback is LayerwiseAdaptiveQuantization
    keywords = [p.name for p in inspect.signature(callback).parameters.values() if p.kind is not p.VAR_KEYWORD]
    assert keywords == [f.name for f in fields(QuantizationConfig)] + ["save_dir"]
    assert set(node) == {"_target_", *keywords, *FLAT} and all(node[name] is None for name in FLAT)


@pytest.mark.parametrize(
    "make, option",
    [
        (lambda: SearchConfig(min_bits=3, max_bits=2), "quant.search.min_bits"),
        (lambda: LAQConfig(min_bits=0), "quant.search.min_bits"),
        (lambda: LAQConfig(fidelity_weight=2.0), "quant.search.fidelity_weight"),
        (lambda: LAQConfig(fallback="min"), "quant.search.fallback"),
        (lambda: QuantizerConfig(grid="log"), "quant.quantizer.grid"),
        (lambda: QuantizerConfig(scale="l1"), "quant.quantizer.scale"),
        (lambda: RecoveryConfig(distill=1.5), "quant.recovery.distill"),
    ],
)
def test_each_config_refuses_its_own_mistakes_naming_the_option(make, option):
    with pytest.raises(SERError, match=option.replace(".", r"\.")):
        make()


def test_numbers_from_the_command_line_take_their_fields_types():
    search, recovery = LAQConfig(t_margin=4, target_kb=30), RecoveryConfig(epochs=2.0, lr=1)
    assert (search.t_margin, search.target_kb, recovery.epochs, recovery.lr) == (4.0, 30.0, 2, 1.0)
    assert (type(search.target_kb), type(recovery.epochs), type(recovery.lr)) == (float, int, float)


def test_fixed_bits_are_kept_widest_first():
    assert QuantizationConfig(fixed_bits=[2, 8, 4]).fixed_bits == (8, 4, 2)


# -- a finished run's quantizer (export) -----------------------------------------------------------------------------


def test_a_run_of_this_release_records_its_quantizer_nested(quant):
    section = OmegaConf.to_container(quant("quant.quantizer.per_channel=true"), resolve=False)  # as export reads it
    assert recorded_quantizer(section) == QuantizerConfig(per_channel=True)


def test_a_flat_config_of_the_release_before_is_read_and_its_missing_options_are_from_before_they_existed():
    old = {"t_margin": 4.0, "grid": "full", "scale": "mse", "per_channel": False, "mse_clip": False}
    assert recorded_quantizer(old) == QuantizerConfig(grid="full", scale="mse", bias_bits=32, stats_bits=32)


def test_an_artifact_from_before_narrow_storage_keeps_float32_biases_and_statistics():
    artifact = {"per_channel": False, "mse_clip": False, "grid": "full", "scale": "mse", "bias_correction": True}
    assert recorded_quantizer(artifact) == QuantizerConfig(bias_bits=32, stats_bits=32, bias_correction=True)


def test_a_run_that_recorded_no_quantizer_exports_with_the_quantizer_of_before_the_options():
    assert recorded_quantizer(None) == recorded_quantizer({}) == UNRECORDED == PAPER_QUANTIZER


def test_a_flat_name_beside_the_nested_options_wins_as_it_did_in_the_callback(quant):
    section = OmegaConf.to_container(quant("quant.grid=symmetric"), resolve=False)
    assert recorded_quantizer(section).grid == "symmetric"


def test_the_settings_import_without_torch():
    """train.py registers them before Hydra composes; export reads a run's quantizer with them."""
    code = "import sys, ser.quant.config; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
