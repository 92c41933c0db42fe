"""train/data_wait: the share of each training step spent waiting for its batch; one warning when data-bound."""

from __future__ import annotations

import time
from collections import deque

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn


class DataWaitMonitor(L.Callback):
    """Logs `train/data_wait` = wait / (wait + busy) per step (its epoch mean goes to the loggers), where

      wait = on_train_batch_start - the previous step's on_train_batch_end: fetching the batch, the host-to-device
             copy (and data.decode=gpu's decoding), plus whatever else runs between two steps
      busy = on_train_batch_end - on_train_batch_start: forward, backward, optimizer (CUDA synchronized first, so
             queued kernels count as busy, not as the next step's wait)

    The first step of an epoch and the first after a validation pass are not measured (their wait includes worker
    start-up and validation). Warns once when the mean share of the last `window` steps exceeds `threshold`, after
    `warmup_steps` measured steps, and only when steps wait at least `min_wait_ms` (a 3 ms wait on a 3 ms toy step
    is no bottleneck worth a warning).
    """

    def __init__(
        self, threshold: float = 0.3, warmup_steps: int = 10, window: int = 50, min_wait_ms: float = 5.0, sync_cuda=True
    ):
        super().__init__()
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
        self.threshold, self.warmup, self.min_wait = threshold, warmup_steps, min_wait_ms / 1000
        self.sync_cuda, self.recent = sync_cuda, deque(maxlen=window)
        self.measured, self.warned = 0, False
        self._last_end = self._start = self._wait = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._last_end = None

    def on_validation_start(self, trainer, pl_module):
        self._last_end = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        self._wait = None if self._last_end is None else now - self._last_end
        self._start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.sync_cuda and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        busy = time.perf_counter() - self._start
        if self._wait is not None:
            share = self._wait / max(self._wait + busy, 1e-9)
            pl_module.log("train/data_wait", share, on_step=False, on_epoch=True, batch_size=1)
            self.recent.append((share, self._wait))
            self.measured += 1
            if not self.warned and self.measured >= self.warmup:
                self._check(trainer)
        self._last_end = time.perf_counter()

    def _check(self, trainer):
        share = sum(s for s, _ in self.recent) / len(self.recent)
        wait = sum(w for _, w in self.recent) / len(self.recent)
        if share <= self.threshold or wait < self.min_wait:
            return
        self.warned = True
        dm = trainer.datamodule
        workers = getattr(dm, "num_workers", None)
        decode = "" if getattr(dm, "decode", None) == "gpu" else ", or decode JPEGs on the GPU (data.decode=gpu)"
        rank_zero_warn(
            f"data-bound: {share:.0%} of each training step ({wait * 1000:.1f} ms) waits for the next batch "
            f"(> {self.threshold:.0%}). Raise data.num_workers (now {workers}), prepare the data once with "
            f"`python -m lsc.prepare` and train with data=streaming{decode}"
        )
