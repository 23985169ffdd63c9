"""A real (tiny) multirun with one failing job, aggregated by ``ser report``."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from ser.results import (
    LAQ,
    Baseline,
    Budget,
    BudgetStep,
    ClassicRecord,
    GraphStats,
    LayerRecord,
    RunResults,
    Scores,
    Teacher,
    TestPredictions,
    Timing,
    Transfer,
    ZeroShot,
)
from tests.conftest import REPO


@pytest.fixture(scope="module")
def sweep(tiny_manifest, cache_dir, tmp_path_factory):
    """Leave-one-speaker-out folds 0 and 1 succeed; fold 7 does not exist (3 speakers) and fails."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "data=manifest",
            f"data.manifest={tiny_manifest}",
            "data/split=loso",
            "data.split.fold=0,7,1",
            "trainer.max_epochs=3",
            "quant.fixed_bits=[4,1]",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        env={**os.environ, "SER_CACHE_DIR": str(cache_dir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = subprocess.run(
        [sys.executable, "-m", "ser.report", str(sweep_dir)], cwd=REPO, capture_output=True, text=True
    )
    return sweep_dir, proc, report


def test_failed_job_does_not_stop_the_others(sweep):
    sweep_dir, proc, _ = sweep
    assert proc.returncode != 0, "the sweep reports the failure"
    assert (sweep_dir / "0" / "results.json").exists() and (sweep_dir / "2" / "results.json").exists()
    failed = json.loads((sweep_dir / "1" / "failed.json").read_text())
    assert "data.split.fold=7 is out of range" in failed["error"]


def test_summary_csv_holds_mean_and_std_of_the_jobs(sweep):
    sweep_dir, _, report = sweep
    assert report.returncode == 0, report.stderr
    (row,) = list(csv.DictReader(open(sweep_dir / "summary.csv")))
    results = [json.loads((sweep_dir / j / "results.json").read_text()) for j in ("0", "2")]
    assert (row["n_jobs"], row["n_finished"]) == ("3", "2")
    for key, values in {
        "baseline/test_acc": [r["baseline"]["test_acc"] for r in results],
        "laq/avg_bits": [r["laq"]["avg_bits"] for r in results],
        "fixed1/test_acc": [r["fixed"][1]["test_acc"] for r in results],
    }.items():
        assert float(row[f"{key}_mean"]) == pytest.approx(np.mean(values))
        assert float(row[f"{key}_std"]) == pytest.approx(np.std(values, ddof=1))


def test_summary_lists_the_failed_job_and_writes_plots(sweep):
    sweep_dir, _, report = sweep
    summary = (sweep_dir / "summary.md").read_text()
    assert "2 of 3 jobs finished" in summary
    assert "data.split.fold=7" in summary.split("## Failed jobs")[1]
    assert (sweep_dir / "accuracy_vs_bits.png").stat().st_size > 1000
    assert any((sweep_dir / "tensorboard_summary").iterdir())


def test_jobs_are_grouped_by_the_overrides_that_vary(tmp_path):
    from ser.report.sweep import Job, group_jobs

    jobs = [
        Job(tmp_path, {"model": m, "seed": s, "data": "emodb"}, None, "x") for m in ("mlp_2hl", "mlp_3hl") for s in "01"
    ]
    groups = group_jobs(jobs)
    assert [g.name for g in groups] == ["model=mlp_2hl", "model=mlp_3hl"] and [len(g.jobs) for g in groups] == [2, 2]


def test_jobs_are_read_in_numeric_order(tmp_path):
    from ser.report.sweep import find_jobs

    for job in ("10", "2"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- seed={job}\n")
    jobs = find_jobs(tmp_path)
    assert [j.overrides["seed"] for j in jobs] == ["2", "10"]
    assert jobs[0].error == "no results.json (job did not finish)"


def _results(n_params: int, test_acc: float, laq_acc: float, bits: float, transfer: bool = False) -> RunResults:
    laq = LAQ(
        scores=Scores(val_acc=0.5, test_acc=laq_acc, test_uar=0.5, size_kb=bits * 10, avg_bits=bits),
        t_margin=4.0,
        weights={},
        evaluations=5,
        search_s=0.01,
        layers=[],
    )
    baseline = Baseline(
        val_acc=0.5,
        test_acc=test_acc,
        test_uar=0.5,
        test_f1=0.5,
        size_kb=n_params * 4 / 1000,
        avg_bits=32,
        confusion_matrix=None,
    )
    nsl = (
        Transfer(
            source="synthetic",
            teacher=Teacher(model="MLP", n_params=10, classes=["a"], source_val_acc=0.8, source_test_acc=0.8),
            zero_shot=ZeroShot(test_acc=0.3, n=10, shared_classes=["a"]),
            graph=GraphStats(
                k=5, threshold=None, nodes=10, edges=100, mean_weight=0.5, label_agreement=0.25, chance_agreement=0.15
            ),
        )
        if transfer
        else None
    )
    return RunResults(
        data="synthetic",
        seed=0,
        model="MLP",
        n_params=n_params,
        classes=["a", "b"],
        baseline=baseline,
        timing_s=Timing(features=0.0, train=0.0),
        n_utterances={},
        skipped_files=0,
        skipped=[],
        best_checkpoint=None,
        transfer=nsl,
        fixed=[],
        laq=laq,
    )


def test_comparison_table_puts_groups_side_by_side_at_full_precision_and_after_laq(tmp_path):
    from ser.report.sweep import Job, group_jobs, render_summary

    jobs = [
        Job(tmp_path, {"model": "mlp", "seed": "0"}, _results(1000, 0.70, 0.60, 1.5), None),
        Job(tmp_path, {"model": "mlp", "seed": "1"}, _results(1000, 0.80, 0.70, 2.5), None),
        Job(tmp_path, {"model": "lightsernet", "seed": "0"}, _results(461703, 0.75, 0.65, 3.0, transfer=True), None),
    ]
    summary = render_summary(tmp_path, group_jobs(jobs))
    table = summary.split("## Comparison")[1].split("\n## ")[0]
    assert (
        "| model=mlp | 1,000 | 75.00 ± 7.07 | 4.0 ± 0.0 | 65.00 ± 7.07 | 20.0 ± 7.1 | 2.00 ± 0.71 | – | – | – |"
        in table
    )
    assert (
        "| model=lightsernet | 461,703 | 75.00 ± 0.00 | 1846.8 ± 0.0 | 65.00 ± 0.00 | 30.0 ± 0.0 | 3.00 ± 0.00 | – | – | – |"
        in table
    )
    assert "25.00 ± 0.00 of them join the same emotion (chance 15.00 ± 0.00)" in summary


def _fold(
    classes: list[str], labels: list[str], baseline: list[str], laq: list[str], svm: list[str] | None = None
) -> RunResults:
    """A finished fold whose test predictions are given by class name."""
    index = {c: i for i, c in enumerate(classes)}
    models = {"baseline": baseline, "laq": laq, **({"svm": svm} if svm is not None else {})}
    kept = TestPredictions(
        paths=[""] * len(labels),
        speakers=[None] * len(labels),
        labels=[index[c] for c in labels],
        models={name: [index[c] for c in predicted] for name, predicted in models.items()},
    )
    classic = (
        None
        if svm is None
        else [
            ClassicRecord(
                name="svm",
                kernel="rbf",
                C=10.0,
                inner_uar=0.5,
                train_utterances=8,
                test_acc=0.5,
                test_uar=0.5,
                seconds=0.1,
            )
        ]
    )
    return replace(_results(1000, 0.0, 0.0, 2.0), classes=classes, test_predictions=kept, classic=classic)


def test_pooled_scores_count_every_test_utterance_of_every_fold_once(tmp_path):
    from ser.report.sweep import Group, Job, pooled

    # Fold 0: 3 utterances; fold 1: 1 utterance, with the classes in another order.
    folds = [
        _fold(["a", "b"], ["a", "a", "b"], ["a", "b", "b"], ["a", "a", "a"]),
        _fold(["b", "a"], ["b"], ["b"], ["a"]),
    ]
    group = Group((), [Job(tmp_path, {"data.split.fold": str(k)}, r, None) for k, r in enumerate(folds)])
    scores = pooled(group)
    # Baseline over the 4 utterances: a 1/2 right, b 2/2 right -> UAR 0.75, WA 3/4.
    assert (scores["baseline"].uar, scores["baseline"].wa, scores["baseline"].n) == (0.75, 0.75, 4)
    # LAQ: a 2/2, b 0/2 -> UAR 0.5, WA 0.5; per fold UAR 0.5 and 0.0.
    assert (scores["laq"].uar, scores["laq"].wa) == (0.5, 0.5)
    assert scores["laq"].uar_per_job == pytest.approx((0.25, np.std([0.5, 0.0], ddof=1)))


def test_summary_has_a_pooled_table_and_pooled_columns_in_the_csv(tmp_path):
    from ser.report.sweep import Group, Job, render_summary, write_csv

    folds = [
        _fold(["a", "b"], ["a", "b"], ["a", "b"], ["b", "b"]),
        _fold(["a", "b"], ["a", "b"], ["b", "b"], ["b", "b"]),
    ]
    group = Group((), [Job(tmp_path, {"data.split.fold": str(k)}, r, None) for k, r in enumerate(folds)])
    summary = render_summary(tmp_path, [group])
    assert "Pooled over the 4 test utterances of 2 job(s)" in summary
    assert "| 32-bit baseline | 75.00 | 75.00 | 75.00 ± 35.36 | 75.00 ± 35.36 | 4.0 ± 0.0 | 32 |" in summary
    assert "| LAQ | 50.00 | 50.00 | 50.00 ± 0.00 | 50.00 ± 0.00 | 20.0 ± 0.0 | 2.00 ± 0.00 |" in summary
    write_csv(tmp_path / "summary.csv", [group])
    (row,) = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert float(row["pooled/baseline/uar_mean"]) == 0.75 and float(row["pooled/laq/wa_mean"]) == 0.5


def test_the_svm_is_pooled_beside_the_model_in_the_pooled_table_and_the_comparison(tmp_path):
    from ser.report.sweep import Group, Job, render_summary

    def folds(svm_right: bool) -> list[RunResults]:
        svm = (lambda labels: labels) if svm_right else (lambda labels: ["a"] * len(labels))
        return [_fold(["a", "b"], ["a", "b"], ["a", "b"], ["b", "b"], svm(["a", "b"])) for _ in range(2)]

    groups = [
        Group(
            (("model", name),),
            [Job(tmp_path, {"model": name, "data.split.fold": str(k)}, r, None) for k, r in enumerate(folds(right))],
        )
        for name, right in (("x", True), ("y", False))
    ]
    summary = render_summary(tmp_path, groups)
    assert "| RBF-SVM (same inputs) | 100.00 | 100.00 | 100.00 ± 0.00 | 100.00 ± 0.00 | – | – |" in summary
    assert "| RBF-SVM (same inputs) | 50.00 | 50.00 | 50.00 ± 0.00 | 50.00 ± 0.00 | – | – |" in summary
    comparison = summary.split("## Comparison")[1].split("\n## ")[0]
    assert (
        "| model=x | 1,000 | 0.00 ± 0.00 | 4.0 ± 0.0 | 0.00 ± 0.00 | 20.0 ± 0.0 | 2.00 ± 0.00 | 100.00 | 50.00 | 100.00 |"
        in comparison
    )
    assert "| model=y |" in comparison and comparison.rstrip().endswith("| 100.00 | 50.00 | 50.00 |")
    assert "| RBF-SVM (same inputs; C 10.0 ± 0.0) | – | – | 50.00 ± 0.00 | 50.00 ± 0.00 | – |" in summary


def test_a_runs_report_puts_the_svm_beside_the_32_bit_model():
    from ser.report.run import render_run

    run = _fold(["a", "b"], ["a", "b"], ["a", "b"], ["b", "b"], ["a", "a"])
    assert (
        "Classical reference on the same inputs and split: RBF-SVM (C = 10, chosen by cross-validation on 8 training "
        "utterances): test accuracy 50.00 %, UAR 50.00 % (the 32-bit model: 0.00 %, 50.00 %)."
    ) in render_run(run)


def test_a_sweep_over_seeds_is_also_pooled_per_seed_with_the_spread_across_seeds(tmp_path):
    from ser.report.sweep import Group, Job, pooled

    # Seed 0's two folds: baseline 4/4 right (UAR 1.0); seed 1's: 2/4 right, one per class (UAR 0.5).
    folds = {
        0: [_fold(["a", "b"], ["a", "b"], ["a", "b"], ["a", "b"])] * 2,
        1: [
            _fold(["a", "b"], ["a", "b"], ["a", "a"], ["a", "b"]),
            _fold(["a", "b"], ["a", "b"], ["b", "b"], ["a", "b"]),
        ],
    }
    jobs = [
        Job(tmp_path, {"seed": str(seed), "data.split.fold": str(k)}, replace(r, seed=seed), None)
        for seed, runs in folds.items()
        for k, r in enumerate(runs)
    ]
    score = pooled(Group((), jobs))["baseline"]
    assert (score.seeds, score.n, score.jobs) == (2, 8, 4)
    assert score.uar_per_seed == pytest.approx((0.75, np.std([1.0, 0.5], ddof=1)))
    assert score.wa_per_seed == pytest.approx((0.75, np.std([1.0, 0.5], ddof=1)))
    assert score.uar == pytest.approx(0.75)  # all 8 predictions at once


def test_per_seed_columns_appear_in_the_summary_and_csv_only_when_seeds_repeat_several_jobs(tmp_path):
    from ser.report.sweep import Group, Job, render_summary, write_csv

    right = _fold(["a", "b"], ["a", "b"], ["a", "b"], ["b", "b"])  # baseline 2/2
    half = _fold(["a", "b"], ["a", "b"], ["b", "b"], ["b", "b"])  # baseline 1/2
    runs = [replace(right, seed=0), replace(right, seed=0), replace(half, seed=1), replace(half, seed=1)]
    group = Group(
        (), [Job(tmp_path, {"seed": str(r.seed), "data.split.fold": str(k % 2)}, r, None) for k, r in enumerate(runs)]
    )
    summary = render_summary(tmp_path, [group])
    assert "Pooled over the 8 test predictions of 4 job(s) from 2 seeds" in summary
    assert (
        "| 32-bit baseline | 75.00 | 75.00 | 75.00 ± 35.36 | 75.00 ± 35.36 | 75.00 ± 28.87 | 75.00 ± 28.87 |" in summary
    )
    write_csv(tmp_path / "summary.csv", [group])
    (row,) = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert float(row["pooled/baseline/uar_per_seed_mean"]) == 0.75
    assert float(row["pooled/baseline/uar_per_seed_std"]) == pytest.approx(np.std([1.0, 0.5], ddof=1))
    one_job_per_seed = Group((), [Job(tmp_path, {"seed": str(r.seed)}, r, None) for r in runs[1:3]])
    assert "per seed" not in render_summary(tmp_path, [one_job_per_seed]), (
        "per-seed scores would repeat the per-job ones"
    )


def test_a_runs_report_shows_the_budget_refinement_path_and_flags_each_refined_layer():
    from ser.report.run import render_run

    layers = [
        LayerRecord(name=n, params=10, n_p=0.5, n_e=0.5, n_v=0.5, importance=0.5, rank=i + 1, margin=1.0, bits=b)
        for i, (n, b) in enumerate([("net.0", 2), ("net.3", 2)])
    ]
    steps = [
        BudgetStep(bits={"net.0": 3, "net.3": 1}, quality=0.70, file_kb=24.0),
        BudgetStep(bits={"net.0": 2, "net.3": 2}, quality=0.75, file_kb=23.5),
    ]
    base = _results(1000, 0.8, 0.7, 2.0)
    laq = replace(
        base.laq,
        layers=layers,
        budget=Budget(target_kb=30.0, target_bits=None, met=True, t_margin=1.0, file_kb=23.5, refinement=steps),
    )
    text = render_run(replace(base, laq=laq))
    assert "Budget refinement (score, file size): [3, 1] (70.00, 24.0 KB) → [2, 2] (75.00, 23.5 KB)" in text
    assert "| 2 (refined from 3) |" in text and "| 2 (refined from 1) |" in text


@pytest.mark.parametrize(
    "bias_bits, says", [(32, "biases and scales at 32 bits"), (8, "quantized layers' biases at 8 bits (plus a scale)")]
)
def test_a_runs_report_says_at_how_many_bits_sizes_count_the_biases(bias_bits, says):
    from ser.report.run import render_run
    from ser.results import QuantizerRecord

    base = _results(1000, 0.8, 0.7, 2.0)
    quantizer = QuantizerRecord(
        per_channel=False,
        mse_clip=False,
        grid="full",
        scale="mse",
        bias_correction=False,
        bias_bits=bias_bits,
        stats_bits=16,
    )
    assert says in render_run(replace(base, laq=replace(base.laq, quantizer=quantizer)))


def test_sweep_jobs_keep_every_test_prediction_for_pooling(sweep):
    sweep_dir, _, _ = sweep
    results = json.loads((sweep_dir / "0" / "results.json").read_text())
    kept = results["test_predictions"]
    assert len(kept["labels"]) == results["n_utterances"]["test"] == len(kept["paths"])
    assert set(kept["models"]) == {"baseline", "fixed/4", "fixed/1", "laq_before_recovery", "laq", "svm"}
    svm_accuracy = np.mean(np.array(kept["models"]["svm"]) == np.array(kept["labels"]))
    assert svm_accuracy == pytest.approx(results["classic"][0]["test_acc"])
    accuracy = np.mean(np.array(kept["models"]["laq"]) == np.array(kept["labels"]))
    assert accuracy == pytest.approx(results["laq"]["test_acc"])
    assert "Pooled over the " in (sweep_dir / "summary.md").read_text()


def test_a_directory_without_jobs_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ser.report", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        == f"error: {tmp_path}: no Hydra jobs (.hydra/overrides.yaml) under it; pass a multirun directory"
    )
