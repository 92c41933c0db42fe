"""Train: `python -m lsc.train [overrides]` (Hydra). The composition root: builds data, centers, model, trainer.

    python -m lsc.train                                    # small encoder, digits, v21, CPU, < 1 minute
    python -m lsc.train +experiment=vit_1m data.root=/data/imagenet
    python -m lsc.train -m +sweep=ndim_nclasses            # multirun
    python -m lsc.train ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt    # resume

Every run ends with one `lsc: key=value ...` line and writes the same metrics to <run dir>/metrics.json.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from lsc.centers import METHODS, ClassCenters, n_min
from lsc.centers.assignment import (
    BOUNDED_WALK,
    Assignment,
    assign_bounded,
    assign_global_greedy,
    assign_nearest_free,
    check_assignable,
)
from lsc.centers.prototypes import class_prototypes, default_cache_dir
from lsc.models import build_backbone
from lsc.models.module import init_weights_from
from lsc.runconfig import (
    ASSIGNMENT_KEY,
    CENTERS_KEY,
    CLASS_NAMES_KEY,
    INJECTED,
    check_input,
    check_resume,
    input_spec,
    load_checkpoint,
    stored_run_config,
    with_checkpoint_groups,
)
from lsc.utils import (
    quiet_lightning,
    register_resolvers,
    save_json,
    set_local_rendezvous_port,
    summary_line,
    to_float_dict,
)

log = logging.getLogger("lsc.train")
register_resolvers()


def resolve_n_dim(system: str, n_classes: int, n_dim, auto_min_dim: int = 0) -> int:
    """`n_dim: auto` = max(n_min, auto_min_dim): n_min for many classes, a floor for few (see README)."""
    if n_dim in (None, "auto"):
        return max(n_min(system, n_classes), auto_min_dim)
    if isinstance(n_dim, str) or int(n_dim) != n_dim:
        raise ValueError(f"centers.n_dim must be 'auto' or an integer, got {n_dim!r}")
    return int(n_dim)


ASSIGN = ("keyed", "data")


def build_centers(
    cfg: DictConfig, n_classes: int, dm=None, ckpt: dict | None = None, init: dict | None = None
) -> ClassCenters:
    """Centers from the centers config. ckpt (resume, eval): a data-aware table is the checkpoint's own. init
    (init_from, a grown label space): the old classes keep the checkpoint's table, new classes take free vectors."""
    system = cfg.system
    if system == "table":
        table = cfg.get("table")
        if table is None:
            raise ValueError("centers=table needs centers.table=<path to a .pt/.npy [n_classes, n_dim] tensor>")
        cc = ClassCenters("table", n_classes, table=table, seed=cfg.get("seed", 0), shuffle=False)
        if cc.system.count != n_classes:
            raise ValueError(
                f"table centers have {cc.system.count:,} rows but the data has {n_classes:,} classes; "
                "give one row per class"
            )
        return cc
    base = "a_n" if system == "a_nr" else system
    n_dim = resolve_n_dim(base, n_classes, cfg.get("n_dim", "auto"), cfg.get("auto_min_dim", 0) or 0)
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"centers.seed must be an integer, got {seed!r}")
    assign = cfg.get("assign", "keyed")
    if assign not in ASSIGN:
        raise ValueError(f"centers.assign must be one of {', '.join(ASSIGN)}, got {assign!r}")
    cc = ClassCenters(system, n_classes, n_dim=n_dim, seed=seed, shuffle=cfg.get("shuffle"))
    if assign == "keyed":
        return cc
    if ckpt is not None and ckpt.get(ASSIGNMENT_KEY) is not None:  # resume / eval: the run's own table
        spec = ckpt.get(CENTERS_KEY) or {}
        return ClassCenters.from_spec({**cc.spec, "assignment": spec.get("assignment")}, ckpt[ASSIGNMENT_KEY])
    old = init.get(ASSIGNMENT_KEY) if init is not None else None
    if old is not None and old.numel() > n_classes:
        raise ValueError(f"init_from has {old.numel():,} classes, more than this run's {n_classes:,}")
    if old is not None and old.numel() == n_classes:
        return ClassCenters.from_spec({**cc.spec, "assignment": init[CENTERS_KEY].get("assignment")}, old)
    if dm is None:
        raise ValueError("centers.assign=data needs the training data (a DataModule)")
    check_assignable(cc.system)
    proto = class_prototypes(
        dm,
        n_dim,
        kind=cfg.get("prototype", "pixels"),
        seed=seed,
        size=cfg.get("prototype_size", 32),
        ckpt=cfg.get("prototype_ckpt"),
        decode=cfg.get("prototype_decode", "draft"),
        cache_dir=_prototype_cache(cfg.get("prototype_cache", "auto")),
        memory_bytes=float(cfg.get("prototype_ram_gb", 2)) * 2**30,
    )
    if isinstance(proto, np.ndarray) and (old is not None or cfg.get("assign_rule", "ordered") == "global"):
        proto = torch.from_numpy(np.asarray(proto, dtype=np.float64))  # these two take them in memory
    if old is not None:  # grow: old classes keep their vectors, the new ones take free vectors nearest their data
        base = ClassCenters.from_spec({**cc.spec, "assignment": init[CENTERS_KEY].get("assignment")}, old)
        grown = base.grow(n_classes - old.numel(), proto[old.numel() :])
        log.info(f"assign=data: grew {old.numel():,} -> {n_classes:,} classes (old centers kept)")
        return grown
    rule = cfg.get("assign_rule", "ordered")
    if rule not in ("ordered", "global", "bounded"):
        raise ValueError(f"centers.assign_rule must be ordered, bounded or global, got {rule!r}")
    if rule == "global":
        index, stats = assign_global_greedy(cc.system, proto)
        stats = {**stats, "walks": 0, "pops": 0}
    elif rule == "bounded":
        index, stats = assign_bounded(cc.system, proto, cfg.get("assign_walk_max", BOUNDED_WALK))
    else:
        index, stats = assign_nearest_free(cc.system, proto)
    deferred = f"; {stats['deferred']:,} deferred to {stats['groups']:,} group walks" if "deferred" in stats else ""
    log.info(
        f"assign=data ({rule}): {n_classes:,} classes onto {cc.system.display} in {stats['seconds']:.1f} s "
        f"({stats['walks']:,} classes walked past a taken vector, {stats['pops']:,} vectors enumerated{deferred})"
    )
    return ClassCenters(
        cc.system, n_classes, seed=seed, shuffle=cc.shuffle, assignment=Assignment(index, cc.system.count)
    )


def _prototype_cache(value):
    """centers.prototype_cache: auto -> the default dir; null/false -> none; else a dir."""
    if value in (None, False, "null", ""):
        return None
    if value == "auto":
        return default_cache_dir()
    if not isinstance(value, str):
        raise ValueError(f"centers.prototype_cache must be auto, null or a directory, got {value!r}")
    return value


def is_lsc(cfg: DictConfig) -> bool:
    return str(cfg.model._target_).endswith("LSCModule")


def is_partial_fc(cfg: DictConfig) -> bool:
    return str(cfg.model._target_).endswith("PartialFCModule")


def build(cfg: DictConfig, ckpt: dict | None = None, init: dict | None = None, ckpt_path=None):
    """(datamodule, module, centers or None) from a composed config. `ckpt`: the checkpoint being resumed or
    evaluated; a data-aware assignment is then read from it instead of being computed again. `init`: the
    init_from checkpoint (weights only; its data-aware table is extended, never recomputed)."""
    if is_lsc(cfg) and cfg.model.get("predictor", "topk") not in METHODS:
        raise ValueError(
            f"model.predictor={cfg.model.predictor!r} is not a predictor; choose one of {', '.join(METHODS)}"
        )
    dm = hydra.utils.instantiate(cfg.data)
    if ckpt is not None:  # resume / eval: the images the model was trained on
        check_input(ckpt, dm, ckpt_path or cfg.get("ckpt_path") or "<checkpoint>")
    names = (ckpt or {}).get(CLASS_NAMES_KEY)
    if names is not None and hasattr(dm, "pin_classes"):  # the checkpoint's label space, whatever the data holds now
        dm.pin_classes(names)
    n_classes = dm.num_classes
    centers = build_centers(cfg.centers, n_classes, dm=dm, ckpt=ckpt, init=init) if is_lsc(cfg) else None
    if centers is not None:
        out_dim = centers.n_dim
    else:  # CE: the last layer is the classifier; Partial FC: an embedding, the class weights live in its head
        out_dim = int(cfg.model.embed_dim) if is_partial_fc(cfg) else n_classes
    backbone = build_backbone(cfg, dm, out_dim)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.pop("backbone")
    extra = {"centers": centers, "loss": hydra.utils.instantiate(cfg.loss)} if centers is not None else {}
    if is_partial_fc(cfg):
        extra = {"n_classes": n_classes}
    module = hydra.utils.instantiate(model_cfg, backbone=backbone, _convert_="all", **extra)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    module.class_names = dm.class_names
    module.input_spec = input_spec(dm)
    return dm, module, centers


def class_state_bytes(module) -> int:
    """Bytes of everything that grows with n_classes, optimizer state included (AdamW: two moments per weight):
    LSC keyed 0, LSC data-assigned its table, Partial FC its class weights, CE its last layer."""
    centers = getattr(module, "centers", None)
    if centers is not None:
        return centers.assignment.nbytes if centers.assignment is not None else 0
    head = getattr(module, "head", None)
    if head is not None:
        params = [head.weight]
    else:  # CE: the backbone's last linear layer is the classifier
        last = [m for m in module.backbone.modules() if isinstance(m, torch.nn.Linear)][-1:]
        params = list(last[0].parameters()) if last else []
    return 3 * sum(p.numel() * p.element_size() for p in params)


def instantiate_dict(cfg: DictConfig | None) -> list:
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


@rank_zero_only
def keep_csv_history(loggers: list) -> None:
    """Lightning's CSVLogger deletes a metrics.csv already in its directory, so a run resumed into its own output
    directory (hydra.run.dir) would lose the epochs before the resume: move it to metrics.1.csv (.2, ...) first;
    `lsc.study.runs.epochs` reads them back in order."""
    for lg in loggers:
        if not isinstance(lg, CSVLogger):
            continue
        f = Path(lg.log_dir) / "metrics.csv"
        if f.is_file():
            n = 1
            while (kept := f.with_name(f"metrics.{n}.csv")).exists():
                n += 1
            f.rename(kept)
            log.info(f"CSV log: the earlier {f.name} is kept as {kept} (the resumed run writes a new {f.name})")


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def check_run(cfg: DictConfig) -> None:
    """Run-level settings that would otherwise fail late or do nothing silently."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    epochs, steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps", -1)
    if epochs is not None and epochs == 0 and not cfg.trainer.get("fast_dev_run"):
        raise ValueError(
            "trainer.max_epochs=0 trains nothing (no checkpoint would be written); set it >= 1, or evaluate a "
            "checkpoint with `python -m lsc.eval ckpt_path=...`"
        )
    if steps == 0:
        raise ValueError("trainer.max_steps=0 trains nothing; set it >= 1 or -1 (no step limit)")


def cpu_has_native_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_slow_cpu_bf16(trainer) -> bool:
    """bf16 autocast on a CPU without native bf16 (no AVX-512 BF16 / AMX: oneDNN emulates it) runs convolutions
    several times slower than float32 (8x for encoder_small on an AVX2 EPYC): say so, and what to set. True when
    it warned."""
    if trainer.precision != "bf16-mixed" or not isinstance(trainer.accelerator, L.pytorch.accelerators.CPUAccelerator):
        return False
    if cpu_has_native_bf16():
        return False
    log.warning(
        f"trainer.precision=bf16-mixed on a CPU without native bf16 ({torch.backends.cpu.get_cpu_capability()}): "
        "autocast convolutions run several times slower than float32 here; set trainer.precision=32-true"
    )
    return True


def checkpoint_to_test(trainer: L.Trainer) -> str | None:
    """What `trainer.test` scores: the best checkpoint's path (the one validation chose), or None (the weights in
    memory) when there is no best checkpoint, or its file is gone. The last happens on resuming a finished run from a
    last.ckpt written before LastCheckpoint ran behind ModelCheckpoint: its state names the best file that the same
    epoch's save then replaced."""
    cb = trainer.checkpoint_callback
    best = getattr(cb, "best_model_path", "") if cb is not None else ""
    if not best:
        return None
    if not trainer.strategy.broadcast(Path(best).is_file(), src=0):  # rank 0's answer: every rank tests the same
        log.warning(f"test: the best checkpoint {best} is gone; testing the weights in memory (the last epoch's)")
        return None
    return best  # not "best": Lightning would warn that last.ckpt's LastCheckpoint is a second checkpoint callback


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test), write metrics.json, print the summary line; returns the metrics.

    With `ckpt_path` the run resumes from that checkpoint (weights, optimizer, loop and data-loader position) and
    must use the checkpoint's own data/model/centers/loss settings (`main` takes them from the checkpoint).
    """
    t0 = time.time()
    check_run(cfg)
    quiet_lightning()
    ckpt_path, ckpt, init_path, init = cfg.get("ckpt_path"), None, cfg.get("init_from"), None
    if ckpt_path and init_path:
        raise ValueError("give ckpt_path (resume a run) or init_from (start a new run from its weights), not both")
    if ckpt_path:
        ckpt = load_checkpoint(ckpt_path)
        check_resume(ckpt, cfg, ckpt_path)
    if init_path:
        init = load_checkpoint(init_path, "init_from")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    if any("Wandb" in str(c.get("_target_", "")) for c in (cfg.get("logger") or {}).values() if c):
        os.environ.setdefault("WANDB_MODE", "offline")  # never a login prompt
        os.environ.setdefault("WANDB_SILENT", "true")
    dm, module, centers = build(cfg, ckpt=ckpt, init=init, ckpt_path=ckpt_path)
    del ckpt  # Lightning loads it again (weights, optimizer, loops)
    if init is not None:
        grown = init_weights_from(module, init, init_path)
        log.info(f"init_from={init_path}: weights loaded ({grown['old_classes']} -> {dm.num_classes:,} classes)")
        del init
    if centers is not None:
        log.info(f"centers: {centers}")
    n_params = sum(p.numel() for p in module.parameters())
    log.info(f"model: {type(module).__name__}, {n_params:,} parameters; {dm.num_classes:,} classes")
    callbacks = instantiate_dict(cfg.get("callbacks"))
    loggers = instantiate_dict(cfg.get("logger"))
    keep_csv_history(loggers)
    if "ddp" in str(cfg.trainer.get("strategy", "")) and int(cfg.trainer.get("num_nodes", 1) or 1) == 1:
        set_local_rendezvous_port()  # not an ephemeral port: see lsc.utils
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    warn_slow_cpu_bf16(trainer)
    for lg in loggers:
        lg.log_hyperparams(module.run_config)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        metrics = to_float_dict(trainer.callback_metrics)
        if cfg.get("test") and not trainer.fast_dev_run and dm.test_set is not None:
            # the test split is scored once, on the checkpoint that validation (held out from train) chose
            trainer.test(module, datamodule=dm, ckpt_path=checkpoint_to_test(trainer), weights_only=True)
            metrics.update(to_float_dict(trainer.callback_metrics))
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()
    extra = {"epochs": trainer.current_epoch, "time_s": round(time.time() - t0, 1)}
    extra["class_state_bytes"] = class_state_bytes(module)
    if getattr(centers, "assign_stats", None):
        extra["assign_s"] = round(centers.assign_stats["seconds"], 2)
    skipped = dm.bad_images.value
    if skipped:
        extra["skipped_images"] = skipped
        log.warning(f"data.on_bad_image=skip: skipped {skipped:,} unreadable image(s) (warnings above name them)")
    if centers is not None:
        extra["n_dim"] = centers.n_dim
    if trainer.is_global_zero:
        save_json(out / "metrics.json", {**metrics, **extra})
        print(summary_line(metrics, extra), flush=True)
    return metrics


def resume_config(cfg: DictConfig, overrides: list[str], groups: set[str]) -> DictConfig:
    """With ckpt_path: the checkpoint's own run config, CLI overrides on top. Logs and metrics go to this run's
    output dir; checkpoints continue in the resumed checkpoint's folder (last.ckpt in place, best score kept)."""
    path = cfg.get("ckpt_path")
    if not path:
        return cfg
    return stored_run_config(load_checkpoint(path), cfg, overrides, groups, ckpt_dir=Path(path).resolve().parent)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    with open_dict(cfg):
        cfg.paths.output_dir = hc.runtime.output_dir
    overrides = [o for o in hc.overrides.task if o not in INJECTED]
    cfg = resume_config(cfg, overrides, set(hc.runtime.choices.keys()))
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    sys.argv = with_checkpoint_groups(sys.argv)
    main()
