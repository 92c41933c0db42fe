"""last.ckpt at the end of every epoch and, optionally, every N training steps (to resume mid-epoch)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Checkpoint


class LastCheckpoint(Checkpoint):
    """Keeps `<dirpath>/last.ckpt` current: after every training epoch (validation included) and every
    `every_n_train_steps` optimizer steps when set. Writes go through `trainer.save_checkpoint`, i.e. Lightning's
    checkpoint IO, which saves atomically (temp file, then rename), so a killed run never leaves half a file.
    Resume with `ckpt_path=<dirpath>/last.ckpt`.

    Lightning's ModelCheckpoint cannot combine step and epoch triggers (they are mutually exclusive there).

    At an epoch's end this callback runs after every ModelCheckpoint, so last.ckpt holds their state after that
    epoch's save: a run resumed from it knows the newest best checkpoint, not the one that save replaced and deleted.
    Lightning calls a `Checkpoint`'s on_train_epoch_end after every other callback's and the module's, in list
    order among checkpoints; `setup` moves this one behind the others.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None, filename: str = "last.ckpt"):
        super().__init__()
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1 or null, got {every_n_train_steps}")
        self.path = Path(dirpath) / filename
        self.every = every_n_train_steps
        self._last_step = -1

    def setup(self, trainer, pl_module, stage):
        # a ModelCheckpoint behind this one would save (and delete the best file last.ckpt names) after last.ckpt
        # was written. A new list: the loop calling this hook goes on over the old one.
        ours = [c for c in trainer.callbacks if c is self]
        trainer.callbacks = [c for c in trainer.callbacks if c is not self] + ours

    def _save(self, trainer):
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: optimizer, loops, data position

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._last_step = -1  # the epoch-end state (loop counters) differs from a mid-epoch one: always write
        self._save(trainer)
