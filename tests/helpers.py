"""Shared test helpers for the training app: compose `conf/train.yaml` in-process with tiny CPU overrides.

`make_cfg(tmp_path, *overrides)` is the lightning-hydra-template's compose fixture made into a factory
(style.md section 7): Hydra's compose API, `paths.*` under tmp_path, `HydraConfig().set_config` so
`${hydra:...}` interpolations resolve outside `@hydra.main`, and GlobalHydra cleared afterwards.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FMNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
HAS_FMNIST = (FMNIST_ROOT / "train-images-idx3-ubyte.gz").exists() or (FMNIST_ROOT / "train-images-idx3-ubyte").exists()
# the three small CJK fonts `make install` installs (tests of data=han_glyphs use these, not every system font)
HAN_TEST_FONTS = (
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/opentype/ipaexfont-mincho/ipaexm.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)
HAS_HAN_TEST_FONTS = all(Path(f).exists() for f in HAN_TEST_FONTS)

# CPU, no logger, synthetic data, the ~0.1M-parameter encoder, one epoch (style.md section 7 "TINY").
# `~logger`, not `logger=null`: the latter fails on the CLI in Hydra 1.3.8 (style.md trap 2).
TINY = [
    "trainer=cpu",
    "~logger",
    "data=synthetic",
    "model/backbone=encoder_small",
    "data.batch_size=8",
    "trainer.max_epochs=1",
]
TINY_SYNTHETIC = ["data.num_samples=32"]  # only valid while data=synthetic


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _merge(base: list[str], overrides: list[str]) -> list[str]:
    """base overrides minus those whose key the test overrides itself (e.g. `logger=csv` drops `~logger`)."""
    keys = {_key(o) for o in overrides}
    return [o for o in base if _key(o) not in keys] + list(overrides)


def compose_cfg(
    overrides: list[str] | tuple[str, ...] = (), config_name: str = "train", return_hydra_config: bool = False
) -> DictConfig:
    """Plain compose of conf/<config_name>.yaml (no tiny overrides, no paths); GlobalHydra cleared afterwards."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()


def make_cfg(
    tmp_path: Path | str,
    *overrides: str,
    tiny: bool = True,
    quiet: bool = True,
    config_name: str = "train",
    keep_hydra: bool = False,
) -> DictConfig:
    """Compose a run config whose outputs all go under tmp_path.

    Args:
        tmp_path: run directory (paths.output_dir, trainer.default_root_dir); logs/data dirs live below it.
        overrides: Hydra CLI overrides, applied after TINY (a test's own key replaces TINY's).
        tiny: prepend TINY (plus `data.num_samples=32` while the data is synthetic); with `+experiment=`, TINY
            keeps the experiment's data and backbone groups.
        quiet: drop the rich progress bar and the model summary (plain Lightning output only).
        config_name: train or eval.
        keep_hydra: keep the `hydra` node in the returned config (a real `@hydra.main` run has none).
    """
    tmp_path = Path(tmp_path)
    overrides = list(overrides)
    if tiny:
        base = list(TINY)
        if any(_key(o) == "experiment" for o in overrides):  # keep the experiment's own data and backbone
            base = [o for o in base if _key(o) not in ("data", "model/backbone")]
        data = next((o.partition("=")[2] for o in reversed(overrides) if _key(o) == "data"), None)
        if data == "synthetic" or (data is None and "data=synthetic" in base):
            base += TINY_SYNTHETIC
        overrides = _merge(base, overrides)
    overrides = _merge(
        [
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        overrides,
    )
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
            HydraConfig().set_config(cfg)
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.trainer.default_root_dir = str(tmp_path)
        if quiet:
            if cfg.get("callbacks"):
                cfg.callbacks.pop("rich_progress_bar", None)
            cfg.trainer.enable_progress_bar = False
            cfg.trainer.enable_model_summary = False
        if not keep_hydra:
            del cfg["hydra"]
    return cfg


# ---- independent references -------------------------------------------------------------------------------


def system_count(system: str, n: int) -> int:
    """Vector counts from the closed forms in the papers (not from lsc.centers)."""
    if system in ("v11", "v21", "v22"):
        m, k = int(system[1]), int(system[2])
        return (
            math.factorial(n) // (math.factorial(m) * math.factorial(k) * math.factorial(n - m - k))
            if n >= m + k
            else 0
        )
    if system == "v22p":  # V_{n+1}^{22} with the last coordinate dropped: a bijection, so |V_{n+1}^{22}|
        return system_count("v22", n + 1)
    if system in ("a_n", "a_nr"):
        return n * (n + 1)
    if system == "a_np":
        return n * (n + 1) // 2
    if system == "a_n_interp":
        return n * n * (n + 1)
    raise KeyError(system)


def expected_n_dim(system: str, n_classes: int, floor: int = 16) -> int:
    """`n_dim: auto` = max(n_min, auto_min_dim), n_min by linear search over the closed-form counts."""
    n = 1
    while system_count(system, n) < n_classes:
        n += 1
    return max(n, floor)


# ---- subprocess runs ------------------------------------------------------------------------------------------


# set in this process by an in-process DDP Trainer (Lightning writes MASTER_PORT into os.environ): a subprocess that
# inherits them reuses one port for every DDP run, and the second run within TIME_WAIT fails with EADDRINUSE
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "RANK", "GROUP_RANK")


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        HYDRA_FULL_ERROR="1",
    )
    return env


def lsc_train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lsc.train", *args]


def run_lsc(*args: str, timeout: float = 300, cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    """`python -m lsc.train <args>`; fails the test with the tail of the output on a non-zero exit."""
    p = subprocess.run(
        lsc_train_cmd(*args), env=subprocess_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-5000:]}")
    return p


def run_ddp(*args, **kwargs):
    """run_lsc, once more if rank 0 lost its rendezvous port: Lightning picks a free port, closes it and binds it
    again only after the other rank has started, so another process can take it in between (EADDRINUSE)."""
    try:
        return run_lsc(*args, **kwargs)
    except AssertionError as e:
        if "EADDRINUSE" not in str(e):
            raise
        return run_lsc(*args, **kwargs)


# ---- fake datasets on disk ------------------------------------------------------------------------------------


def make_cifar(root: Path, variant: int = 10, n_train: int = 20, n_test: int = 8, seed: int = 0) -> dict:
    """Standard CIFAR python-pickle layout under root; returns the raw arrays {"train": (x, y), "test": (x, y)}.

    CIFAR-10: cifar-10-batches-py/data_batch_1..5 + test_batch, 'data' uint8 [n, 3072] and 'labels'.
    CIFAR-100: cifar-100-python/train + test with 'fine_labels' (and 'coarse_labels').
    Labels cycle through 0 .. variant - 1 so the top class is present (num_classes = max label + 1).
    """
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / ("cifar-10-batches-py" if variant == 10 else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    raw = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = (np.arange(n) * 7 + (split == "test")) % variant
        if split == "train":
            y[-1] = variant - 1
        raw[split] = (x, y)
        if variant == 10:
            files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
            chunks = np.array_split(np.arange(n), len(files))
            for f, idx in zip(files, chunks, strict=True):
                d = {"batch_label": f, "data": x[idx], "labels": [int(v) for v in y[idx]], "filenames": []}
                (folder / f).write_bytes(pickle.dumps(d))
        else:
            d = {"data": x, "fine_labels": [int(v) for v in y], "coarse_labels": [int(v) // 5 for v in y]}
            (folder / split).write_bytes(pickle.dumps(d))
    return raw


def make_image_folder(root: Path, n_classes: int = 3, per_class: int = 4, splits=("train", "val"), size: int = 40):
    """root/<split>/<class>/*.png; every image of class c is a solid colour COLOURS[c] (RGB)."""
    from PIL import Image

    for split in splits:
        for c in range(n_classes):
            d = root / split / f"class_{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (size, size), folder_colour(c)).save(d / f"img_{i}.png")
    return root


def folder_colour(c: int) -> tuple[int, int, int]:
    return (40 * c % 256, 255 - 30 * c % 256, 100 + 50 * c % 156)


# ---- callbacks a test adds through the config (`+callbacks.<name>._target_=helpers.<Class>`) ------------------


class BatchRecorder:
    """Appends the labels of every training batch to a text file, one line per step, as the run goes (so the
    lines survive a crash). Instantiated by Hydra inside `lsc.train.train`, hence a file and not a list."""

    def __new__(cls, path: str):
        import lightning as L

        class _Recorder(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                with open(path, "a") as f:
                    f.write(" ".join(str(int(v)) for v in batch[1]) + "\n")

        return _Recorder()


class CrashAt:
    """Raises after training step `step`, as the next batch starts (after every callback's hooks for `step`,
    checkpoints included, which Lightning calls last: a crash right after a save)."""

    def __new__(cls, step: int):
        import lightning as L

        class _Crash(L.Callback):
            def on_train_start(self, trainer, pl_module):
                self.start = trainer.global_step  # a run resumed at `step` (its stored config has this callback)

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == step > self.start:
                    raise RuntimeError(f"simulated crash at step {step}")

        return _Crash()


class KillAt:
    """SIGKILL of the training process itself after step `step`, as the next batch starts (after every callback's
    hooks for `step`: the checkpoint of that step is on disk), like `kill -9` of the job: no exception, no cleanup."""

    def __new__(cls, step: int):
        import signal

        import lightning as L

        class _Kill(L.Callback):
            def on_train_start(self, trainer, pl_module):
                self.start = trainer.global_step  # a run resumed at `step` (its stored config has this callback)

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == step > self.start:
                    os.kill(os.getpid(), signal.SIGKILL)

        return _Kill()


def recorded_batches(path: Path) -> list[list[int]]:
    return [[int(v) for v in ln.split()] for ln in Path(path).read_text().splitlines()]


def crash_and_resume(tmp_path: Path, args: list[str], step: int = 17):
    """Three runs of `args`: a (uninterrupted), b (crashes after step `step`, a checkpoint saved there) and c (resumes
    b's checkpoint). Returns the batches each recorded (lists of labels per step) and a's and c's final weights."""
    import pytest
    import torch

    import lsc.train

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    rec = "+callbacks.recorder._target_=helpers.BatchRecorder"
    lsc.train.train(make_cfg(a, *args, rec, f"+callbacks.recorder.path={tmp_path / 'a.txt'}"))
    crash = ["+callbacks.crash._target_=helpers.CrashAt", f"+callbacks.crash.step={step}"]
    cfg = make_cfg(b, *args, f"callbacks.last_checkpoint.every_n_train_steps={step}", *crash, rec)  # crash first
    with open_dict(cfg):
        cfg.callbacks.recorder.path = str(tmp_path / "b.txt")
    with pytest.raises(RuntimeError, match=f"simulated crash at step {step}"):
        lsc.train.train(cfg)
    last = b / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == step
    lsc.train.train(make_cfg(c, *args, f"ckpt_path={last}", rec, f"+callbacks.recorder.path={tmp_path / 'c.txt'}"))
    batches = [recorded_batches(tmp_path / f"{x}.txt") for x in "abc"]
    weights = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for d in (a, c)]
    return batches, weights
