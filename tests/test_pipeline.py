"""``pipeline.train`` in-process, as tests and other entry points call it (no subprocess, no CLI)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from ser.pipeline import build, train
from ser.results import RunResults
from tests.conftest import REPO


@pytest.fixture
def config(tiny_manifest, cache_dir, tmp_path):
    """The composed default config on the tiny corpus, writing into ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "data=manifest",
                f"data.manifest={tiny_manifest}",
                f"data.cache_dir={cache_dir}",
                f"hydra.run.dir={tmp_path}",
            ],
            return_hydra_config=True,
        )
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path)
        HydraConfig.instance().set_config(cfg)
        yield cfg
    GlobalHydra.instance().clear()


def test_fast_dev_run_goes_through_every_stage_in_process(config, tmp_path):
    with open_dict(config):
        config.trainer.fast_dev_run = True
        config.quant.recovery.epochs = 1
    results = train(config, tmp_path)
    assert results.classes == ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert results.fixed and results.laq is not None and results.test_predictions is not None
    assert [r.name for r in results.classic] == ["svm"] and "svm" in results.test_predictions.models
    assert RunResults.load(tmp_path / "results.json") == results
    assert (tmp_path / "report.md").exists() and (tmp_path / "quantized.pt").exists()


def test_only_rank_0_saves_the_split(config, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "1")  # task 1 of an srun: rank 0 may not have claimed the directory yet
    build(config, tmp_path)
    assert not (tmp_path / "splits").exists()
    monkeypatch.setenv("SLURM_PROCID", "0")
    build(config, tmp_path)
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == ["test.csv", "train.csv", "val.csv"]
