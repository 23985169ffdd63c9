"""Train a speech-emotion model, then quantize it as configured. Usage: ``python train.py [overrides]``."""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ser import rundir
from ser.errors import SERError
from ser.io import write_json
from ser.quant import config as quant_config
from ser.termination import sigterm_fails_the_run

log = logging.getLogger("ser")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
quant_config.register()  # quant/_base, which conf/quant/laq.yaml extends: every quantization option at its default


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from ser.pipeline import train

    # Lightning's own console handler would print every message twice next to Hydra's.
    logging.getLogger("lightning").handlers.clear()
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        with rundir.claim(output_dir), sigterm_fails_the_run():
            results = train(cfg, output_dir)
    except rundir.RunDirectoryBusy as exc:  # the directory is someone else's: write nothing into it
        log.error("%s", exc)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        sys.exit(1)
    except Exception as exc:
        # failed.json lets `ser report` list the job; other jobs of a sweep carry on.
        user_error = isinstance(exc, SERError)
        write_json(
            output_dir / "failed.json",
            {
                "error": str(exc) if user_error else f"{type(exc).__name__}: {exc}",
                "traceback": None if user_error else traceback.format_exc(),
            },
        )
        if not user_error:
            raise
        log.error("%s", exc)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        sys.exit(1)
    return results.objective if results is not None else 0.0  # None: a DDP worker process


if __name__ == "__main__":
    main()
