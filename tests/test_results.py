"""results.json through ``ser.results``: round trip, schema version, older files, malformed fields."""

from __future__ import annotations

import copy
import json

import pytest

from ser.errors import SERError
from ser.results import SCHEMA_VERSION, RunResults

# A run's results.json as train.py wrote it before the schema was versioned (values from a real
# run on the built-in corpus, lists shortened): LAQ with recovery, one fixed row, two utterances.
UNVERSIONED = {
    "data": "synthetic",
    "seed": 0,
    "model": "MLP",
    "n_params": 211207,
    "classes": ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"],
    "baseline": {
        "val_acc": 0.9107142686843872,
        "val_uar": 0.910714328289032,
        "test_acc": 0.9285714030265808,
        "test_uar": 0.9285714626312256,
        "test_f1": 0.9278911352157593,
        "size_kb": 844.828,
        "avg_bits": 32,
        "confusion_matrix": [[8, 0], [0, 8]],
    },
    "timing_s": {"features": 0.031, "train": 9.2},
    "n_utterances": {"train": 448, "val": 56, "test": 56},
    "skipped_files": 0,
    "skipped": [],
    "best_checkpoint": "/runs/a/checkpoints/best.ckpt",
    "test_predictions": {
        "paths": ["/c/s1/anger/s1_anger_00.wav", "/c/s2/fear/s2_fear_03.wav"],
        "speakers": ["s1", "s2"],
        "labels": [0, 2],
        "models": {"baseline": [0, 2], "fixed/2": [0, 1], "laq": [0, 2], "laq_before_recovery": [0, 1]},
    },
    "fixed": [
        {
            "bits": 2,
            "val_acc": 0.6607142686843872,
            "test_acc": 0.6428571343421936,
            "test_uar": 0.6428571343421936,
            "size_kb": 53.632,
            "avg_bits": 2.0,
        }
    ],
    "laq": {
        "val_acc": 0.8928571343421936,
        "test_acc": 0.9107142686843872,
        "test_uar": 0.9107142686843872,
        "size_kb": 34.904,
        "avg_bits": 1.2247,
        "t_margin": 4.0,
        "weights": {"w_p": 0.11, "w_e": 0.01, "w_v": 0.88},
        "evaluations": 9,
        "search_s": 0.41,
        "quantizer": {
            "per_channel": False,
            "mse_clip": False,
            "grid": "full",
            "scale": "mse",
            "bias_correction": False,
        },
        "signal": {"fidelity_weight": 0.5, "fallback": "best"},
        "layers": [
            {
                "name": "net.0",
                "params": 46336,
                "n_p": 0.2193,
                "n_e": 0.2296,
                "n_v": 0.7080,
                "importance": 0.6549,
                "rank": 3,
                "margin": 3.9713,
                "bits": 3,
                "drop": 3.5714,
                "fallback": False,
                "tried": [{"bits": 1, "drop": 10.5158}, {"bits": 2, "drop": 4.6626}, {"bits": 3, "drop": 3.5714}],
            }
        ],
        "before_recovery": {
            "val_acc": 0.875,
            "test_acc": 0.8571428656578064,
            "test_uar": 0.8571428656578064,
            "size_kb": 34.904,
            "avg_bits": 1.2247,
        },
        "recovery": {
            "epochs": 2,
            "chosen_epoch": 1,
            "lr": 0.001,
            "distill": 0.5,
            "temperature": 2.0,
            "seconds": 1.5,
            "curve": [
                {"epoch": 0, "val_kl": 0.31, "val_acc": 0.875},
                {"epoch": 1, "val_kl": 0.12, "val_acc": 0.89},
                {"epoch": 2, "val_kl": 0.15, "val_acc": 0.88},
            ],
        },
    },
    "objective": 0.9107142686843872,
}


def _write(tmp_path, data) -> str:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    return path


def test_a_file_written_before_the_schema_version_reads_as_version_1(tmp_path):
    results = RunResults.load(_write(tmp_path, UNVERSIONED))
    assert results.laq.scores.test_acc == 0.9107142686843872 and results.laq.bits == {"net.0": 3}
    assert results.laq.recovery.curve[1].val_kl == 0.12 and results.fixed[0].scores.size_kb == 53.632
    assert results.test_predictions.models["laq_before_recovery"] == [0, 1]


def test_round_trip_writes_the_same_keys_and_values_plus_the_schema_version_first(tmp_path):
    results = RunResults.from_json(UNVERSIONED)
    results.save(tmp_path / "out.json")
    text = (tmp_path / "out.json").read_text()
    assert next(iter(json.loads(text))) == "schema_version"
    assert json.loads(text) == {"schema_version": SCHEMA_VERSION, **UNVERSIONED}
    assert RunResults.load(tmp_path / "out.json") == results


def test_quantizer_storage_widths_are_written_only_when_narrow_and_read_as_32_when_absent():
    older = RunResults.from_json(UNVERSIONED)
    assert (older.laq.quantizer.bias_bits, older.laq.quantizer.stats_bits) == (32, 32)
    narrow = copy.deepcopy(UNVERSIONED)
    narrow["laq"]["quantizer"].update(bias_bits=8, stats_bits=16)
    written = RunResults.from_json(narrow).to_json()
    assert written["laq"]["quantizer"]["bias_bits"] == 8 and written["laq"]["quantizer"]["stats_bits"] == 16
    assert "bias_bits" not in older.to_json()["laq"]["quantizer"]


def test_fields_a_run_did_not_produce_stay_out_of_the_file():
    old = copy.deepcopy(UNVERSIONED)  # an older run: no val_uar, no recovery, no predictions, quant=none
    for key in ("test_predictions", "fixed", "laq", "objective"):
        del old[key]
    del old["baseline"]["val_uar"]
    results = RunResults.from_json(old)
    assert results.laq is None and results.fixed is None and results.baseline.val_uar is None
    assert results.to_json() == {"schema_version": SCHEMA_VERSION, **old}


@pytest.mark.parametrize("version", [2, "1", None, True])
def test_an_unknown_schema_version_is_refused_naming_the_file(tmp_path, version):
    path = _write(tmp_path, {"schema_version": version, **UNVERSIONED})
    with pytest.raises(
        SERError, match=rf"^{path}: schema_version {version!r} is not one this ser reads \(1\); upgrade ser$"
    ):
        RunResults.load(path)


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda r: r["laq"]["layers"][0].update(bits="3"), r"laq\.layers\[0\]\.bits: expected int, got str '3'"),
        (lambda r: r["baseline"].pop("test_acc"), r"baseline\.test_acc is missing"),
        (lambda r: r["fixed"][0].update(val_acc=None), r"fixed\[0\]\.val_acc: expected float, got null"),
        (lambda r: r.update(classes="anger"), r"classes: expected a list, got str 'anger'"),
        (lambda r: r["laq"].update(recovry={}), r"unknown field laq\.recovry"),
    ],
)
def test_a_malformed_field_is_a_one_line_error_naming_the_file_and_the_field(tmp_path, edit, problem):
    broken = copy.deepcopy(UNVERSIONED)
    edit(broken)
    path = _write(tmp_path, broken)
    with pytest.raises(SERError, match=rf"^{path}: {problem}$"):
        RunResults.load(path)


def test_a_file_that_is_not_json_is_a_one_line_error(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"data": "synthetic", ')
    with pytest.raises(SERError, match=rf"^{path}: cannot read results \(Expecting property name"):
        RunResults.load(path)
