"""Evaluate a checkpoint under every predictor: `python -m lsc.eval ckpt_path=<ckpt> [overrides]`.

The run is rebuilt from the resolved config stored in the checkpoint; command-line overrides apply on top
(data.root=..., data.batch_size=..., trainer=gpu). Prints `lsc: test/acc_cossim=... test/acc_topk=...` and
writes metrics.json next to Hydra's output.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from lsc.callbacks import PredictorAccuracy
from lsc.models.module import CONFIG_KEY
from lsc.train import build
from lsc.utils import register_resolvers, save_json, summary_line, to_float_dict

log = logging.getLogger("lsc.eval")
register_resolvers()


def run_config(ckpt: dict, overrides: list[str], composed: DictConfig, groups: set[str]) -> DictConfig:
    """The training run's config from the checkpoint (else the composed one) with the CLI overrides on top.

    Group choices (trainer=gpu, data=imagefolder) take the composed group; value overrides (data.root=...) merge.
    """
    stored = ckpt.get(CONFIG_KEY)
    if not stored:
        return composed
    cfg = OmegaConf.create(stored)
    with open_dict(cfg):
        for o in overrides:
            key, _, _ = o.lstrip("+~").partition("=")
            if key in ("ckpt_path",) or key.startswith("hydra"):
                continue
            if key in groups:
                OmegaConf.update(cfg, key.replace("/", "."), OmegaConf.select(composed, key.replace("/", ".")))
            else:
                OmegaConf.update(cfg, key, OmegaConf.select(composed, key), force_add=True)
    return cfg


def evaluate(cfg: DictConfig, ckpt_path: str, overrides: list[str] = (), groups: set[str] = frozenset()):
    path = Path(ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"ckpt_path={path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    rc = run_config(ckpt, list(overrides), cfg, set(groups))
    with open_dict(rc):
        rc.paths.output_dir = cfg.paths.output_dir
        rc.trainer.default_root_dir = cfg.paths.output_dir
    dm, module, centers = build(rc)
    module.on_load_checkpoint(ckpt)  # refuses a centers mismatch
    module.load_state_dict(ckpt["state_dict"])
    trainer = hydra.utils.instantiate(
        rc.trainer, callbacks=[PredictorAccuracy(train_eval=False)], logger=False, max_epochs=1
    )
    dm.setup("test")
    trainer.test(module, datamodule=dm, verbose=False)
    metrics = to_float_dict(trainer.callback_metrics)
    save_json(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    print(summary_line(metrics, {"ckpt": str(path)}), flush=True)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = HydraConfig.get().runtime.output_dir
    L.seed_everything(cfg.seed, verbose=False)
    hc = HydraConfig.get()
    evaluate(cfg, cfg.ckpt_path, hc.overrides.task, set(hc.runtime.choices.keys()))


if __name__ == "__main__":
    main()
