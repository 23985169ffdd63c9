"""``python train.py`` end to end through Hydra, as a user runs it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_train


def test_default_run_trains_well_above_chance_and_writes_results(default_run):
    run_dir, results = default_run
    assert results["data"] == "synthetic" and results["seed"] == 0
    assert results["classes"] == ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert results["n_params"] == 180 * 256 + 256 + 256 * 512 + 512 + 512 * 64 + 64 + 64 * 7 + 7
    baseline = results["baseline"]
    assert baseline["avg_bits"] == 32 and baseline["size_kb"] == pytest.approx(results["n_params"] * 4 / 1000)
    assert baseline["test_acc"] > 0.5, "7 classes: chance is 0.14"
    assert 0 <= baseline["test_uar"] <= 1 and 0 <= baseline["val_acc"] <= 1
    assert set(results["timing_s"]) >= {"features", "train"} and results["skipped_files"] == 0
    assert sorted(p.name for p in (run_dir / "splits").iterdir()) == ["test.csv", "train.csv", "val.csv"]
    assert (run_dir / "checkpoints" / "best.ckpt").exists()


def test_tensorboard_gets_curves_test_metrics_confusion_matrix_and_hparams(tiny_manifest, cache_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = run_train(
        "data=manifest",
        f"data.manifest={tiny_manifest}",
        "trainer.max_epochs=3",
        "quant=none",
        cache_dir=cache_dir,
        run_dir=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "test/uar", "test/f1"} <= scalars
    assert "test/confusion_matrix" in events.Tags()["images"]
    plugins = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins


def test_same_config_and_seed_reproduce_the_same_numbers(tiny_manifest, cache_dir, tmp_path):
    args = ("data=manifest", f"data.manifest={tiny_manifest}", "trainer.max_epochs=4", "seed=7", "quant=fixed")
    for name in ("a", "b"):
        assert run_train(*args, cache_dir=cache_dir, run_dir=tmp_path / name).returncode == 0
    a, b = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("a", "b"))
    assert a["baseline"] == b["baseline"] and a["fixed"] == b["fixed"]


def test_missing_corpus_gives_one_line_error_with_download_hint(cache_dir, tmp_path):
    proc = run_train("data=emodb", f"data.root={tmp_path / 'nowhere'}", cache_dir=cache_dir, run_dir=tmp_path / "run")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    (line,) = [l for l in (proc.stderr + proc.stdout).splitlines() if "EMODB not found" in l]
    assert str(tmp_path / "nowhere") in line and "emodb.bilderbar.info" in line and "wav/03a01Fa.wav" in line


SMALL_LIGHTSERNET = (
    "model=lightsernet",
    "model.net.path_channels=8",
    "model.net.block_channels=[16,16,32,32]",
    "model.net.head_channels=32",
    "data.features.frames=64",
)


def test_lightsernet_learns_the_built_in_corpus_and_laq_quantizes_its_convolutions(default_corpus, cache_dir, tmp_path):
    proc = run_train(
        *SMALL_LIGHTSERNET,
        "trainer.max_epochs=15",
        "quant.fixed_bits=[]",
        "quant.recovery.epochs=2",
        cache_dir=cache_dir,
        run_dir=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"] == "LightSERNet" and results["n_utterances"]["train"] == 448
    assert results["baseline"]["test_acc"] > 0.4, "7 classes: chance is 0.14"
    layers = {l["name"]: l["bits"] for l in results["laq"]["layers"]}
    assert sorted(layers) == sorted(
        [
            "net.paths.0.0",
            "net.paths.1.0",
            "net.paths.2.0",
            "net.blocks.0.0",
            "net.blocks.1.0",
            "net.blocks.2.0",
            "net.blocks.3.0",
            "net.blocks.4",
            "net.classifier",
        ]
    )
    assert all(1 <= b <= 8 for b in layers.values()) and results["laq"]["size_kb"] < results["baseline"]["size_kb"] / 3


def test_compact_recipe_trains_a_speaker_normalised_small_mlp(tiny_manifest, cache_dir, tmp_path):
    proc = run_train(
        "recipe=compact",
        "data=manifest",
        f"data.manifest={tiny_manifest}",
        "trainer.max_epochs=3",
        "quant=none",
        cache_dir=cache_dir,
        run_dir=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["n_params"] == 392 * 128 + 128 + 128 * 64 + 64 + 64 * 7 + 7
    assert 0 <= results["baseline"]["val_uar"] <= 1
    import torch

    checkpoint = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["normalize"] == "speaker"
    assert checkpoint["state_dict"]["population_mean"].shape == (392,)


def test_quantized_artifact_carries_what_deployment_needs(default_run):
    import torch

    run_dir, results = default_run
    artifact = torch.load(run_dir / "quantized.pt", weights_only=False)
    metadata = artifact["metadata"]
    assert metadata["classes"] == results["classes"] and metadata["n_features"] == 180
    assert metadata["normalize"] == "global" and metadata["network"] == "ser.models.mlp.MLP"
    assert metadata["features"]["n_mfcc"] == 40 and metadata["features"]["parts"] == ["mfcc", "chroma", "mel"]
    assert {name: layer["bits"] for name, layer in artifact["layers"].items()} == {
        l["name"]: l["bits"] for l in results["laq"]["layers"]
    }


def test_the_log_says_why_training_ended_and_counts_flops(tiny_manifest, cache_dir, tmp_path):
    common = ("data=manifest", f"data.manifest={tiny_manifest}", "quant=none")
    stopped = run_train(
        *common,
        "trainer.max_epochs=60",
        "callbacks.early_stopping.patience=1",
        cache_dir=cache_dir,
        run_dir=tmp_path / "stopped",
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    output = stopped.stdout + stopped.stderr
    assert "early stopping after epoch" in output and "val/loss did not improve for 1 epochs" in output
    assert "Total FLOPs: 0" not in output and "Total FLOPs" in output
    full = run_train(*common, "trainer.max_epochs=2", cache_dir=cache_dir, run_dir=tmp_path / "full")
    assert "trained for 2 epochs (the maximum)" in full.stdout + full.stderr
