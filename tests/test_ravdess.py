"""Real RAVDESS (skipped unless SER_RAVDESS_ROOT points at the speech part of the release): the compact
recipe on one stratified fold, with the SVM on the same inputs beside it and LAQ held to 30 KB."""

from __future__ import annotations

import json

from tests.conftest import env_path, run_train


def test_compact_recipe_on_one_ravdess_fold_beats_chance_fivefold_with_the_svm_beside_it_in_30_kb(cache_dir, tmp_path):
    root = env_path("SER_RAVDESS_ROOT")
    proc = run_train(
        "recipe=compact",
        "data=ravdess",
        f"data.root={root}",
        "data/split=kfold",
        "data.split.fold=0",
        "seed=0",
        cache_dir=cache_dir,
        run_dir=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["classes"] == ["anger", "calm", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert results["n_utterances"]["test"] == 144 and sum(results["n_utterances"].values()) == 1440
    assert results["baseline"]["test_uar"] > 0.625, "8 classes: chance is 0.125 (pooled 10-fold UAR measured ≈ 0.74)"
    svm = next(record for record in results["classic"] if record["name"] == "svm")
    assert svm["test_uar"] > 0.625 and svm["train_utterances"] == sum(
        results["n_utterances"][p] for p in ("train", "val")
    )
    assert results["laq"]["budget"]["met"] and results["laq"]["budget"]["file_kb"] <= 30.0
