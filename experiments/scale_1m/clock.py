"""The scale_1m study's clock: a Lightning callback that runs every row of the study on the same wall-time budget.

`+callbacks.clock._target_=clock.WallClock` (run.py puts this folder on the children's PYTHONPATH). Wall time is
counted from the process's start (imports, data, prototypes, assignment included), minus the pauses this callback
spends scoring the held-out images, so every row is compared on the same clock and the cost of measuring (a dense
scan of the class weights for Partial FC and CE) is not charged to the run. Held-out top-1 / top-k on the
DataModule's test split (images never trained on) is scored at fixed wall times (`eval_at`, seconds; on its first
`mid_size` images) and once at the end (all of them); training stops at `budget_s`. Writes <output_dir>/clock.json
after every evaluation: the start-up times (data, built, first step), throughput, peak RSS, epochs and the curve.
`data._target_=clock.TimedGrid` is `data=fmnist_grid` logging how long its setup took (the data part of start-up).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset

from lsc.data.fmnist_grid import FashionMNISTGridDataModule

log = logging.getLogger("lsc.data")


def process_start() -> float:
    """This process's start (epoch seconds), from /proc: field 22 of /proc/self/stat (ticks since boot) + btime."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        lines = Path("/proc/stat").read_text().splitlines()
        btime = next(int(line.split()[1]) for line in lines if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return time.time()


def peak_rss() -> int:
    """Peak resident set size of this process so far, bytes (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class TimedGrid(FashionMNISTGridDataModule):
    """`data=fmnist_grid` that logs how long building its splits took (`data._target_=clock.TimedGrid`): the data
    part of the start-up, whether the prototype pass (LSC) or the Trainer (Partial FC, CE) calls setup first."""

    setup_s: float | None = None

    def setup(self, stage: str | None = None):
        if self.train_set is not None:
            return
        t = time.perf_counter()
        super().setup(stage)
        self.setup_s = time.perf_counter() - t
        log.info(f"data: {self.num_classes:,} classes, Fashion-MNIST tiles read and split in {self.setup_s:.2f} s")


def _no_labels(out: torch.Tensor) -> torch.Tensor:
    return torch.full(out.shape[:1], -1, dtype=torch.long, device=out.device)


class WallClock(L.Callback):
    """Scores the test split at wall times `eval_at` and at the end; stops training at `budget_s` (see module).

    train_acc=False: the modules' running training accuracy is not computed (its label is -1, train/acc reads 0).
    Partial FC and CE predict it with a dense scan of every class weight per step (at 10^6 classes a scan as large
    as the loss's own at sample rate 1.0, ten times it at 0.1), which measures, not trains."""

    def __init__(
        self,
        budget_s: float,
        eval_at: list[float] | None = None,
        k: int = 5,
        out: str | None = None,
        train_acc: bool = True,
        eval_batch: int = 500,
        mid_size: int | None = None,
    ):
        super().__init__()
        self.t0 = process_start()
        self.t_init = time.time()  # after data module, prototypes, assignment and model are built
        self.rss_init = peak_rss()
        self.budget, self.eval_at, self.k = float(budget_s), sorted(float(t) for t in (eval_at or [])), k
        self.out = out
        self.paused = 0.0  # seconds spent scoring held-out images
        self.images = self.steps = 0
        self.t_setup = self.t_train = self.t_first_batch = self.t_first_step = None
        self.curve: list[dict] = []
        self.epochs: list[dict] = []  # wall and training seconds at the end of every epoch
        self.rss_train = None
        self.train_acc, self.eval_batch, self.mid_size = train_acc, eval_batch, mid_size
        self.rss_pre_eval = None  # peak RSS before the first scoring: training's own (scoring may add its logits)
        self.step_walls = [None, None]  # the wall at the last two step ends: the stop came at the first past budget

    def wall(self, now: float | None = None) -> float:
        return (now or time.time()) - self.t0 - self.paused

    def setup(self, trainer, pl_module, stage):
        self.t_setup = time.time()  # after datamodule.setup (when it was not set up before)

    def on_train_start(self, trainer, pl_module):
        self.t_train = time.time()
        self.rss_train = peak_rss()
        if not self.train_acc:
            pl_module.predict_labels = _no_labels  # an instance attribute: the module's method is left alone

    def on_train_epoch_end(self, trainer, pl_module):
        now = time.time()
        self.epochs.append({"epoch": trainer.current_epoch, "wall_s": round(self.wall(now), 2),
                            "train_s": round(now - self.t_train - self.paused, 2), "images": self.images})  # fmt: skip

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.t_first_batch is None:
            self.t_first_batch = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch is not None:
            self.images += len(batch[1])
        self.steps += 1
        if self.t_first_step is None:
            self.t_first_step = time.time()
        w = self.wall()
        self.step_walls = [self.step_walls[1], round(w, 3)]
        due = [t for t in self.eval_at if t <= w]
        if due:  # several due at once (a start-up past them, or a long step): one score, for the latest
            self.eval_at = [t for t in self.eval_at if t > w]
            self.score(trainer, pl_module, at=max(due))
        if w >= self.budget:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        last = self.curve[-1] if self.curve else None
        # the end is scored on the whole test split, also where a mid-run score (a subset) came at the last step
        if last is None or last["step"] != self.steps or (self.mid_size and last["at"] is not None):
            self.score(trainer, pl_module)
        self.write(trainer, final=True)

    @torch.no_grad()
    def score(self, trainer, pl_module, at: float | None = None):
        """Held-out top-1/top-k now; `at`: the eval time it was due for (None: the end of training, on the whole
        test split; before it, on its first `mid_size` images when given: a dense scan of 10^6 class weights costs
        ~7 ms per image on one core)."""
        t = time.time()
        if self.rss_pre_eval is None:
            self.rss_pre_eval = peak_rss()
        dm = trainer.datamodule
        if getattr(dm, "test_set", None) is None:
            dm.setup("test")
        was_training = pl_module.training
        pl_module.eval()
        hit1 = hitk = n = 0
        ds = dm.test_set
        if at is not None and self.mid_size and self.mid_size < len(ds):
            ds = Subset(ds, range(self.mid_size))
        # large batches: Partial FC's top_labels normalizes its whole weight once per batch
        for x, y in DataLoader(ds, batch_size=self.eval_batch, shuffle=False):
            x, y = x.to(pl_module.device), y.to(pl_module.device)
            with trainer.precision_plugin.forward_context():
                z = pl_module(x)
            top = pl_module.top_labels(z.float(), min(self.k, dm.num_classes))
            hit1 += int((top[:, 0] == y).sum())
            hitk += int((top == y[:, None]).any(1).sum())
            n += len(y)
        pl_module.train(was_training)
        wall = self.wall(t)
        train_s = t - self.t_train - self.paused if self.t_train else 0.0
        self.paused += time.time() - t
        self.curve.append({"at": at, "wall_s": round(wall, 2), "train_s": round(train_s, 2), "step": self.steps,
                           "images": self.images, "acc1": hit1 / max(n, 1), f"acc{self.k}": hitk / max(n, 1),
                           "n_test": n, "eval_s": round(time.time() - t, 2)})  # fmt: skip
        self.write(trainer)

    def write(self, trainer, final: bool = False):
        if not trainer.is_global_zero:
            return
        out = Path(self.out or trainer.default_root_dir)
        s = lambda t: None if t is None else round(t - self.t0, 3)  # noqa: E731
        train_s = (time.time() - self.t_train - self.paused) if self.t_train else None
        rec = {
            "budget_s": self.budget,
            "final": final,
            "process_start": self.t0,
            # seconds from the process's start
            "built_s": s(self.t_init),  # data module + (LSC data-aware) data setup, prototypes, assignment; model
            "setup_s": s(self.t_setup),  # + Trainer, datamodule.setup when not done before
            "train_start_s": s(self.t_train),
            "first_batch_s": s(self.t_first_batch),
            "first_step_s": s(self.t_first_step),  # the first optimizer step done
            "eval_pause_s": round(self.paused, 2),
            "train_s": None if train_s is None else round(train_s, 2),  # training wall, evaluation pauses excluded
            "steps": self.steps,
            "last_steps_wall_s": self.step_walls,  # training wall (scoring excluded) at the last two step ends
            "images": self.images,
            "images_per_s": None if not train_s else round(self.images / train_s, 1),
            "peak_rss_built": self.rss_init,
            "peak_rss_train_start": self.rss_train,
            "peak_rss_pre_eval": self.rss_pre_eval,
            "peak_rss": peak_rss(),
            "data_s": getattr(trainer.datamodule, "setup_s", None),
            "curve": self.curve,
            "epochs": self.epochs,
        }
        tmp = out / "clock.json.tmp"
        tmp.write_text(json.dumps(rec, indent=1) + "\n")
        os.replace(tmp, out / "clock.json")
