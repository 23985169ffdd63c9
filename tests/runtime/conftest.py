"""A tiny speaker-normalised run, exported, shared by the runtime tests that need one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from ser.export import main as export_main
from ser.runtime import model_file
from ser.runtime.model_file import Section
from tests.conftest import run_train

SMALL_FEATURES = (
    "data.features.sample_rate=16000",
    "data.features.n_fft=512",
    "data.features.hop_length=256",
    "data.features.n_mels=40",
    "data.features.n_mfcc=13",
)
PRIOR_WEIGHT = 2.0


@dataclass
class SpeakerRun:
    run_dir: Path
    model: Path  # its 8-bit .serq
    datamodule: object  # the run's SERDataModule, set up (features, speaker-normalised inputs, split)


def _speaker_run(
    name: str, overrides: tuple[str, ...], export: list[str], tiny_manifest, cache_dir, tmp_path_factory
) -> SpeakerRun:
    """Train ``data.normalize=speaker`` (shrinkage toward the population) on the 84-file built-in
    corpus with ``overrides``, export it with ``export`` and set up its datamodule again."""
    run_dir = tmp_path_factory.mktemp(name)
    proc = run_train(
        "data=manifest",
        f"data.manifest={tiny_manifest}",
        "data.normalize=speaker",
        f"data.speaker_prior_weight={PRIOR_WEIGHT}",
        "trainer.max_epochs=3",
        *overrides,
        *SMALL_FEATURES,
        cache_dir=cache_dir,
        run_dir=run_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert export_main([str(run_dir), *export, "-o", str(run_dir / "model.serq")]) == 0
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.data.cache_dir = str(cache_dir)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    return SpeakerRun(run_dir, run_dir / "model.serq", datamodule)


@pytest.fixture(scope="session")
def speaker_run(tiny_manifest, cache_dir, tmp_path_factory) -> SpeakerRun:
    """Full precision (quant=none), exported at 8 bits."""
    return _speaker_run("speaker_run", ("quant=none",), ["--bits", "8"], tiny_manifest, cache_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def speaker_laq_run(tiny_manifest, cache_dir, tmp_path_factory) -> SpeakerRun:
    """The same corpus and normalisation with the default LAQ (full grid, recovery), exported from quantized.pt."""
    return _speaker_run(
        "speaker_laq_run",
        ("quant.fixed_bits=[]", "quant.recovery.epochs=3"),
        [],
        tiny_manifest,
        cache_dir,
        tmp_path_factory,
    )


@pytest.fixture(scope="session")
def global_model(speaker_run, tmp_path_factory) -> Path:
    """The same network written as a globally normalised model (no normalisation entry, no population)."""
    header, arrays = model_file.read(speaker_run.model)
    # Weight codes stay packed; every float section (narrow ones arrive decoded) is written as float32.
    bits = {entry["name"]: None if "scale" in entry else entry.get("bits") for entry in header.pop("sections")}
    del header["normalize"]
    path = tmp_path_factory.mktemp("global_model") / "global.serq"
    model_file.write(
        path, header, [Section(name, arrays[name], bits[name]) for name in bits if not name.startswith("population_")]
    )
    return path
