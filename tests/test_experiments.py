"""Every experiment, launcher and sweeper config composes (Hydra compose API, no training)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import REPO


@pytest.fixture
def compose_cfg():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield lambda *overrides: compose("train", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()


def test_default_config_is_the_paper_setup(compose_cfg):
    cfg = compose_cfg()
    assert cfg.data.corpus == "synthetic" and list(cfg.model.net.hidden) == [256, 512, 64]
    assert cfg.model.net.dropout == 0.1 and cfg.model.optimizer.lr == 1e-3 and cfg.data.batch_size == 32
    assert cfg.callbacks.early_stopping.patience == 5 and cfg.data.split.kind == "stratified"
    weights = cfg.quant.search.weights
    assert (weights.w_p, weights.w_e, weights.w_v) == (0.11, 0.01, 0.88)


def test_table2_sweeps_the_papers_five_depths_over_five_seeds(compose_cfg):
    cfg = compose_cfg("experiment=table2_depth", "data=emodb", "data.root=/x")
    assert cfg.hydra.sweeper.params == {"model": "mlp_2hl,mlp_3hl,mlp_5hl,mlp_7hl,mlp_9hl", "seed": "range(5)"}
    widths = {
        name: list(compose_cfg(f"model={name}").model.net.hidden) for name in cfg.hydra.sweeper.params.model.split(",")
    }
    assert widths == {
        "mlp_2hl": [256, 64],
        "mlp_3hl": [256, 512, 64],
        "mlp_5hl": [256, 512, 256, 128, 64],
        "mlp_7hl": [256, 512, 384, 256, 128, 96, 64],
        "mlp_9hl": [256, 512, 384, 256, 192, 128, 96, 72, 64],
    }


def test_table3_sweeps_the_nine_importance_weight_rows(compose_cfg):
    cfg = compose_cfg("experiment=table3_weights")
    rows = cfg.hydra.sweeper.params["quant/weights"].split(",")
    weights = [
        (w.w_p, w.w_e, w.w_v) for w in (compose_cfg(f"quant/weights={row}").quant.search.weights for row in rows)
    ]
    assert weights == [
        (0, 0, 0),
        (1, 0, 0),
        (0, 1, 0),
        (0, 0, 1),
        (0.5, 0.5, 0),
        (0.5, 0, 0.5),
        (0, 0.5, 0.5),
        (0.33, 0.33, 0.33),
        (0.11, 0.01, 0.88),
    ]


def test_table4_runs_laq_over_five_seeds(compose_cfg):
    cfg = compose_cfg("experiment=table4")
    assert (
        cfg.hydra.sweeper.params == {"seed": "range(5)"}
        and cfg.quant.laq
        and list(cfg.quant.fixed_bits) == [8, 7, 6, 5, 4, 3, 2, 1]
    )


def test_models_compares_the_mlp_with_lightsernet_on_its_own_frame_features(compose_cfg):
    cfg = compose_cfg("experiment=models", "data=emodb")
    assert cfg.hydra.sweeper.params == {"model": "mlp,lightsernet", "seed": "range(5)"}
    mlp, conv = compose_cfg("model=mlp", "data=emodb"), compose_cfg("model=lightsernet", "data=emodb")
    assert mlp.data.features.pooling == "stats" and mlp.data.features.sample_rate == 22050
    assert conv.model.net._target_ == "ser.models.lightsernet.LightSERNet" and conv.model.net.dropout == 0.3
    features = conv.data.features
    assert (features.pooling, features.sample_rate, features.n_fft, features.hop_length) == ("none", 16000, 1024, 256)
    assert list(features.parts) == ["mfcc"] and features.n_mfcc == 40 and conv.data.corpus == "emodb"


def test_nsl_compares_the_student_with_and_without_the_graph_over_five_seeds(compose_cfg):
    cfg = compose_cfg("experiment=nsl", "data=emodb")
    assert cfg.hydra.sweeper.params == {"model.graph_weight": "0,0.1", "seed": "range(5)"}
    assert cfg.model._target_ == "ser.transfer.student.GraphRegularizedClassifier"
    assert cfg.transfer.source.corpus == "synthetic" and cfg.transfer.teacher.net._target_ == "ser.models.mlp.MLP"
    assert cfg.data.corpus == "emodb" and cfg.transfer.k == 5
    other = compose_cfg("experiment=nsl", "data@transfer.source=tess", "model=lightsernet")
    assert other.transfer.source.corpus == "tess" and other.model.net._target_ == "ser.models.lightsernet.LightSERNet"
    assert other.transfer.source.features.pooling == "stats" and other.data.features.pooling == "none"


def test_transfer_is_off_by_default(compose_cfg):
    assert compose_cfg().get("transfer") is None


@pytest.mark.parametrize(("data", "folds"), [("emodb", 10), ("ravdess", 24), ("savee", 4), ("synthetic", 8)])
def test_loso_sweeps_one_fold_per_speaker_of_the_corpus(compose_cfg, data, folds):
    cfg = compose_cfg("experiment=loso", f"data={data}")
    assert cfg.data.split.kind == "loso" and cfg.hydra.sweeper.params == {"data.split.fold": f"range({folds})"}


def test_optuna_tunes_lr_dropout_depth_and_margin_at_a_bit_budget(compose_cfg):
    cfg = compose_cfg("experiment=optuna")
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"
    assert set(cfg.hydra.sweeper.params) == {
        "model.optimizer.lr",
        "model.net.dropout",
        "model",
        "quant.search.t_margin",
    }
    assert cfg.bit_budget == 2.0


@pytest.mark.parametrize("launcher, target", [("joblib", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_parallel_launchers_compose(compose_cfg, launcher, target):
    cfg = compose_cfg(f"hydra/launcher={launcher}", "experiment=table4")
    assert cfg.hydra.launcher._target_.endswith(target)


def test_slurm_launcher_leaves_partition_and_account_to_the_cluster_and_sizes_a_cpu_job(compose_cfg):
    launcher = compose_cfg("hydra/launcher=slurm").hydra.launcher
    assert launcher.partition is None and launcher.account is None and launcher.gpus_per_node is None
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb, launcher.tasks_per_node) == (60, 4, 16, 1)


def test_slurm_example_is_the_former_name_of_the_slurm_launcher(compose_cfg):
    assert (
        compose_cfg("hydra/launcher=slurm_example").hydra.launcher == compose_cfg("hydra/launcher=slurm").hydra.launcher
    )


def test_ddp_trainer_config_uses_the_ddp_strategy(compose_cfg):
    cfg = compose_cfg("trainer=ddp")
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.accelerator == "gpu"


def test_kfold_sweeps_ten_stratified_folds(compose_cfg):
    cfg = compose_cfg("experiment=kfold", "data=emodb", "data.root=/x")
    assert cfg.data.split.kind == "kfold" and cfg.data.split.folds == 10
    assert cfg.hydra.sweeper.params == {"data.split.fold": "range(10)"}
    assert compose_cfg("experiment=kfold", "data.split.folds=5").hydra.sweeper.params == {"data.split.fold": "range(5)"}


def test_cross_corpus_tests_on_another_corpus_over_five_seeds(compose_cfg):
    cfg = compose_cfg("experiment=cross_corpus", "data=emodb", "data.split.test_corpus=synthetic")
    assert cfg.data.split.kind == "cross_corpus" and cfg.data.split.test_corpus == "synthetic"
    assert cfg.hydra.sweeper.params == {"seed": "range(5)"}


def test_speaker_normalisation_is_off_in_the_paper_recipe(compose_cfg):
    cfg = compose_cfg()
    assert cfg.data.normalize == "global" and cfg.model.scheduler is None
    assert dict(cfg.model.regularization) == {"label_smoothing": 0.0, "mixup_alpha": 0.0, "input_noise": 0.0}


def test_compact_recipe_composes_with_any_experiment(compose_cfg):
    cfg = compose_cfg("experiment=kfold", "recipe=compact", "data=emodb", "data.root=/x")
    assert cfg.data.split.kind == "kfold" and cfg.hydra.sweeper.params == {"data.split.fold": "range(10)"}
    assert list(cfg.data.features.parts) == ["mfcc", "chroma", "mel", "pitch", "spectral"]
    assert (
        list(cfg.data.features.stats) == ["mean", "std"] and cfg.data.features.mel_db and not cfg.data.features.deltas
    )
    assert cfg.data.normalize == "speaker" and cfg.data.speaker_prior_weight == 5
    assert list(cfg.model.net.hidden) == [128, 64] and cfg.model.optimizer._target_ == "torch.optim.Adam"
    assert cfg.model.regularization.label_smoothing == 0.1 and cfg.callbacks.early_stopping.patience == 20
    assert cfg.quant.laq and cfg.quant.search.target_kb == 30


def test_a_quantization_choice_on_the_command_line_beats_the_recipes(compose_cfg):
    assert not compose_cfg("experiment=kfold", "recipe=compact", "quant=none").quant
    assert compose_cfg("experiment=loso", "recipe=compact", "quant=laq").quant.search.target_kb is None


def test_the_output_directory_is_defined_once(compose_cfg):
    cfg = compose_cfg()
    raw = {
        key: value
        for key, value in (
            ("trainer", cfg.trainer._get_node("default_root_dir")._value()),
            ("checkpoints", cfg.callbacks.model_checkpoint._get_node("dirpath")._value()),
            ("quant", cfg.quant._get_node("save_dir")._value()),
            ("logger", cfg.logger._get_node("save_dir")._value()),
        )
    }
    assert raw == {
        "trainer": "${paths.output_dir}",
        "checkpoints": "${paths.output_dir}/checkpoints",
        "quant": "${paths.output_dir}",
        "logger": "${paths.output_dir}",
    }


def test_debug_configs_make_a_quick_run(compose_cfg):
    cfg = compose_cfg("debug=default")
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.accelerator == "cpu" and cfg.callbacks.early_stopping is None
    assert cfg.quant.recovery.epochs == 1
    assert compose_cfg("debug=fdr").trainer.fast_dev_run is True


def test_every_callback_has_its_own_file_and_can_be_dropped(compose_cfg):
    assert set(compose_cfg().callbacks) == {"model_checkpoint", "early_stopping", "rich_progress_bar"}
    assert compose_cfg("callbacks.early_stopping=null").callbacks.early_stopping is None


def test_narrow_biases_and_statistics_are_the_default_and_the_papers_procedure_stores_float32(compose_cfg):
    for quant in ("laq", "laq_30kb", "fixed"):
        cfg = compose_cfg(f"quant={quant}").quant.quantizer
        assert (cfg.bias_bits, cfg.stats_bits) == (8, 16), quant
    paper = compose_cfg("quant=laq_paper").quant.quantizer
    assert (paper.bias_bits, paper.stats_bits, paper.grid, paper.scale) == (32, 32, "symmetric", "max")
