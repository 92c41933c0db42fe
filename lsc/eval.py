"""Evaluate a checkpoint under every predictor: `python -m lsc.eval ckpt_path=<ckpt> [split=val] [overrides]`.

The run is rebuilt from the resolved config stored in the checkpoint; command-line overrides apply on top
(data.root=..., data.batch_size=..., trainer=gpu). Scores the test split, or with `split=val` the run's validation
split (for instance labels, the fixed training sample it validated on). Prints `lsc: test/acc_cossim=...
test/acc_topk=...` (val/... with split=val) and writes metrics.json next to Hydra's output.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lsc.callbacks import PredictorAccuracy
from lsc.runconfig import INJECTED, load_checkpoint, stored_run_config, with_checkpoint_groups
from lsc.train import build
from lsc.utils import quiet_lightning, register_resolvers, save_json, summary_line, to_float_dict

log = logging.getLogger("lsc.eval")
register_resolvers()


def evaluate(cfg: DictConfig, ckpt_path: str | None, overrides: list[str] = (), groups: set[str] = frozenset()):
    if not ckpt_path:
        raise ValueError("lsc.eval needs ckpt_path=<checkpoint file>, e.g. logs/train/runs/<run>/checkpoints/last.ckpt")
    split = cfg.get("split")
    if split not in ("test", "val", None):
        raise ValueError(f"lsc.eval split must be 'test' or 'val', got {split!r}")
    path = Path(ckpt_path)
    ckpt = load_checkpoint(path)
    rc = stored_run_config(ckpt, cfg, list(overrides), set(groups))
    dm, module, centers = build(rc, ckpt=ckpt, ckpt_path=path)
    module.on_load_checkpoint(ckpt)  # refuses a centers mismatch
    module.load_state_dict(ckpt["state_dict"])
    trainer = hydra.utils.instantiate(
        rc.trainer, callbacks=[PredictorAccuracy(train_eval=False)], logger=False, max_epochs=1
    )
    if split != "val":
        dm.setup("test")
        if dm.test_set is None:
            if split == "test":
                raise ValueError(f"split=test: {type(dm).__name__} has no test split (its held-out images are the "
                                 "validation split); use split=val")  # fmt: skip
            log.info("the data has no test split: scoring the validation split (split=val)")
            split = "val"
    split = split or "test"
    if split == "val":  # the run's validation split (instance labels: its fixed training sample)
        dm.setup("validate")
        trainer.validate(module, datamodule=dm, verbose=False)
    else:  # set up above
        trainer.test(module, datamodule=dm, verbose=False)
    metrics = to_float_dict(trainer.callback_metrics)
    info = getattr(dm, "eval_info", None)
    if info is not None:  # e.g. han_glyphs: the classes a test font lacks, skipped and counted
        metrics.update(info(split))
    save_json(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    skipped = metrics.get(f"{split}/classes_skipped")
    extra = {"classes_skipped": int(skipped)} if skipped is not None else {}
    print(summary_line(metrics, {**extra, "ckpt": str(path)}), flush=True)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = HydraConfig.get().runtime.output_dir
    L.seed_everything(cfg.seed, verbose=False)
    quiet_lightning()
    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if o not in INJECTED]
    evaluate(cfg, cfg.ckpt_path, overrides, set(hc.runtime.choices.keys()))


if __name__ == "__main__":
    sys.argv = with_checkpoint_groups(sys.argv)
    main()
