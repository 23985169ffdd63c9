"""Train a speech-emotion model (and, per config, quantize it). Usage: ``python train.py [overrides]``."""

from __future__ import annotations

import logging
import sys
import warnings

import hydra
from omegaconf import DictConfig

from ser.errors import SERError

log = logging.getLogger("ser")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from ser.pipeline import train

    # Lightning's own console handler would print every message twice next to Hydra's.
    logging.getLogger("lightning.pytorch").handlers.clear()

    try:
        results = train(cfg, HydraConfig.get().runtime.output_dir)
    except SERError as exc:
        log.error("%s", exc)
        sys.exit(1)
    return results["baseline"]["val_acc"]


if __name__ == "__main__":
    main()
