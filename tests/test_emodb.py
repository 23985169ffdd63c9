"""Real EMODB (skipped unless SER_EMODB_ROOT points at a copy of the original release, whole utterances):
the paper reports 74.07 % and LAQ at 2.00 bits (on clips cut to 2 s)."""

from __future__ import annotations

import json

from tests.conftest import env_path, run_train


def test_emodb_trains_well_above_chance_and_laq_compresses_at_least_6x_within_its_margin(cache_dir, tmp_path):
    root = env_path("SER_EMODB_ROOT")
    proc = run_train("data=emodb", f"data.root={root}", "seed=0", cache_dir=cache_dir, run_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["classes"] == ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
    assert results["n_utterances"] == {"train": 427, "val": 54, "test": 54}
    assert results["baseline"]["test_acc"] > 0.55, "7 classes: chance is 0.14, the paper reports 0.74"
    laq = results["laq"]
    assert laq["avg_bits"] <= 5.0, "32 / 5 bits: at least 6x smaller (4.2 bits measured on whole utterances, seed 0)"
    assert 100 * (results["baseline"]["val_acc"] - laq["val_acc"]) <= laq["t_margin"] + 1e-6
