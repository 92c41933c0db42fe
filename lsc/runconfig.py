"""Checkpoints as run records: load them safely, and rebuild a run from the resolved config each one carries.

`python -m lsc.train ckpt_path=...` (resume) and `python -m lsc.eval ckpt_path=...` both start from the config
stored in the checkpoint, with the command line's overrides on top; resuming refuses an override that would change
what is being learned (data, model, centers, loss), because Lightning would silently continue the old weights on it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_KEY = "lsc_config"
CENTERS_KEY = "lsc_centers"
ASSIGNMENT_KEY = "lsc_assignment"  # the data-aware class -> vector table (int64 [n_classes]), when there is one
CLASS_NAMES_KEY = "lsc_class_names"  # the data's class names (label -> name), when its classes have names
INPUT_KEY = "lsc_input"  # what the model saw: image size, channels, normalization (lsc.predict needs no data)

# what a resumed run may change: where data lives and how fast it is read, and how it is evaluated
RESUME_MAY_CHANGE = {
    "data.root",
    "data.batch_size",
    "data.num_workers",
    "data.pin_memory",
    "data.download",
    "data.val_limit",
    "data.on_bad_image",
    "data.check_images",
    "model.compile",
    "model.predictor",
    "centers.prototype_ckpt",  # the assignment itself comes from the checkpoint
}
# init_from is not a resume: a run that starts from another's weights may change everything
RESUME_FIXED_GROUPS = ("data", "model", "centers", "loss")  # and the run seed


def load_checkpoint(path, what: str = "ckpt_path") -> dict:
    """torch.load of a Lightning checkpoint with weights_only=True; clear errors for a missing path, a folder
    and a file that is not a checkpoint (torch's own advice to set weights_only=False would be wrong here)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}={path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(
            f"{what}={path} is a folder; point it at a checkpoint file, e.g. {path / 'checkpoints' / 'last.ckpt'}"
            if (path / "checkpoints").is_dir()
            else f"{what}={path} is a folder; point it at a checkpoint file (e.g. .../checkpoints/last.ckpt)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError) as e:
        # KeyError / IndexError: bytes that start like a pickle and reference memo slots that do not exist
        raise ValueError(
            f"{what}={path} is not a checkpoint written by lsc/Lightning (truncated, or another kind of file; "
            f"torch.load: {type(e).__name__}); pass a .ckpt from lsc.train, e.g. <run dir>/checkpoints/last.ckpt"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{what}={path} is not a Lightning checkpoint (no state_dict); pass a .ckpt from lsc.train")
    return ckpt


def input_spec(dm) -> dict:
    """The images a model was trained on, as the data module resolved them (a prepared folder's size comes from
    its manifest): recorded in every checkpoint, checked when the checkpoint meets data again."""
    return {
        "size": int(dm.out_size),
        "channels": int(dm.channels),
        "mean": [float(m) for m in dm.mean],
        "std": [float(s) for s in dm.std],
        "native_size": int(dm.native_size),
        "large_images": bool(getattr(dm, "large_images", False)),
    }


def check_input(ckpt: dict, dm, path) -> None:
    """Refuse data whose images differ in size or channels from the ones the checkpoint was trained on (e.g. a
    folder prepared at another size): the model would score, or keep training, on images it never saw."""
    then = ckpt.get(INPUT_KEY)
    if not then:  # a checkpoint older than the record
        return
    now = input_spec(dm)
    diff = [f"{k} {then[k]} -> {now[k]}" for k in ("size", "channels") if then[k] != now[k]]
    if diff:
        root = getattr(dm, "root", None)
        where = f" (data.root={root})" if root else ""
        raise ValueError(
            f"ckpt_path={path} was trained on {then['size']} px images with {then['channels']} channel(s), but this "
            f"data{where} gives other images: {', '.join(diff)}; use data of the run's size (a prepared folder: "
            f"python -m lsc.prepare ... data.img_size={then['size']}), or set data.img_size={then['size']}"
        )


def flat(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        else:
            out[key] = v
    return out


def _rebase(obj, old: str, new: str):
    """Every string under the old run dir now points into the new one (the stored config is resolved)."""
    if isinstance(obj, dict):
        return {k: _rebase(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebase(v, old, new) for v in obj]
    if isinstance(obj, str) and old and (obj == old or obj.startswith(old.rstrip("/") + "/")):
        return new + obj[len(old) :]
    return obj


def stored_run_config(
    ckpt: dict, composed: DictConfig, overrides: list[str], groups: set[str], ckpt_dir=None
) -> DictConfig:
    """The checkpoint's run config, moved to the composed run's output dir, with the CLI overrides on top.

    Group choices (trainer=gpu, data=imagefolder) take the composed group; value overrides (data.root=...) merge.
    ckpt_dir (resuming): checkpoint callbacks keep writing into the folder of the checkpoint resumed from, so that
    last.ckpt continues in place and the best-so-far score carries over (Lightning resets it when the folder
    changes, and `test` would then score the best of the resumed epochs only). Falls back to the composed config
    for a checkpoint that carries none.
    """
    stored = ckpt.get(CONFIG_KEY)
    if not stored:
        return composed
    new_out = str(composed.paths.output_dir)
    stored = _rebase(stored, str(stored.get("paths", {}).get("output_dir") or ""), new_out)
    cfg = OmegaConf.create(stored)
    with open_dict(cfg):
        cfg.paths = composed.paths
        for o in overrides:
            key = o.lstrip("+~").partition("=")[0]
            if key.startswith("hydra"):
                continue
            if key in groups:
                OmegaConf.update(cfg, key.replace("/", "."), OmegaConf.select(composed, key.replace("/", ".")))
            else:
                OmegaConf.update(cfg, key, OmegaConf.select(composed, key), force_add=True)
        if "trainer" in cfg:
            cfg.trainer.default_root_dir = new_out
        if ckpt_dir is not None:
            for cb in (cfg.get("callbacks") or {}).values():
                if cb is not None and "dirpath" in cb:
                    cb.dirpath = str(ckpt_dir)
    return cfg


def resume_conflicts(stored: dict, cfg: DictConfig) -> list[str]:
    """`key (checkpoint -> now)` for every setting a resumed run would silently change."""
    now = flat({g: OmegaConf.to_container(cfg[g], resolve=True) for g in RESUME_FIXED_GROUPS if g in cfg})
    then = flat({g: stored[g] for g in RESUME_FIXED_GROUPS if g in stored})
    now["seed"], then["seed"] = cfg.get("seed"), stored.get("seed")
    out = []
    for key in sorted(set(now) | set(then)):
        if key in RESUME_MAY_CHANGE or key not in then:  # keys newer than the checkpoint are not compared
            continue
        if now.get(key) != then[key]:
            out.append(f"{key} ({then[key]!r} -> {now.get(key)!r})")
    return out


def check_resume(ckpt: dict, cfg: DictConfig, path) -> None:
    stored = ckpt.get(CONFIG_KEY)
    if not stored:
        return
    diff = resume_conflicts(stored, cfg)
    if diff:
        raise ValueError(
            f"ckpt_path={path} was trained with other settings: {', '.join(diff)}; resume with the run's own "
            "settings (drop these overrides), or start a new run without ckpt_path"
        )


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
INJECTED: list[str] = []  # the group overrides `with_checkpoint_groups` added to argv (not the user's)


def data_option_of(stored: dict) -> str | None:
    """The conf/data option a stored run config came from: the one with its `_target_` sharing most keys."""
    data = stored.get("data") or {}
    target, best, best_n = data.get("_target_"), None, -1
    for f in sorted(CONF_DIR.glob("data/*.yaml")):
        opt = OmegaConf.load(f)
        if opt.get("_target_") != target:
            continue
        n = len(set(opt.keys()) & set(data))
        if n > best_n:
            best, best_n = f.stem, n
    return best


def with_checkpoint_groups(argv: list[str]) -> list[str]:
    """argv plus `data=<the checkpoint's data option>` when it has `ckpt_path=` and no `data=`: Hydra composes the
    default data config (digits) before the checkpoint's own is read, so an override of a key only the
    checkpoint's data has (`data.root=` of a streaming run, `data.test_designs=` of han_glyphs) would fail with
    "Key ... is not in struct". The injected choice is not an override: the stored config still wins."""
    args = argv[1:]
    path = next((a.partition("=")[2] for a in args if a.startswith("ckpt_path=")), None)
    if not path or any(a.startswith(("data=", "+data=", "~data")) for a in args):
        return argv
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True).get(CONFIG_KEY) or {}
    except Exception:  # the run reports a bad checkpoint itself, with its own message
        return argv
    opt = data_option_of(stored)
    if opt is None:
        return argv
    INJECTED[:] = [f"data={opt}"]
    return [argv[0], *INJECTED, *args]
